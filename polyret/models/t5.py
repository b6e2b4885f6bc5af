"""T5-family encoder (T5 1.0, T5 1.1 / mT5, ByT5) in Flax linen with T5X parameter names.

Parameter tree of `T5Encoder` (the names public T5X checkpoints use):
  token_embedder/embedding                        [vocab, embed]
  encoder/relpos_bias/rel_embedding               [heads, buckets]   (shared by all layers)
  encoder/layers_i/pre_attention_layer_norm/scale [embed]
  encoder/layers_i/attention/{query,key,value}/kernel [embed, heads*kv]
  encoder/layers_i/attention/out/kernel           [heads*kv, embed]
  encoder/layers_i/pre_mlp_layer_norm/scale       [embed]
  encoder/layers_i/mlp/{wi | wi_0, wi_1}/kernel   [embed, mlp]
  encoder/layers_i/mlp/wo/kernel                  [mlp, embed]
  encoder/encoder_norm/scale                      [embed]
Every parameter carries logical axis names; the main activations are constrained by them too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from polyret.models.attention import attention, check_attention_impl, choose_impl, explicit_attention
from polyret.models.dropout import Dropout
from polyret.models.layer_stack import check_stack_options, run_layers
from polyret.models.lora import LoraConfig, LoraDense
from polyret.tokens import PAD_ID

ACTIVATIONS = ("relu", "gated-gelu", "gated-relu")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5-family encoder. Defaults are mT5-small."""

    vocab_size: int = 250112
    d_model: int = 512
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    activation: str = "gated-gelu"  # "relu" for T5 1.0, "gated-gelu" for T5 1.1 / mT5 / ByT5
    dropout_rate: float = 0.1
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"  # activations, e.g. "bfloat16"
    param_dtype: str = "float32"
    lora: LoraConfig | None = None
    scan_layers: bool = False  # one scanned layer body (compiles once); same parameter layout either way
    remat_policy: str = "none"  # "none" | "full" | "dots_saveable" | ... (polyret/models/layer_stack.py)
    attention_impl: str = "auto"  # "auto" | "xla" | "cudnn" (polyret/models/attention.py)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"T5Config.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        check_stack_options("T5Config", self.scan_layers, self.remat_policy)
        check_attention_impl("T5Config", self.attention_impl)

    @property
    def gated(self) -> bool:
        return self.activation.startswith("gated")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "T5Config":
        d = dict(d)
        if d.get("lora") is not None:
            d["lora"] = LoraConfig(**d["lora"])
        return cls(**d)


# Public dimensions of the released checkpoints; `mt5_tiny` is for tests and the demo.
PRESETS: dict[str, T5Config] = {
    "mt5_tiny": T5Config(vocab_size=512, d_model=32, num_heads=4, d_kv=8, d_ff=64, num_layers=2),
    "mt5_small": T5Config(vocab_size=250112, d_model=512, num_heads=6, d_kv=64, d_ff=1024, num_layers=8),
    "mt5_base": T5Config(vocab_size=250112, d_model=768, num_heads=12, d_kv=64, d_ff=2048, num_layers=12),
    "mt5_large": T5Config(vocab_size=250112, d_model=1024, num_heads=16, d_kv=64, d_ff=2816, num_layers=24),
    "mt5_xl": T5Config(vocab_size=250112, d_model=2048, num_heads=32, d_kv=64, d_ff=5120, num_layers=24),
    "t5_1_0_base": T5Config(vocab_size=32128, d_model=768, num_heads=12, d_kv=64, d_ff=3072, num_layers=12,
                            activation="relu"),
    "byt5_small": T5Config(vocab_size=384, d_model=1472, num_heads=6, d_kv=64, d_ff=3584, num_layers=12),
}


@gin.configurable
def t5_config(preset: str = gin.REQUIRED, **overrides: Any) -> T5Config:
    """A named preset with any field overridden (gin: `t5_config.preset = 'mt5_base'`,
    `t5_config.d_model = 256`, `t5_config.num_layers = 4`, `t5_config.dtype = 'bfloat16'`, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown T5 preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(T5Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"t5_config: {unknown[0]!r} is not a T5Config field (fields: {', '.join(sorted(fields))})")
    return dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 relative-position buckets, [query_length, key_length] (static, numpy)."""
    relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int32) * half
    distance = np.abs(relative)
    max_exact = half // 2
    # Log-spaced buckets beyond max_exact; np.maximum avoids log(0) where the small branch is used anyway.
    large = max_exact + (
        np.log(np.maximum(distance, 1) / max_exact) / np.log(max_distance / max_exact) * (half - max_exact)
    ).astype(np.int32)
    large = np.minimum(large, half - 1)
    return buckets + np.where(distance < max_exact, distance, large)


class RMSNorm(nn.Module):
    """T5 layer norm: no mean subtraction, no bias; computed in float32."""

    epsilon: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


