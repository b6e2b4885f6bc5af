"""The DistilBERT encoder family (Flax modules in polyret/models/distilbert.py) and its conversion to and
from Hugging Face `DistilBertModel` folders (config.json + safetensors, PyTorch names).

Import accepts a `distilbert.` prefix (task-head checkpoints, PLAID-X's HF_ColBERT), ignores the MLM and task
heads, and checks a sinusoidal position table against the formula (polyret computes it, as HF never trains
it). Export writes the inverse, loadable by `DistilBertModel.from_pretrained` / `AutoModel`. The tokenizer
is the folder's Hugging Face tokenizer (WordPiece, [PAD] = 0), as for BERT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from polyret.models import hf_files
from polyret.models.bert import HIDDEN_ACTS
from polyret.models.distilbert import (PRESETS, DistilBertConfig, DistilBertEmbeddings, DistilBertEncoder,
                                       DistilBertStack, sinusoidal_table)
from polyret.models.encoder_family import EncoderFamily, register_family
from polyret.models.hf_bert import check_tokenizer
from polyret.models.lora import has_lora, merge_lora

_PREFIX = "distilbert."
# Heads beside the encoder (MLM, classification, QA) and PLAID-X's ColBERT projection `linear.weight`.
_IGNORED = ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.", "classifier.",
            "qa_outputs.", "linear.", "embeddings.position_ids")
_POSITIONS = "embeddings.position_embeddings.weight"
_WORDS = "embeddings/word_embeddings/embedding"


def hf_distilbert_name_map(cfg: DistilBertConfig) -> list[tuple[str, str, bool]]:
    """(our '/'-joined path inside the encoder, HF key without prefix, transpose?) for every parameter."""
    rows = [(_WORDS, "embeddings.word_embeddings.weight", False),
            ("embeddings/layer_norm/scale", "embeddings.LayerNorm.weight", False),
            ("embeddings/layer_norm/bias", "embeddings.LayerNorm.bias", False)]
    if not cfg.sinusoidal_positions:
        rows.append(("embeddings/position_embeddings/embedding", _POSITIONS, False))
    for i in range(cfg.num_layers):
        ours, hf = f"encoder/layers_{i}", f"transformer.layer.{i}"
        for our_name, hf_name in (("attention/query", "attention.q_lin"), ("attention/key", "attention.k_lin"),
                                  ("attention/value", "attention.v_lin"), ("attention/out", "attention.out_lin"),
                                  ("mlp/wi", "ffn.lin1"), ("mlp/wo", "ffn.lin2")):
            rows.append((f"{ours}/{our_name}/kernel", f"{hf}.{hf_name}.weight", True))
            rows.append((f"{ours}/{our_name}/bias", f"{hf}.{hf_name}.bias", False))
        for our_name, hf_name in (("attention_layer_norm", "sa_layer_norm"), ("mlp_layer_norm", "output_layer_norm")):
            rows.append((f"{ours}/{our_name}/scale", f"{hf}.{hf_name}.weight", False))
            rows.append((f"{ours}/{our_name}/bias", f"{hf}.{hf_name}.bias", False))
    return rows


def distilbert_config_from_hf(config: dict[str, Any], source: str = "config.json") -> DistilBertConfig:
    activation = config.get("activation", "gelu")
    if activation not in HIDDEN_ACTS:
        raise ValueError(f"{source}: activation {activation!r} is not supported (one of {', '.join(HIDDEN_ACTS)})")
    try:
        return DistilBertConfig(
            vocab_size=config["vocab_size"], hidden_size=config["dim"], num_layers=config["n_layers"],
            num_heads=config["n_heads"], intermediate_size=config["hidden_dim"],
            max_position_embeddings=config["max_position_embeddings"],
            sinusoidal_positions=bool(config.get("sinusoidal_pos_embds", False)), hidden_act=activation,
            hidden_dropout_rate=config.get("dropout", 0.1), attention_dropout_rate=config.get("attention_dropout", 0.1),
            pad_token_id=config.get("pad_token_id", 0))
    except KeyError as e:
        raise ValueError(f"{source}: field {e.args[0]!r} is missing") from e


def hf_distilbert_config_dict(cfg: DistilBertConfig) -> dict[str, Any]:
    return {"architectures": ["DistilBertModel"], "model_type": "distilbert", "vocab_size": cfg.vocab_size,
            "dim": cfg.hidden_size, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads,
            "hidden_dim": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
            "sinusoidal_pos_embds": cfg.sinusoidal_positions, "activation": cfg.hidden_act,
            "dropout": cfg.hidden_dropout_rate, "attention_dropout": cfg.attention_dropout_rate,
            "pad_token_id": cfg.pad_token_id, "initializer_range": 0.02, "tie_weights_": True}


def load_hf_distilbert(folder: str | Path) -> tuple[DistilBertConfig, dict[str, Any]]:
    """A Hugging Face DistilBERT folder -> (DistilBertConfig, params {'embeddings', 'encoder'})."""
    folder = Path(folder)
    cfg = distilbert_config_from_hf(hf_files.read_hf_config(folder), str(folder / "config.json"))
    tensors = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v
               for k, v in hf_files.read_safetensors(folder).items()}
    tensors = {k: v for k, v in tensors.items() if not k.startswith(_IGNORED)}
    name_map = hf_distilbert_name_map(cfg)
    flat = hf_files.map_tensors(tensors, name_map, str(folder), f"n_layers={cfg.num_layers} in config.json")
    used = {hf for _, hf, _ in name_map}
    if cfg.sinusoidal_positions and _POSITIONS in tensors:
        expected = sinusoidal_table(cfg.max_position_embeddings, cfg.hidden_size)
        if tensors[_POSITIONS].shape != expected.shape or np.abs(tensors[_POSITIONS] - expected).max() > 1e-5:
            raise ValueError(f"{folder}: {_POSITIONS} is not the sinusoidal table that config.json "
                             "sinusoidal_pos_embds=true promises")
        used.add(_POSITIONS)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise ValueError(f"{folder}: tensor {unexpected[0]} is not part of a DistilBERT encoder with "
                         f"n_layers={cfg.num_layers}")
    words = tuple(_WORDS.split("/"))
    if flat[words].shape[0] != cfg.vocab_size:
        raise ValueError(f"{folder}: embeddings.word_embeddings.weight has {flat[words].shape[0]} rows but "
                         f"config.json vocab_size is {cfg.vocab_size}")
    flat[words] = hf_files.swap_pad_row(flat[words], cfg.pad_token_id)
    check_tokenizer(folder, cfg)
    return cfg, traverse_util.unflatten_dict(flat)


def distilbert_to_hf_tensors(params: dict[str, Any], cfg: DistilBertConfig) -> dict[str, np.ndarray]:
    """DistilBertEncoder params -> HF state dict (no prefix), float32, LoRA merged first."""
    if cfg.lora is not None and has_lora(params):
        params = merge_lora(params, cfg.lora)
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
    flat[_WORDS] = hf_files.swap_pad_row(np.asarray(flat[_WORDS], np.float32), cfg.pad_token_id)
    tensors = hf_files.unmap_tensors(flat, hf_distilbert_name_map(cfg))
    if cfg.sinusoidal_positions:
        tensors[_POSITIONS] = sinusoidal_table(cfg.max_position_embeddings, cfg.hidden_size)
    return tensors


@register_family
class DistilBertFamily(EncoderFamily):
    """DistilBERT: parameters `embeddings` and `encoder` at the tower's top level."""

    name = "distilbert"
    config_class = DistilBertConfig
    tower = DistilBertEncoder
    part_names = ("embeddings", "encoder")
    embedding_path = tuple(_WORDS.split("/"))
    presets = PRESETS
    hf_model_types = ("distilbert",)

    @classmethod
    def parts(cls, cfg):
        return {"embeddings": DistilBertEmbeddings(cfg), "encoder": DistilBertStack(cfg)}

    @classmethod
    def hidden(cls, parts, tokens, attention_mask, deterministic, token_type_ids=None):  # no token types
        return parts["encoder"](parts["embeddings"](tokens, deterministic), attention_mask, deterministic)

    @classmethod
    def classification_head(cls, cfg):
        return {"architecture": "DistilBertForSequenceClassification", "dense": "pre_classifier",
                "out": "classifier", "activation": "relu", "pooling": "first"}

    @classmethod
    def width(cls, cfg):
        return cfg.hidden_size

    @classmethod
    def load_hf(cls, folder):
        return load_hf_distilbert(folder)

    @classmethod
    def hf_tensors(cls, params, cfg):
        return distilbert_to_hf_tensors(params, cfg)

    @classmethod
    def hf_config(cls, cfg):
        return hf_distilbert_config_dict(cfg)

    @classmethod
    def hf_prefix(cls, cfg):
        return _PREFIX

    @classmethod
    def plaidx_model_name(cls, cfg):
        return "distilbert-base-multilingual-cased"
