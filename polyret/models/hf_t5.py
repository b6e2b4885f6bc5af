"""The T5 encoder family (T5 1.0, T5 1.1 / mT5 / ByT5; Flax modules in polyret/models/t5.py) and its
conversion to and from Hugging Face `T5EncoderModel` / `MT5EncoderModel` folders.

Import reads `config.json` + safetensors (no torch); export writes a folder that
`transformers.MT5EncoderModel.from_pretrained` (or `T5EncoderModel` for T5 1.0) loads, with the
SentencePiece model (`spiece.model`) or ByT5's byte tokenizer config.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import linen as nn
from flax import traverse_util

from polyret.models import hf_files
from polyret.models.encoder_family import EncoderFamily, register_family
from polyret.models.t5 import ACTIVATIONS, PRESETS, EncoderStack, T5Config, T5Encoder, make_token_embedder

T5_MODEL_TYPES = ("t5", "mt5", "umt5")


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
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(encoder_params).items()}
    tensors = hf_files.unmap_tensors(flat, hf_name_map(cfg))
    tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"].copy()
    return tensors


@register_family
class T5Family(EncoderFamily):
    """T5 / mT5 / ByT5: parameters `token_embedder` and `encoder` (T5X names) at the tower's top level."""

    name = "t5"
    config_class = T5Config
    tower = T5Encoder
    part_names = ("token_embedder", "encoder")
    embedding_path = ("token_embedder", "embedding")
    presets = PRESETS
    hf_model_types = T5_MODEL_TYPES
    tokenizer_kind = "sentencepiece"

    @classmethod
    def parts(cls, cfg):
        return {"token_embedder": make_token_embedder(cfg), "encoder": EncoderStack(cfg)}

    @classmethod
    def hidden(cls, parts, tokens, attention_mask, deterministic, token_type_ids=None):  # no token types
        embedded = nn.with_logical_constraint(parts["token_embedder"](tokens), ("batch", "length", "embed"))
        return parts["encoder"](embedded, attention_mask, deterministic)

    @classmethod
    def width(cls, cfg):
        return cfg.d_model

    @classmethod
    def load_hf(cls, folder):
        hf_config = hf_files.read_hf_config(folder)
        cfg = t5_config_from_hf(hf_config, str(Path(folder) / "config.json"))
        flat = hf_files.map_tensors(hf_files.read_safetensors(folder), hf_name_map(cfg), str(folder),
                                    f"feed_forward_proj={hf_config.get('feed_forward_proj')!r} and "
                                    f"num_layers={cfg.num_layers} in config.json")
        return cfg, traverse_util.unflatten_dict(flat)

    @classmethod
    def hf_tensors(cls, params, cfg):
        return encoder_to_hf_tensors(params, cfg)

    @classmethod
    def hf_config(cls, cfg):
        return hf_config_dict(cfg)

    @classmethod
    def write_tokenizer(cls, out: Path, tokenizer: str | os.PathLike | None) -> None:
        """SentencePiece model -> spiece.model + T5Tokenizer config; "byte" -> ByT5Tokenizer config."""
        if tokenizer is None or Path(tokenizer).is_dir():
            return
        if str(tokenizer) == "byte":
            (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer",
                                                                   "extra_ids": 0}))
            return
        shutil.copyfile(tokenizer, out / "spiece.model")
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>",
            "pad_token": "<pad>"}, indent=2))

    @classmethod
    def hf_tokenizer(cls, folder):
        spm = Path(folder) / "spiece.model"
        return str(spm) if spm.is_file() else None
