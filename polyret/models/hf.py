"""Conversion between our T5X-named encoder parameters and Hugging Face `MT5EncoderModel`/`T5EncoderModel`.

Import reads `config.json` + safetensors (no torch). Export writes a folder that
`transformers.MT5EncoderModel.from_pretrained` (or `T5EncoderModel` for T5 1.0) loads, and that
`sentence_transformers.SentenceTransformer` loads as Transformer -> Pooling -> Dense (projection,
no bias) -> Normalize, giving the dual encoder's embeddings. Only numpy and safetensors are used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from polyret.models.model_folder import atomic_output_dir
from polyret.models.lora import has_lora, merge_lora
from polyret.models.t5 import ACTIVATIONS, T5Config
from polyret.models.bert import MODEL_TYPES, BertConfig
from polyret.models.hf_bert import load_hf_bert, read_safetensors, write_hf_bert
from polyret.models.towers import ColBERTConfig, DualEncoderConfig, ModelConfig, hidden_size



def hf_name_map(cfg: T5Config) -> list[tuple[str, str, bool]]:
    """(our '/'-joined path inside a tower, HF key, transpose?) for every encoder parameter."""
    rows = [("token_embedder/embedding", "shared.weight", False),
            ("encoder/relpos_bias/rel_embedding",
             "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True),
            ("encoder/encoder_norm/scale", "encoder.final_layer_norm.weight", False)]
    mlp = ["wi_0", "wi_1", "wo"] if cfg.gated else ["wi", "wo"]
    for i in range(cfg.num_layers):
        ours, hf = f"encoder/layers_{i}", f"encoder.block.{i}.layer"
        rows.append((f"{ours}/pre_attention_layer_norm/scale", f"{hf}.0.layer_norm.weight", False))
        for name, short in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
            rows.append((f"{ours}/attention/{name}/kernel", f"{hf}.0.SelfAttention.{short}.weight", True))
        rows.append((f"{ours}/pre_mlp_layer_norm/scale", f"{hf}.1.layer_norm.weight", False))
        for name in mlp:
            rows.append((f"{ours}/mlp/{name}/kernel", f"{hf}.1.DenseReluDense.{name}.weight", True))
    return rows


# ----------------------------------------------------------------------------------------------- import

def t5_config_from_hf(config: dict[str, Any], source: str = "config.json") -> T5Config:
    feed_forward = config.get("feed_forward_proj", "relu")
    if feed_forward not in ACTIVATIONS:
        raise ValueError(f"{source}: feed_forward_proj {feed_forward!r} is not supported (one of {list(ACTIVATIONS)})")
    try:
        return T5Config(
            vocab_size=config["vocab_size"], d_model=config["d_model"], num_heads=config["num_heads"],
            d_kv=config["d_kv"], d_ff=config["d_ff"], num_layers=config["num_layers"],
            activation=feed_forward, dropout_rate=config.get("dropout_rate", 0.1),
            relative_attention_num_buckets=config.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6))
    except KeyError as e:
        raise ValueError(f"{source}: field {e.args[0]!r} is missing") from e


T5_MODEL_TYPES = ("t5", "mt5", "umt5")


def load_hf_encoder(folder: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """A Hugging Face encoder folder -> (encoder config, tower parameters), the architecture read off
    config.json: T5 / mT5 ({'token_embedder', 'encoder'}) or BERT / RoBERTa / XLM-R ({'embeddings', 'encoder'})."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing")
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}: not valid JSON: {e}") from e
    model_type = hf_config.get("model_type")
    if model_type in MODEL_TYPES:
        return load_hf_bert(folder)
    if model_type not in T5_MODEL_TYPES:
        raise ValueError(f"{config_file}: model_type {model_type!r} is not supported (supported: "
                         f"{', '.join(T5_MODEL_TYPES + MODEL_TYPES)})")
    cfg = t5_config_from_hf(hf_config, str(config_file))
    tensors = read_safetensors(folder)
    flat = {}
    for ours, hf, transpose in hf_name_map(cfg):
        if hf not in tensors:
            raise ValueError(f"{folder}: tensor {hf} (for {ours}) is missing; feed_forward_proj="
                             f"{hf_config.get('feed_forward_proj')!r} and num_layers={cfg.num_layers} in config.json")
        value = np.asarray(tensors[hf], np.float32)
        flat[tuple(ours.split("/"))] = value.T if transpose else value
    return cfg, traverse_util.unflatten_dict(flat)


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

def hf_config_dict(cfg: T5Config) -> dict[str, Any]:
    mt5 = cfg.gated
    return {
        "architectures": ["MT5EncoderModel" if mt5 else "T5EncoderModel"],
        "model_type": "mt5" if mt5 else "t5",
        "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_kv": cfg.d_kv, "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout_rate, "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "feed_forward_proj": cfg.activation, "is_encoder_decoder": False, "use_cache": False,
        "pad_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": not mt5,
    }


def encoder_to_hf_tensors(encoder_params: dict[str, Any], cfg: T5Config) -> dict[str, np.ndarray]:
    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(encoder_params).items()}
    tensors = {}
    for ours, hf, transpose in hf_name_map(cfg):
        tensors[hf] = np.ascontiguousarray(flat[ours].T if transpose else flat[ours])
    tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"].copy()
    return tensors


