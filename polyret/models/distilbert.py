"""DistilBERT encoders in Flax linen, numerically equal to Hugging Face's `DistilBertModel`.

The layer is BERT's post-LN layer (polyret/models/bert.py's attention and MLP modules are reused) with
DistilBERT's differences: no token-type embeddings, positions 0..L-1 from a learned table or a fixed
sinusoidal one (`sinusoidal_positions`, HF `sinusoidal_pos_embds`: not trained, as in HF), LayerNorm eps
1e-12, and no dropout on the attention output (only on the FFN output and the attention probabilities).

Parameter tree of `DistilBertEncoder` (the same names as `BertEncoder`'s, so LoRA targets and the ColBERT-X
import apply unchanged; polyret/models/hf_distilbert.py maps them to HF's q_lin / sa_layer_norm / ffn.lin1 ...):
  embeddings/word_embeddings/embedding          [vocab, embed]
  embeddings/position_embeddings/embedding      [position, embed]   (learned positions only)
  embeddings/layer_norm/{scale,bias}            [embed]
  encoder/layers_i/attention/{query,key,value,out}/{kernel,bias}
  encoder/layers_i/attention_layer_norm/{scale,bias}
  encoder/layers_i/mlp/{wi,wo}/{kernel,bias}
  encoder/layers_i/mlp_layer_norm/{scale,bias}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from polyret.models import bert
from polyret.models.dropout import Dropout
from polyret.models.layer_stack import check_stack_options, run_layers
from polyret.models.lora import LoraConfig
from polyret.tokens import PAD_ID

LAYER_NORM_EPS = 1e-12  # fixed in HF's DistilBERT


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """Architecture of a DistilBERT encoder (HF names in comments). Defaults are distilbert-base-uncased."""

    vocab_size: int = 30522
    hidden_size: int = 768  # dim
    num_layers: int = 6  # n_layers
    num_heads: int = 12  # n_heads
    intermediate_size: int = 3072  # hidden_dim
    max_position_embeddings: int = 512
    sinusoidal_positions: bool = False  # sinusoidal_pos_embds
    hidden_act: str = "gelu"  # activation
    hidden_dropout_rate: float = 0.1  # dropout
    attention_dropout_rate: float = 0.1  # attention_dropout
    pad_token_id: int = 0  # in Hugging Face's numbering; polyret's pad is always 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    lora: LoraConfig | None = None
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "auto"  # as BertConfig.attention_impl

    def __post_init__(self):
        check_stack_options("DistilBertConfig", self.scan_layers, self.remat_policy)
        if self.hidden_act not in bert.HIDDEN_ACTS:
            raise ValueError(f"DistilBertConfig.hidden_act must be one of {bert.HIDDEN_ACTS}, got {self.hidden_act!r}")
        self.layer_config()  # BertConfig checks the shared fields (heads divide the width, ...)

    @property
    def max_length(self) -> int:
        return self.max_position_embeddings

    def layer_config(self) -> bert.BertConfig:
        """The BertConfig the shared attention / MLP modules read (the fields both configs have)."""
        fields = {f.name for f in dataclasses.fields(bert.BertConfig)}
        shared = {k: v for k, v in dataclasses.asdict(self).items() if k in fields}
        if self.lora is not None:
            shared["lora"] = self.lora
        return bert.BertConfig(**shared, layer_norm_eps=LAYER_NORM_EPS, type_vocab_size=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DistilBertConfig":
        d = dict(d)
        if d.get("lora") is not None:
            d["lora"] = LoraConfig(**d["lora"])
        return cls(**d)


# Public dimensions of the released checkpoints; the tiny one is for tests.
PRESETS: dict[str, DistilBertConfig] = {
    "distilbert_tiny": DistilBertConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4,
                                        intermediate_size=64, max_position_embeddings=64),
    "distilbert_base_uncased": DistilBertConfig(),
    "distilbert_base_multilingual_cased": DistilBertConfig(vocab_size=119547),
}


@gin.configurable
def distilbert_config(preset: str = gin.REQUIRED, **overrides: Any) -> DistilBertConfig:
    """A named preset with any field overridden (gin: `distilbert_config.preset = 'distilbert_base_uncased'`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown DistilBERT preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(DistilBertConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"distilbert_config: {unknown[0]!r} is not a DistilBertConfig field")
    return dataclasses.replace(PRESETS[preset], **overrides)


def sinusoidal_table(rows: int, dim: int) -> np.ndarray:
    """HF's `create_sinusoidal_embeddings`: sin on even columns, cos on odd, float32 [rows, dim]."""
    angles = np.arange(rows)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None, :]
    table = np.zeros((rows, dim), np.float32)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table


class DistilBertEmbeddings(nn.Module):
    """Token ids -> LayerNorm(word + position embeddings), dropped out."""

    config: DistilBertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def table(name, rows, axes):
            return nn.Embed(rows, cfg.hidden_size, dtype=dtype, param_dtype=pdtype, name=name,
                            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes))

        length = tokens.shape[-1]
        if cfg.sinusoidal_positions:  # a constant, as HF never trains it
            positions = jnp.asarray(sinusoidal_table(length, cfg.hidden_size))[None]
        else:
            ids = jnp.arange(length, dtype=jnp.int32)[None]
            positions = table("position_embeddings", cfg.max_position_embeddings, ("position", "embed"))(ids)
        x = (table("word_embeddings", cfg.vocab_size, ("vocab", "embed"))(tokens).astype(jnp.float32)
             + positions.astype(jnp.float32))
        x = bert.LayerNorm(LAYER_NORM_EPS, dtype, pdtype, name="layer_norm")(x)
        x = Dropout(cfg.hidden_dropout_rate)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DistilBertLayer(nn.Module):
    """sa_layer_norm(x + attention(x)), then output_layer_norm(h + dropout(ffn(h)))."""

    config: DistilBertConfig

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config.layer_config()
        norm = lambda name: bert.LayerNorm(LAYER_NORM_EPS, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype), name=name)
        x = norm("attention_layer_norm")(x + bert.SelfAttention(cfg, name="attention")(x, key_mask, deterministic))
        h = bert.MLP(cfg, name="mlp")(x, deterministic)
        x = norm("mlp_layer_norm")(x + Dropout(cfg.hidden_dropout_rate)(h, deterministic=deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DistilBertStack(nn.Module):
    """The `encoder` subtree: the layers over embedded tokens (HF's `transformer`)."""

    config: DistilBertConfig

    @nn.compact
    def __call__(self, embedded: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        return run_layers(self, DistilBertLayer, self.config, self.config.num_layers, embedded, attention_mask,
                          deterministic)


class DistilBertEncoder(nn.Module):
    """Token ids [batch, length] (0 = padding) -> last hidden states [batch, length, hidden_size]."""

    config: DistilBertConfig

    def setup(self):
        self.embeddings = DistilBertEmbeddings(self.config)
        self.encoder = DistilBertStack(self.config)

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        if tokens.shape[-1] > self.config.max_length:  # JAX would clamp the position lookup silently
            raise ValueError(f"DistilBertEncoder: inputs of length {tokens.shape[-1]} exceed the position table "
                             f"(max_length {self.config.max_length}); cut texts to at most that many tokens")
        if attention_mask is None:
            attention_mask = tokens != PAD_ID
        return self.encoder(self.embeddings(tokens, deterministic), attention_mask, deterministic)
