"""The decoder-LLM encoder family (Flax modules in polyret/models/llama.py) and its conversion to and from
Hugging Face `LlamaModel` / `Qwen2Model` / `Qwen3Model` folders (config.json + safetensors).

Import accepts a `model.` prefix (the `*ForCausalLM` checkpoints LLMs are released as) and ignores the
language-model head; export writes the bare `*Model` that `AutoModel` and sentence-transformers load (a
sentence-transformers export of a last-token-pooled dual encoder pools with `pooling_mode_lasttoken`).
Rotary scaling variants (`rope_scaling` / `rope_parameters` other than the default) and sliding-window
attention are refused with the config field named, as polyret computes neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from polyret.models import hf_files
from polyret.models.encoder_family import EncoderFamily, register_family
from polyret.models.llama import MODEL_TYPES, PRESETS, LlamaConfig, LlamaEmbeddings, LlamaEncoder, LlamaStack
from polyret.models.lora import has_lora, merge_lora

_PREFIX = "model."
_IGNORED = ("lm_head.", "score.")
_WORDS = "embeddings/word_embeddings/embedding"
_ARCHITECTURES = {"llama": "LlamaModel", "qwen2": "Qwen2Model", "qwen3": "Qwen3Model"}


def hf_llama_name_map(cfg: LlamaConfig) -> list[tuple[str, str, bool]]:
    """(our '/'-joined path inside the encoder, HF key without prefix, transpose?) for every parameter."""
    rows = [(_WORDS, "embed_tokens.weight", False), ("decoder/final_norm/scale", "norm.weight", False)]
    for i in range(cfg.num_layers):
        ours, hf = f"decoder/layers_{i}", f"layers.{i}"
        for our_name, hf_name in (("attention/query", "self_attn.q_proj"), ("attention/key", "self_attn.k_proj"),
                                  ("attention/value", "self_attn.v_proj"), ("attention/out", "self_attn.o_proj"),
                                  ("mlp/gate", "mlp.gate_proj"), ("mlp/up", "mlp.up_proj"),
                                  ("mlp/down", "mlp.down_proj")):
            rows.append((f"{ours}/{our_name}/kernel", f"{hf}.{hf_name}.weight", True))
            if cfg.attention_bias and our_name in ("attention/query", "attention/key", "attention/value"):
                rows.append((f"{ours}/{our_name}/bias", f"{hf}.{hf_name}.bias", False))
        rows.append((f"{ours}/attention_norm/scale", f"{hf}.input_layernorm.weight", False))
        rows.append((f"{ours}/mlp_norm/scale", f"{hf}.post_attention_layernorm.weight", False))
        if cfg.qk_norm:
            rows.append((f"{ours}/attention/query_norm/scale", f"{hf}.self_attn.q_norm.weight", False))
            rows.append((f"{ours}/attention/key_norm/scale", f"{hf}.self_attn.k_norm.weight", False))
    return rows


def _rope_theta(config: dict[str, Any], source: str) -> float:
    """rope_theta from either generation of config.json (top level, or transformers 5's `rope_parameters`)."""
    for field in ("rope_scaling", "rope_parameters"):
        rope = config.get(field) or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind != "default":
            raise ValueError(f"{source}: {field} type {kind!r} is not supported (only unscaled rotary positions)")
    return float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))