def _write_tokenizer(out: Path, tokenizer: str | os.PathLike | None) -> None:
    if tokenizer is None or Path(tokenizer).is_dir():
        return
    if str(tokenizer) == "byte":
        (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer", "extra_ids": 0}))
        return
    shutil.copyfile(tokenizer, out / "spiece.model")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>"}, indent=2))


def _write_sentence_transformer(out: Path, cfg: T5Config, pooling: str, projection: np.ndarray | None,
                                l2_norm: bool, max_seq_length: int) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}, indent=2))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden_size(cfg), "pooling_mode_cls_token": pooling == "first",
         "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True}, indent=2))
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
    if isinstance(cfg, BertConfig):
        tokenizer_dir = tokenizer if tokenizer is not None and Path(tokenizer).is_dir() else None
        write_hf_bert(out, {"embeddings": tower_params["embeddings"], "encoder": tower_params["encoder"]}, cfg,
                      tokenizer_dir)
        return
    out.mkdir(parents=True, exist_ok=True)
    encoder = {"token_embedder": tower_params["token_embedder"], "encoder": tower_params["encoder"]}
    save_file(encoder_to_hf_tensors(encoder, cfg), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2))
    _write_tokenizer(out, tokenizer)


def _projection_kernel(params: dict[str, Any]) -> np.ndarray | None:
    kernel = params.get("projection_layer", {}).get("kernel")
    return None if kernel is None else np.asarray(kernel, np.float32)


def _merged(params: dict[str, Any], model_cfg: ModelConfig) -> dict[str, Any]:
    if model_cfg.encoder.lora is not None and has_lora(params):
        return merge_lora(params, model_cfg.encoder.lora)
    return params


def write_dual_encoder(params: dict[str, Any], model_cfg: DualEncoderConfig, out: Path, tokenizer,
                       max_seq_length: int) -> None:
    """HF encoder + sentence-transformers modules (Pooling, Dense, Normalize); separate towers go to
    `query_encoder/` and `document_encoder/`. LoRA adapters are merged first."""
    params = _merged(params, model_cfg)
    projection = _projection_kernel(params)
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
    from polyret.retrieval.colbert_tokenize import DOCUMENT_TOKEN, QUERY_TOKEN
    names = [QUERY_TOKEN, DOCUMENT_TOKEN]
    if (out / "tokenizer.json").is_file():
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
    from polyret.models.hf_bert import bert_to_hf_tensors
    encoder = cfg.encoder
    prefix = "bert." if encoder.model_type == "bert" else "roberta."
    tensors = {prefix + k: v for k, v in bert_to_hf_tensors(
        {"embeddings": params["embeddings"], "encoder": params["encoder"]}, encoder).items()}
    tensors["linear.weight"] = np.ascontiguousarray(projection.T.astype(np.float32))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    model_name = {"bert": "bert-base-multilingual-uncased", "roberta": "roberta-base"}.get(
        encoder.model_type, "xlm-roberta-large" if encoder.hidden_size == 1024 else "xlm-roberta-base")
    (out / "artifact.metadata").write_text(json.dumps({
        "query_token_id": markers[0], "doc_token_id": markers[1], "query_token": "[Q]", "doc_token": "[D]",
        "query_maxlen": cfg.query_length, "doc_maxlen": cfg.document_length or 220, "dim": cfg.projection_dim,
        "attend_to_mask_tokens": cfg.attend_to_mask_tokens, "mask_punctuation": bool(cfg.skip_token_ids),
        "similarity": "cosine", "interaction": "colbert", "model_name": model_name,
        "force_resize_embeddings": True}, indent=2))


COLBERT_SETTINGS_FILE = "polyret_colbert.json"


def _write_dense(folder: Path, kernel: np.ndarray) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "in_features": int(kernel.shape[0]), "out_features": int(kernel.shape[1]), "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"}, indent=2))
    save_file({"linear.weight": np.ascontiguousarray(kernel.T.astype(np.float32))}, str(folder / "model.safetensors"))


def export_hf(params: dict[str, Any], model_cfg: ModelConfig, output_dir: str | os.PathLike,
              tokenizer: str | os.PathLike | None = None, max_seq_length: int = 512) -> Path:
    """Write the model's Hugging Face folder (its `RetrievalModel.export_hf` layout), atomically.

    `tokenizer`: a SentencePiece model path, "byte" for ByT5, or None.
    """
    from polyret.models.retrieval_model import build_model
    with atomic_output_dir(output_dir, kind="hf_export") as tmp:
        build_model(model_cfg).export_hf(params, tmp, tokenizer, max_seq_length)
    return Path(output_dir)


def _pooling(folder: Path, modules: list[dict[str, Any]]) -> str:
    """'first' or 'mean' from a sentence-transformers Pooling config (either generation of its keys)."""
    for module in modules:
        if module["type"].endswith("Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            if config.get("pooling_mode") == "cls" or config.get("pooling_mode_cls_token"):
                return "first"
            mode = config.get("pooling_mode", "mean" if config.get("pooling_mode_mean_tokens", True) else None)
            if mode != "mean":
                raise ValueError(f"{folder / module['path'] / 'config.json'}: pooling {mode or 'max'!r} is not "
                                 "supported (mean or cls)")
    return "mean"


def dual_encoder_config_from_hf(folder: str | os.PathLike, encoder: T5Config,
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