class RelativePositionBias(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, query_length: int, key_length: int) -> jax.Array:
        cfg = self.config
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("heads", "relpos_buckets")),
            (cfg.num_heads, cfg.relative_attention_num_buckets), jnp.dtype(cfg.param_dtype))
        buckets = relative_position_buckets(query_length, key_length, cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance)
        return table[:, buckets][None].astype(jnp.float32)  # [1, heads, q, k]


class SelfAttention(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, bias_and_mask: tuple[jax.Array, jax.Array], deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        bias, key_mask = bias_and_mask  # [1, heads, L, L] float32 relative-position bias; [batch, L] bool
        inner = cfg.num_heads * cfg.d_kv

        def dense(name, features, axes, stddev):
            return LoraDense(features, axes, nn.initializers.normal(stddev), cfg.lora, dtype,
                             jnp.dtype(cfg.param_dtype), name=name)

        # T5 applies no 1/sqrt(d) to the logits; the query initialiser carries it instead.
        q = dense("query", inner, ("embed", "joined_kv"), (cfg.d_model * cfg.d_kv) ** -0.5)(x, deterministic)
        k = dense("key", inner, ("embed", "joined_kv"), cfg.d_model ** -0.5)(x, deterministic)
        v = dense("value", inner, ("embed", "joined_kv"), cfg.d_model ** -0.5)(x, deterministic)
        split = lambda t: nn.with_logical_constraint(
            t.reshape(t.shape[:2] + (cfg.num_heads, cfg.d_kv)), ("batch", "length", "heads", "kv"))
        q, k, v = split(q), split(k), split(v)
        # T5 applies no 1/sqrt(d): scale 1.
        impl = choose_impl(cfg.attention_impl, q, True, not deterministic and cfg.dropout_rate > 0)
        if impl == "explicit":
            drop = lambda w: Dropout(cfg.dropout_rate)(w, deterministic=deterministic)
            out = explicit_attention(q, k, v, bias, key_mask, 1.0, drop)
        else:
            out = attention(q, k, v, bias, key_mask, 1.0, impl)
        out = out.reshape(x.shape[:2] + (inner,))
        return dense("out", cfg.d_model, ("joined_kv", "embed"), inner ** -0.5)(out, deterministic)


class MLP(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        dense = lambda name, features, axes: LoraDense(features, axes, init, cfg.lora, dtype, pdtype, name=name)
        if cfg.gated:
            act = (lambda h: nn.gelu(h, approximate=True)) if cfg.activation == "gated-gelu" else nn.relu
            h = act(dense("wi_0", cfg.d_ff, ("embed", "mlp"))(x, deterministic)) * dense(
                "wi_1", cfg.d_ff, ("embed", "mlp"))(x, deterministic)
        else:
            h = nn.relu(dense("wi", cfg.d_ff, ("embed", "mlp"))(x, deterministic))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return dense("wo", cfg.d_model, ("mlp", "embed"))(h, deterministic)


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, bias_and_mask: tuple[jax.Array, jax.Array], deterministic: bool) -> jax.Array:
        cfg = self.config
        norm = lambda name: RMSNorm(cfg.layer_norm_epsilon, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype),
                                    name=name)
        drop = Dropout(cfg.dropout_rate)
        h = SelfAttention(cfg, name="attention")(norm("pre_attention_layer_norm")(x), bias_and_mask,
                                                   deterministic)
        x = x + drop(h, deterministic=deterministic)
        h = MLP(cfg, name="mlp")(norm("pre_mlp_layer_norm")(x), deterministic)
        x = x + drop(h, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class EncoderStack(nn.Module):
    """The `encoder` subtree: shared relative position bias, layers, final norm."""

    config: T5Config

    @nn.compact
    def __call__(self, embedded: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        length = embedded.shape[1]
        bias = RelativePositionBias(cfg, name="relpos_bias")(length, length)
        x = Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        # The bias [1, heads, L, L] and the key mask [batch, L] travel apart: a fused kernel takes the
        # padding as key lengths, and no [batch, heads, L, L] tensor is built outside the attention.
        x = run_layers(self, EncoderLayer, cfg, cfg.num_layers, x, (bias, attention_mask), deterministic)
        x = RMSNorm(cfg.layer_norm_epsilon, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype),
                    name="encoder_norm")(x)
        return Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


def make_token_embedder(cfg: T5Config) -> nn.Embed:
    return nn.Embed(cfg.vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                    embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))


class T5Encoder(nn.Module):
    """Token ids [batch, length] (0 = padding) -> hidden states [batch, length, d_model]."""

    config: T5Config

    def setup(self):
        self.token_embedder = make_token_embedder(self.config)
        self.encoder = EncoderStack(self.config)

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        if attention_mask is None:
            attention_mask = tokens != PAD_ID
        embedded = nn.with_logical_constraint(self.token_embedder(tokens), ("batch", "length", "embed"))
        return self.encoder(embedded, attention_mask, deterministic)