def llama_config_from_hf(config: dict[str, Any], source: str = "config.json",
                         pad_token_id: int | None = None) -> LlamaConfig:
    """config.json -> LlamaConfig. `pad_token_id` (Hugging Face numbering) overrides the file's."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not a decoder-LLM type ({', '.join(MODEL_TYPES)})")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act {config['hidden_act']!r} is not supported (silu)")
    if config.get("use_sliding_window"):
        raise ValueError(f"{source}: use_sliding_window=true is not supported (full attention only)")
    if model_type != "qwen2" and (config.get("attention_bias") or config.get("mlp_bias")):
        raise ValueError(f"{source}: attention_bias / mlp_bias are not supported for {model_type}")
    try:
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim")
        return LlamaConfig(
            model_type=model_type, vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"], num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=None if head_dim in (None, config["hidden_size"] // heads) else head_dim,
            intermediate_size=config["intermediate_size"], rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=_rope_theta(config, source), max_position_embeddings=config.get("max_position_embeddings", 32768),
            pad_token_id=pad_token_id if pad_token_id is not None else (config.get("pad_token_id") or 0))
    except KeyError as e:
        raise ValueError(f"{source}: field {e.args[0]!r} is missing") from e


def hf_llama_config_dict(cfg: LlamaConfig) -> dict[str, Any]:
    return {"architectures": [_ARCHITECTURES[cfg.model_type]], "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.kv_dim, "hidden_act": "silu",
            "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "max_position_embeddings": cfg.max_position_embeddings, "attention_bias": cfg.attention_bias,
            "tie_word_embeddings": False, "pad_token_id": cfg.pad_token_id, "torch_dtype": "float32"}


def load_hf_llama(folder: str | Path) -> tuple[LlamaConfig, dict[str, Any]]:
    """A Hugging Face Llama / Qwen2 / Qwen3 folder -> (LlamaConfig, params {'embeddings', 'decoder'})."""
    folder = Path(folder)
    cfg = llama_config_from_hf(hf_files.read_hf_config(folder), str(folder / "config.json"))
    tensors = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v
               for k, v in hf_files.read_safetensors(folder).items()}
    tensors = {k: v for k, v in tensors.items() if not k.startswith(_IGNORED) and not k.endswith("rotary_emb.inv_freq")}
    name_map = hf_llama_name_map(cfg)
    flat = hf_files.map_tensors(tensors, name_map, str(folder),
                                f"num_hidden_layers={cfg.num_layers}, model_type={cfg.model_type} in config.json")
    unexpected = sorted(set(tensors) - {hf for _, hf, _ in name_map})
    if unexpected:
        raise ValueError(f"{folder}: tensor {unexpected[0]} is not part of a {cfg.model_type} model with "
                         f"num_hidden_layers={cfg.num_layers}")
    words = tuple(_WORDS.split("/"))
    if flat[words].shape[0] != cfg.vocab_size:
        raise ValueError(f"{folder}: embed_tokens.weight has {flat[words].shape[0]} rows but config.json "
                         f"vocab_size is {cfg.vocab_size}")
    flat[words] = hf_files.swap_pad_row(flat[words], cfg.pad_token_id)
    return cfg, traverse_util.unflatten_dict(flat)


def llama_to_hf_tensors(params: dict[str, Any], cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """LlamaEncoder params -> HF state dict (no prefix), float32, LoRA merged first."""
    if cfg.lora is not None and has_lora(params):
        params = merge_lora(params, cfg.lora)
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
    flat[_WORDS] = hf_files.swap_pad_row(np.asarray(flat[_WORDS], np.float32), cfg.pad_token_id)
    return hf_files.unmap_tensors(flat, hf_llama_name_map(cfg))


@register_family
class LlamaFamily(EncoderFamily):
    """Decoder LLMs (Llama, Qwen2, Qwen3): parameters `embeddings` and `decoder` at the tower's top level."""

    name = "llama"
    config_class = LlamaConfig
    tower = LlamaEncoder
    part_names = ("embeddings", "decoder")
    embedding_path = tuple(_WORDS.split("/"))
    presets = PRESETS
    hf_model_types = MODEL_TYPES

    @classmethod
    def parts(cls, cfg):
        return {"embeddings": LlamaEmbeddings(cfg), "decoder": LlamaStack(cfg)}

    @classmethod
    def hidden(cls, parts, tokens, attention_mask, deterministic, token_type_ids=None):  # no token types
        return parts["decoder"](parts["embeddings"](tokens), attention_mask, deterministic)

    @classmethod
    def width(cls, cfg):
        return cfg.hidden_size

    @classmethod
    def load_hf(cls, folder):
        return load_hf_llama(folder)

    @classmethod
    def hf_tensors(cls, params, cfg):
        return llama_to_hf_tensors(params, cfg)

    @classmethod
    def hf_config(cls, cfg):
        return hf_llama_config_dict(cfg)

    @classmethod
    def hf_prefix(cls, cfg):
        return _PREFIX
