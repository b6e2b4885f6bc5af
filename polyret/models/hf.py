"""Hugging Face layouts of whole retrieval models, for every encoder family (each family converts its own
encoder: `polyret.models.encoder_family`).

Import: `load_hf_encoder` picks the family by config.json's `model_type`; a sentence-transformers layout
gives the projection, pooling and normalisation back. Export: a dual encoder becomes a folder that
`AutoModel.from_pretrained` loads and that `sentence_transformers.SentenceTransformer` loads as
Transformer -> Pooling -> Dense (projection, no bias) -> Normalize; ColBERT becomes PyLate's layout (and
PLAID-X's for ColBERT-X). `RetrievalModel.export_hf` calls these. Only numpy and safetensors are used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from polyret.models.colbert_x import DOCUMENT_TOKEN, QUERY_TOKEN
from polyret.models.encoder_families import family_for_hf, family_of
from polyret.models.hf_files import read_hf_config, read_safetensors
from polyret.models.lora import has_lora, merge_lora
from polyret.models.towers import ColBERTConfig, DualEncoderConfig, ModelConfig, hidden_size


def load_hf_encoder(folder: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """A Hugging Face encoder folder -> (encoder config, encoder parameters), the family picked by
    config.json's `model_type` (T5 / mT5 -> {'token_embedder', 'encoder'}; BERT / XLM-R -> {'embeddings',
    'encoder'}; ...)."""
    folder = Path(folder)
    model_type = read_hf_config(folder).get("model_type")
    return family_for_hf(model_type, str(folder / "config.json")).load_hf(folder)


def load_st_projection(folder: str | os.PathLike) -> np.ndarray | None:
    """The kernel [in, out] of a sentence-transformers Dense module in `folder`, if it has one."""
    modules_file = Path(folder) / "modules.json"
    if not modules_file.is_file():
        return None
    for module in json.loads(modules_file.read_text()):
        if module["type"].endswith("Dense"):
            weights = read_safetensors(Path(folder) / module["path"])
            return np.asarray(weights["linear.weight"], np.float32).T
    return None


# ----------------------------------------------------------------------------------------------- export

def _write_sentence_transformer(out: Path, cfg: Any, pooling: str, projection: np.ndarray | None,
                                l2_norm: bool, max_seq_length: int) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}, indent=2))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden_size(cfg), "pooling_mode_cls_token": pooling == "first",
         "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_lasttoken": pooling == "last",
         "include_prompt": True}, indent=2))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling"})
    if projection is not None:
        _write_dense(out / "2_Dense", projection)
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if l2_norm:
        (out / "3_Normalize").mkdir()
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine" if l2_norm else "dot",
         "prompts": {}, "default_prompt_name": None}, indent=2))


def _write_encoder(out: Path, tower_params: dict[str, Any], cfg: Any, tokenizer) -> None:
    family = family_of(cfg)
    family.write_hf(out, family.encoder_params(tower_params), cfg, tokenizer)


def _projection_kernel(params: dict[str, Any]) -> np.ndarray | None:
    kernel = params.get("projection_layer", {}).get("kernel")
    return None if kernel is None else np.asarray(kernel, np.float32)


def _merged(params: dict[str, Any], model_cfg: ModelConfig) -> dict[str, Any]:
    if model_cfg.encoder.lora is not None and has_lora(params):
        return merge_lora(params, model_cfg.encoder.lora)
    return params


def write_dual_encoder(params: dict[str, Any], model_cfg: DualEncoderConfig, out: Path, tokenizer,
                       max_seq_length: int, truncate_dim: int | None = None) -> None:
    """HF encoder + sentence-transformers modules (Pooling, Dense, Normalize); separate towers go to
    `query_encoder/` and `document_encoder/`. LoRA adapters are merged first.

    `truncate_dim` keeps the first columns of the projection, or adds a Dense module that selects the first
    dimensions where there is none: every sentence-transformers version then gives the truncated vector
    (re-normalised by the Normalize after it), and polyret re-imports it as a model of that width. (The
    `truncate_dim` argument of `SentenceTransformer` is not stored in its folders.)"""
    params = _merged(params, model_cfg)
    projection = _projection_kernel(params)
    if truncate_dim is not None:
        width = hidden_size(model_cfg.encoder) if projection is None else projection.shape[1]
        if not 1 <= truncate_dim <= width:
            raise ValueError(f"truncate_dim {truncate_dim}: the model's vectors have {width} dimensions")
        projection = (np.eye(width, dtype=np.float32) if projection is None else projection)[:, :truncate_dim]
    towers = ({"": params} if model_cfg.shared_towers else
              {"query_encoder": params["left_tower"], "document_encoder": params["right_tower"]})
    for sub, tower_params in towers.items():
        _write_encoder(out / sub, tower_params, model_cfg.encoder, tokenizer)
        _write_sentence_transformer(out / sub, model_cfg.encoder, model_cfg.pooling, projection, model_cfg.l2_norm,
                                    max_seq_length)


def write_colbert(params: dict[str, Any], model_cfg: ColBERTConfig, out: Path, tokenizer,
                  max_seq_length: int) -> None:
    """HF encoder + the per-token projection as a sentence-transformers Dense module (no bias), the layout
    PyLate loads as a ColBERT model; `polyret_colbert.json` keeps the settings PyLate has no field for."""
    params = _merged(params, model_cfg)
    _write_encoder(out, params, model_cfg.encoder, tokenizer)
    projection = _projection_kernel(params)
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}, indent=2))
    _write_dense(out / "1_Dense", projection)
    # Module types that sentence-transformers 5 and 6 both load; PyLate turns the Dense into its own.
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"}]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    markers = _plaidx_marker_tokens(out, model_cfg) if model_cfg.colbert_x else ("", "")
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "ColBERT", "similarity_fn_name": "MaxSim", "query_length": model_cfg.query_length,
        "document_length": model_cfg.document_length or max_seq_length, "query_prefix": markers[0],
        "document_prefix": markers[1], "do_query_expansion": True,
        "attend_to_expansion_tokens": model_cfg.attend_to_mask_tokens, "skiplist_words": [],
        "prompts": {}, "default_prompt_name": None}, indent=2))
    (out / COLBERT_SETTINGS_FILE).write_text(json.dumps(
        {k: v for k, v in dataclasses.asdict(model_cfg).items() if k != "encoder"}, indent=2))
    if model_cfg.colbert_x:
        _write_plaidx(out, params, model_cfg, projection, markers)


def _plaidx_marker_tokens(out: Path, cfg: ColBERTConfig) -> tuple[str, str]:
    """The marker tokens' strings: the exported tokenizer's, else PLAID-X's defaults (which PLAID-X appends
    to the vocabulary at the same ids: the table was grown by exactly those rows on import)."""
    names = [QUERY_TOKEN, DOCUMENT_TOKEN]
    if (out / "tokenizer.json").is_file():
        # Imported here: the vocabulary wrapper needs TensorFlow (seqio), which loading weights does not.
        from polyret.seqio_tasks.hf_vocab import HfVocabulary, load_tokenizer
        tokenizer, vocab = load_tokenizer(out), HfVocabulary(out)
        for i, marker in enumerate((cfg.query_marker_id, cfg.document_marker_id)):
            names[i] = tokenizer.id_to_token(vocab.to_hf(marker)) or names[i]
    return names[0], names[1]


def _write_plaidx(out: Path, params: dict[str, Any], cfg: ColBERTConfig, projection: np.ndarray,
                  markers: tuple[str, str]) -> None:
    """Make the folder a PLAID-X checkpoint too: HF_ColBERT's weights in model.safetensors (the encoder under
    `roberta.` / `bert.`, which transformers' AutoModel also reads, + `linear.weight`) and artifact.metadata.
    PLAID-X picks its model class from `model_name` (a Hub id of the same architecture; pass
    `ColBERTConfig(model_name=<this folder>)` to load offline)."""
    encoder, family = cfg.encoder, family_of(cfg.encoder)
    model_name, prefix = family.plaidx_model_name(encoder), family.hf_prefix(encoder)
    tensors = {prefix + k: v for k, v in family.hf_tensors(family.encoder_params(params), encoder).items()}
    tensors["linear.weight"] = np.ascontiguousarray(projection.T.astype(np.float32))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "artifact.metadata").write_text(json.dumps({
        "query_token_id": markers[0], "doc_token_id": markers[1], "query_token": "[Q]", "doc_token": "[D]",
        "query_maxlen": cfg.query_length, "doc_maxlen": cfg.document_length or 220, "dim": cfg.projection_dim,
        "attend_to_mask_tokens": cfg.attend_to_mask_tokens, "mask_punctuation": bool(cfg.skip_token_ids),
        "similarity": "cosine", "interaction": "colbert", "model_name": model_name,
        "force_resize_embeddings": True}, indent=2))


COLBERT_SETTINGS_FILE = "polyret_colbert.json"
CROSS_ENCODER_SETTINGS_FILE = "polyret_cross_encoder.json"


def write_cross_encoder(params: dict[str, Any], cfg: Any, out: Path, tokenizer, max_seq_length: int) -> None:
    """A sentence-transformers `CrossEncoder` folder: the family's `*ForSequenceClassification` (encoder under
    its task-head prefix, the score head under the family's head names, one label), its tokenizer, and
    `polyret_cross_encoder.json` with the pair layout. `CrossEncoder.predict` returns the raw logit
    (activation Identity), which is polyret's score."""
    params = _merged(params, cfg)
    family = family_of(cfg.encoder)
    head = family.classification_head(cfg.encoder)
    prefix = family.hf_prefix(cfg.encoder)
    tensors = {prefix + k: v for k, v in family.hf_tensors(family.encoder_params(params), cfg.encoder).items()}
    for ours, theirs in (("score_dense", head["dense"]), ("score_out", head["out"])):
        tensors[f"{theirs}.weight"] = np.ascontiguousarray(np.asarray(params[ours]["kernel"], np.float32).T)
        tensors[f"{theirs}.bias"] = np.asarray(params[ours]["bias"], np.float32)
    config = {**family.hf_config(cfg.encoder), "architectures": [head["architecture"]], "num_labels": 1,
              "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
              "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    family.write_tokenizer(out, tokenizer)
    (out / CROSS_ENCODER_SETTINGS_FILE).write_text(json.dumps(
        {k: v for k, v in dataclasses.asdict(cfg).items() if k != "encoder"} | {"max_seq_length": max_seq_length},
        indent=2))


def load_cross_encoder_head(folder: str | os.PathLike, encoder: Any) -> dict[str, Any] | None:
    """The score head of a `*ForSequenceClassification` folder in polyret's names, or None if it has none."""
    head = family_of(encoder).classification_head(encoder)
    tensors = read_safetensors(folder)
    if f"{head['out']}.weight" not in tensors:
        return None
    params = {}
    for ours, theirs in (("score_dense", head["dense"]), ("score_out", head["out"])):
        kernel = np.asarray(tensors[f"{theirs}.weight"], np.float32).T
        params[ours] = {"kernel": kernel, "bias": np.asarray(tensors[f"{theirs}.bias"], np.float32)}
    if params["score_out"]["kernel"].shape[1] != 1:
        raise ValueError(f"{folder}: the classifier has {params['score_out']['kernel'].shape[1]} labels; a "
                         "cross-encoder reranker has one")
    return params


def _write_dense(folder: Path, kernel: np.ndarray) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "in_features": int(kernel.shape[0]), "out_features": int(kernel.shape[1]), "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"}, indent=2))
    save_file({"linear.weight": np.ascontiguousarray(kernel.T.astype(np.float32))}, str(folder / "model.safetensors"))


