"""Decoder-LLM encoders (Llama, Qwen2, Qwen3 blocks) in Flax linen, numerically equal to Hugging Face's
`LlamaModel` / `Qwen2Model` / `Qwen3Model` hidden states, for LLM embedders (E5-Mistral, RepLLaMA,
Qwen3-Embedding; LLM2Vec / NV-Embed with `causal=False`).

Pre-norm blocks: x + attention(RMSNorm(x)), then h + SwiGLU(RMSNorm(h)); a final RMSNorm. Attention is
grouped-query (`num_kv_heads` key/value heads, each shared by num_heads / num_kv_heads query heads) with
rotary positions (Hugging Face's rotate-half layout, angles in float32) and, per model type:
  llama  no projection biases;
  qwen2  biases on the query, key and value projections;
  qwen3  no biases, an RMSNorm over each query and key head before the rotation (`qk_norm`).
`causal` (default) masks later keys as the LLM was trained; `causal=False` lets every token see the whole
row (bidirectional). RMSNorm and softmax run in float32 whatever `dtype` is.

Token ids. polyret pads with id 0 (polyret/tokens.py), and rows are right-padded, so position i is token i
(rotary angles depend only on the distance between tokens, so Hugging Face's left-padded rows give the same
states). `LlamaConfig.pad_token_id` is the Hugging Face id swapped with 0 at the boundaries (the importer
swaps rows of the embedding table, polyret.seqio_tasks.hf_vocab swaps ids): it must be an id the tokenizer
never emits inside a text, never the EOS that last-token pooling reads.

Parameter tree of `LlamaEncoder`; polyret/models/hf_llama.py maps it to Hugging Face's names:
  embeddings/word_embeddings/embedding                         [vocab, embed]
  decoder/layers_i/attention_norm/scale                        [embed]
  decoder/layers_i/attention/{query,key,value}/kernel (+bias)  [embed, joined_kv]
  decoder/layers_i/attention/{query_norm,key_norm}/scale       [kv]            (qwen3)
  decoder/layers_i/attention/out/kernel                        [joined_kv, embed]
  decoder/layers_i/mlp_norm/scale                              [embed]
  decoder/layers_i/mlp/{gate,up}/kernel, mlp/down/kernel       [embed, mlp], [mlp, embed]
  decoder/final_norm/scale                                     [embed]
The attention names are the other families', so LoraConfig's default target (`attention/(query|value)`)
applies; `LLM_LORA_TARGETS` adds every attention and MLP projection.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
from flax import linen as nn

from polyret.models.attention import attention, check_attention_impl, choose_impl
from polyret.models.layer_stack import check_stack_options, run_layers
from polyret.models.lora import LoraConfig, LoraDense
from polyret.tokens import PAD_ID

MODEL_TYPES = ("llama", "qwen2", "qwen3")
# LoRA on the attention and MLP projections (as Tevatron's and E5-Mistral's LLM fine-tunes).
LLM_LORA_TARGETS = r".*/(attention/(query|key|value|out)|mlp/(gate|up|down))/kernel$"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a decoder LLM used as an encoder (HF config.json names in comments)."""

    model_type: str = "llama"  # llama | qwen2 | qwen3 (which projections have biases / head norms)
    vocab_size: int = 32000
    hidden_size: int = 4096
    num_layers: int = 32  # num_hidden_layers
    num_heads: int = 32  # num_attention_heads
    num_kv_heads: int = 8  # num_key_value_heads
    head_dim: int | None = None  # None: hidden_size // num_heads
    intermediate_size: int = 14336
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 32768
    causal: bool = True  # False: bidirectional attention (LLM2Vec / NV-Embed)
    pad_token_id: int = 0  # in Hugging Face's numbering; polyret's pad is always 0 (see the module docstring)
    dtype: str = "float32"
    param_dtype: str = "float32"
    lora: LoraConfig | None = None
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "auto"

    def __post_init__(self):
        check_stack_options("LlamaConfig", self.scan_layers, self.remat_policy)
        check_attention_impl("LlamaConfig", self.attention_impl)
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"LlamaConfig.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"LlamaConfig.num_heads {self.num_heads} is not a multiple of num_kv_heads "
                             f"{self.num_kv_heads}")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"LlamaConfig.hidden_size {self.hidden_size} is not a multiple of num_heads "
                             f"{self.num_heads}; set head_dim")
        if self.kv_dim % 2:
            raise ValueError(f"LlamaConfig: the head dim {self.kv_dim} must be even for rotary positions")

    @property
    def kv_dim(self) -> int:
        """The size of one attention head."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def attention_bias(self) -> bool:
        return self.model_type == "qwen2"

    @property
    def qk_norm(self) -> bool:
        return self.model_type == "qwen3"

    @property
    def max_length(self) -> int:
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
        d = dict(d)
        if d.get("lora") is not None:
            d["lora"] = LoraConfig(**d["lora"])
        return cls(**d)


_TINY = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
             max_position_embeddings=128)

# Public dimensions of released checkpoints (their config.json files); the tiny ones are for tests.
PRESETS: dict[str, LlamaConfig] = {
    "llama_tiny": LlamaConfig(**_TINY),
    "qwen2_tiny": LlamaConfig(model_type="qwen2", rms_norm_eps=1e-6, **_TINY),
    "qwen3_tiny": LlamaConfig(model_type="qwen3", rms_norm_eps=1e-6, head_dim=32, **_TINY),
    # HuggingFaceTB/SmolLM2-135M-Instruct
    "smollm2_135m": LlamaConfig(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                                intermediate_size=1536, rope_theta=100000.0, max_position_embeddings=8192),
    # mistralai/Mistral-7B-v0.1 (E5-Mistral-7B, RepLLaMA-style fine-tunes; Tevatron's JAX example)
    "mistral_7b": LlamaConfig(),
    # meta-llama/Llama-2-7b-hf (RepLLaMA)
    "llama2_7b": LlamaConfig(num_kv_heads=32, intermediate_size=11008, max_position_embeddings=4096),
    # Qwen/Qwen3-Embedding-0.6B and -8B
    "qwen3_embedding_0_6b": LlamaConfig(model_type="qwen3", vocab_size=151669, hidden_size=1024, num_layers=28,
                                        num_heads=16, num_kv_heads=8, head_dim=128, intermediate_size=3072,
                                        rms_norm_eps=1e-6, rope_theta=1000000.0),
    "qwen3_embedding_8b": LlamaConfig(model_type="qwen3", vocab_size=151665, hidden_size=4096, num_layers=36,
                                      num_heads=32, num_kv_heads=8, head_dim=128, intermediate_size=12288,
                                      rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960),
}


@gin.configurable
def llama_config(preset: str = gin.REQUIRED, **overrides: Any) -> LlamaConfig:
    """A named preset with any field overridden (gin: `llama_config.preset = 'mistral_7b'`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown decoder-LLM preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(LlamaConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"llama_config: {unknown[0]!r} is not a LlamaConfig field")
    return dataclasses.replace(PRESETS[preset], **overrides)


class RMSNorm(nn.Module):
    """x / rms(x) * scale, computed in float32, returned in `dtype`."""

    epsilon: float
    dtype: Any
    param_dtype: Any
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


def rotate(x: jax.Array, theta: float) -> jax.Array:
    """Rotary positions 0..L-1 on x [batch, L, heads, head_dim] (Hugging Face's rotate-half layout)."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * inv_freq[None]
    angles = jnp.concatenate([angles, angles], axis=-1)[None, :, None, :]
    x32 = x.astype(jnp.float32)
    half = dim // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def _dense(cfg: LlamaConfig, features: int, axes: tuple[str, str], name: str, bias: bool = False) -> LoraDense:
    return LoraDense(features, axes, nn.initializers.normal(0.02), cfg.lora, jnp.dtype(cfg.dtype),
                     jnp.dtype(cfg.param_dtype), use_bias=bias, name=name)


def _norm(cfg: LlamaConfig, name: str, axis_name: str = "embed") -> RMSNorm:
    return RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype), axis_name, name=name)


class Attention(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        d, bias = cfg.kv_dim, cfg.attention_bias
        q = _dense(cfg, cfg.num_heads * d, ("embed", "joined_kv"), "query", bias)(x, deterministic)
        k = _dense(cfg, cfg.num_kv_heads * d, ("embed", "joined_kv"), "key", bias)(x, deterministic)
        v = _dense(cfg, cfg.num_kv_heads * d, ("embed", "joined_kv"), "value", bias)(x, deterministic)
        split = lambda t, heads: nn.with_logical_constraint(
            t.reshape(t.shape[:2] + (heads, d)), ("batch", "length", "heads", "kv"))
        q, k, v = split(q, cfg.num_heads), split(k, cfg.num_kv_heads), split(v, cfg.num_kv_heads)
        if cfg.qk_norm:
            q, k = _norm(cfg, "query_norm", "kv")(q), _norm(cfg, "key_norm", "kv")(k)
        q, k = rotate(q, cfg.rope_theta), rotate(k, cfg.rope_theta)
        impl = choose_impl(cfg.attention_impl, q, False, False)
        out = attention(q, k, v, None, key_mask, d ** -0.5, impl, causal=cfg.causal)
        out = out.reshape(x.shape[:2] + (cfg.num_heads * d,))
        return _dense(cfg, cfg.hidden_size, ("joined_kv", "embed"), "out")(out, deterministic)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        gate = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "gate")(x, deterministic)
        up = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "up")(x, deterministic)
        h = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "down")(h, deterministic)


class DecoderLayer(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        x = x + Attention(cfg, name="attention")(_norm(cfg, "attention_norm")(x), key_mask, deterministic)
        x = x + MLP(cfg, name="mlp")(_norm(cfg, "mlp_norm")(x), deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class LlamaEmbeddings(nn.Module):
    """Token ids -> word embeddings (no positions: they are rotary, inside attention)."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        cfg = self.config
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                     embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
                     name="word_embeddings")(tokens)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class LlamaStack(nn.Module):
    """The `decoder` subtree: the blocks, then the final RMSNorm."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, embedded: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        x = run_layers(self, DecoderLayer, self.config, self.config.num_layers, embedded, attention_mask,
                       deterministic)
        return _norm(self.config, "final_norm")(x)


class LlamaEncoder(nn.Module):
    """Token ids [batch, length] (0 = padding, rows right-padded) -> last hidden states [batch, length, hidden]."""

    config: LlamaConfig

    def setup(self):
        self.embeddings = LlamaEmbeddings(self.config)
        self.decoder = LlamaStack(self.config)

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        if attention_mask is None:
            attention_mask = tokens != PAD_ID
        return self.decoder(self.embeddings(tokens), attention_mask, deterministic)
