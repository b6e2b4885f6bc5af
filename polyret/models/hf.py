"""Conversion between our T5X-named encoder parameters and Hugging Face `MT5EncoderModel`/`T5EncoderModel`.

Import reads `config.json` + safetensors (no torch). Export writes a folder that
`transformers.MT5EncoderModel.from_pretrained` (or `T5EncoderModel` for T5 1.0) loads, and that
`sentence_transformers.SentenceTransformer` loads as Transformer -> Pooling -> Dense (projection,
no bias) -> Normalize, giving the dual encoder's embeddings. Only numpy and safetensors are used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from polyret.models.checkpoint import atomic_output_dir
from polyret.models.lora import has_lora, merge_lora
from polyret.models.t5 import ACTIVATIONS, T5Config
from polyret.models.towers import DualEncoderConfig, ModelConfig



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


def _read_safetensors(folder: Path) -> dict[str, np.ndarray]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                                "(PyTorch .bin checkpoints: re-save them with safe_serialization=True)")
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except Exception as e:
            raise ValueError(f"{f}: cannot read safetensors: {e}") from e
    return tensors


def load_hf_encoder(folder: str | os.PathLike) -> tuple[T5Config, dict[str, Any]]:
    """A Hugging Face T5/mT5 folder -> (T5Config, {'token_embedder':..., 'encoder':...})."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing")
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}: not valid JSON: {e}") from e
    cfg = t5_config_from_hf(hf_config, str(config_file))
    tensors = _read_safetensors(folder)
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
            weights = _read_safetensors(Path(folder) / module["path"])
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
    if tokenizer is None:
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
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}, indent=2))
    pool_mode = {"mean": "mean", "first": "cls"}[pooling]
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"embedding_dimension": cfg.d_model, "pooling_mode": pool_mode, "include_prompt": True}, indent=2))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling",
                    "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"})
    if projection is not None:
        (out / "2_Dense").mkdir()
        (out / "2_Dense/config.json").write_text(json.dumps({
            "in_features": int(projection.shape[0]), "out_features": int(projection.shape[1]), "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity"}, indent=2))
        save_file({"linear.weight": np.ascontiguousarray(projection.T.astype(np.float32))},
                  str(out / "2_Dense/model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.base.modules.dense.Dense"})
    if l2_norm:
        (out / "3_Normalize").mkdir()
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Normalize",
                        "type": "sentence_transformers.base.modules.normalize.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine" if l2_norm else "dot",
         "prompts": {}, "default_prompt_name": None}, indent=2))


def _write_tower(out: Path, tower_params: dict[str, Any], model_cfg: ModelConfig, tokenizer,
                 max_seq_length: int) -> None:
    cfg = model_cfg.encoder
    out.mkdir(parents=True, exist_ok=True)
    encoder = {"token_embedder": tower_params["token_embedder"], "encoder": tower_params["encoder"]}
    save_file(encoder_to_hf_tensors(encoder, cfg), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2))
    _write_tokenizer(out, tokenizer)
    projection = tower_params.get("projection_layer", {}).get("kernel")
    projection = None if projection is None else np.asarray(projection, np.float32)
    if isinstance(model_cfg, DualEncoderConfig):
        _write_sentence_transformer(out, cfg, model_cfg.pooling, projection, model_cfg.l2_norm, max_seq_length)
    elif projection is not None:  # ColBERT: the per-token projection, applied to every token then L2-normalised
        save_file({"linear.weight": np.ascontiguousarray(projection.T)}, str(out / "colbert_projection.safetensors"))


def export_hf(params: dict[str, Any], model_cfg: ModelConfig, output_dir: str | os.PathLike,
              tokenizer: str | os.PathLike | None = None, max_seq_length: int = 512) -> Path:
    """Write a Hugging Face (+ sentence-transformers) folder. LoRA adapters are merged first.

    `tokenizer`: a SentencePiece model path, "byte" for ByT5, or None. Separate towers are written to
    `output_dir/query_encoder` and `output_dir/document_encoder`.
    """
    if model_cfg.encoder.lora is not None and has_lora(params):
        params = merge_lora(params, model_cfg.encoder.lora)
    with atomic_output_dir(output_dir) as tmp:
        if isinstance(model_cfg, DualEncoderConfig) and not model_cfg.shared_towers:
            projection = {"projection_layer": params["projection_layer"]} if "projection_layer" in params else {}
            _write_tower(tmp / "query_encoder", {**params["left_tower"], **projection}, model_cfg, tokenizer,
                         max_seq_length)
            _write_tower(tmp / "document_encoder", {**params["right_tower"], **projection}, model_cfg, tokenizer,
                         max_seq_length)
        else:
            _write_tower(tmp, params, model_cfg, tokenizer, max_seq_length)
    return Path(output_dir)


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
        pool_file = folder / "1_Pooling/config.json"
        if pool_file.is_file():
            pooling = "first" if json.loads(pool_file.read_text()).get("pooling_mode") == "cls" else "mean"
    projection_dim = None if projection is None else int(projection.shape[1])
    return DualEncoderConfig(encoder=encoder, pooling=pooling, l2_norm=l2_norm, projection_dim=projection_dim)