def _pooling(folder: Path, modules: list[dict[str, Any]]) -> str:
    """'first', 'mean' or 'last' from a sentence-transformers Pooling config (either generation of its keys)."""
    for module in modules:
        if module["type"].endswith("Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            if config.get("pooling_mode") == "cls" or config.get("pooling_mode_cls_token"):
                return "first"
            if config.get("pooling_mode") == "lasttoken" or config.get("pooling_mode_lasttoken"):
                return "last"
            mode = config.get("pooling_mode", "mean" if config.get("pooling_mode_mean_tokens", True) else None)
            if mode != "mean":
                raise ValueError(f"{folder / module['path'] / 'config.json'}: pooling {mode or 'max'!r} is not "
                                 "supported (mean, cls or lasttoken)")
    return "mean"


def dual_encoder_config_from_hf(folder: str | os.PathLike, encoder: Any,
                                projection: np.ndarray | None) -> DualEncoderConfig:
    """Read pooling and normalisation back from a sentence-transformers layout if present; `projection` is
    its Dense kernel (`load_st_projection`), or None."""
    folder = Path(folder)
    modules_file = folder / "modules.json"
    pooling, l2_norm = "mean", True
    if modules_file.is_file():
        types = [m["type"] for m in json.loads(modules_file.read_text())]
        l2_norm = any(t.endswith("Normalize") for t in types)
        pooling = _pooling(folder, json.loads(modules_file.read_text()))
    projection_dim = None if projection is None else int(projection.shape[1])
    return DualEncoderConfig(encoder=encoder, pooling=pooling, l2_norm=l2_norm, projection_dim=projection_dim)

