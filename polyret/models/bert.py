"""BERT-family encoders (BERT, RoBERTa, XLM-RoBERTa) in Flax linen, numerically equal to Hugging Face.

Post-LN transformer: word + position + token-type embeddings -> LayerNorm -> dropout, then per layer
self-attention (with bias) -> dropout -> residual -> LayerNorm, GELU MLP -> dropout -> residual -> LayerNorm.
LayerNorm and softmax run in float32 whatever `dtype` is; parameters are stored in `param_dtype`.

Token ids. polyret pads with id 0 everywhere (polyret/tokens.py), so the attention mask is `tokens != 0`.
BERT's [PAD] is already 0. RoBERTa/XLM-R number `<s>`=0, `<pad>`=1; polyret's ids for them swap those two
ids (polyret 0 = <pad>, polyret 1 = <s>), all other ids unchanged. The swap lives at the boundaries only:
the HF importer swaps rows 0 and `pad_token_id` of the word-embedding table, the exporter swaps them back,
and `polyret.seqio_tasks.hf_vocab.HfVocabulary` swaps ids in encode/decode. `BertConfig.pad_token_id` is
the pad id in Hugging Face's numbering (the value of config.json), used for the swap and for RoBERTa's
positions: position ids = cumsum(mask) * mask + pad_token_id (so the first real token is pad_token_id + 1,
padding sits at pad_token_id) with mask = tokens != 0; BERT uses 0..L-1.

Parameter tree of `BertEncoder` (every parameter and the main activations carry logical axis names):
  embeddings/word_embeddings/embedding          [vocab, embed]
  embeddings/position_embeddings/embedding      [position, embed]
  embeddings/token_type_embeddings/embedding    [token_type, embed]
  embeddings/layer_norm/{scale,bias}            [embed]
  encoder/layers_i/attention/{query,key,value}/{kernel [embed, joined_kv], bias [joined_kv]}
  encoder/layers_i/attention/out/{kernel [joined_kv, embed], bias [embed]}
  encoder/layers_i/attention_layer_norm/{scale,bias}
  encoder/layers_i/mlp/wi/{kernel [embed, mlp], bias}, mlp/wo/{kernel [mlp, embed], bias}
  encoder/layers_i/mlp_layer_norm/{scale,bias}
The attention names match the T5 encoder's, so LoraConfig's default target (`attention/(query|value)`)
applies to both families. polyret/models/hf_bert.py maps these names to and from Hugging Face's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
from flax import linen as nn

from polyret.models.attention import attention, check_attention_impl, choose_impl, explicit_attention
from polyret.models.dropout import Dropout
from polyret.models.layer_stack import check_stack_options, run_layers
from polyret.models.lora import LoraConfig, LoraDense
from polyret.tokens import PAD_ID

MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT-family encoder. Defaults are bert-base (uncased)."""

    model_type: str = "bert"  # "bert" (positions 0..L-1) or "roberta" / "xlm-roberta" (padding offset)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0  # in Hugging Face's numbering (config.json); polyret's pad is always 0
    hidden_act: str = "gelu"  # "gelu" is exact (erf) GELU, as HF's BERT/XLM-R
    hidden_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: str = "float32"  # activations, e.g. "bfloat16"
    param_dtype: str = "float32"
    lora: LoraConfig | None = None
    scan_layers: bool = False  # one scanned layer body (compiles once); same parameter layout either way
    remat_policy: str = "none"  # "none" | "full" | "dots_saveable" | ... (polyret/models/layer_stack.py)
    attention_impl: str = "auto"  # "auto" | "xla" | "cudnn" (polyret/models/attention.py)

    def __post_init__(self):
        check_stack_options("BertConfig", self.scan_layers, self.remat_policy)
        check_attention_impl("BertConfig", self.attention_impl)
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"BertConfig.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"BertConfig.hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"BertConfig.hidden_size {self.hidden_size} is not a multiple of num_heads "
                             f"{self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def roberta_positions(self) -> bool:
        return self.model_type != "bert"

    @property
    def max_length(self) -> int:
        """The longest input the position table supports (RoBERTa reserves pad_token_id + 1 rows)."""
        return self.max_position_embeddings - (self.pad_token_id + 1 if self.roberta_positions else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        d = dict(d)
        if d.get("lora") is not None:
            d["lora"] = LoraConfig(**d["lora"])
        return cls(**d)


_XLMR = dict(model_type="xlm-roberta", vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
             layer_norm_eps=1e-5, pad_token_id=1)

# Public dimensions of the released checkpoints; the tiny ones are for tests.
PRESETS: dict[str, BertConfig] = {
    "bert_tiny": BertConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                            max_position_embeddings=64),
    "xlm_roberta_tiny": BertConfig(**{**_XLMR, "vocab_size": 512, "max_position_embeddings": 66}, hidden_size=32,
                                   num_layers=2, num_heads=4, intermediate_size=64),
    "minilm_l6": BertConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    "bert_base": BertConfig(),
    "xlm_roberta_base": BertConfig(**_XLMR, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "xlm_roberta_large": BertConfig(**_XLMR, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
}


@gin.configurable
def bert_config(preset: str = gin.REQUIRED, **overrides: Any) -> BertConfig:
    """A named preset with any field overridden (gin: `bert_config.preset = 'xlm_roberta_large'`,
    `bert_config.dtype = 'bfloat16'`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown BERT preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(BertConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"bert_config: {unknown[0]!r} is not a BertConfig field")
    return dataclasses.replace(PRESETS[preset], **overrides)


def _activation(name: str):
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: nn.gelu(x, approximate=True)
    return nn.relu


class LayerNorm(nn.Module):
    """LayerNorm with scale and bias, computed in float32, returned in `dtype`."""

    epsilon: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (features,), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                          (features,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def _dense(cfg: BertConfig, features: int, axes: tuple[str, str], name: str) -> LoraDense:
    return LoraDense(features, axes, nn.initializers.normal(0.02), cfg.lora, jnp.dtype(cfg.dtype),
                     jnp.dtype(cfg.param_dtype), use_bias=True, name=name)


def _norm(cfg: BertConfig, name: str) -> LayerNorm:
    return LayerNorm(cfg.layer_norm_eps, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype), name=name)


def position_ids(tokens: jax.Array, cfg: BertConfig) -> jax.Array:
    """[B, L] positions: 0..L-1 for BERT; RoBERTa's cumsum(mask) * mask + pad_token_id (mask = tokens != 0)."""
    if not cfg.roberta_positions:
        return jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32), tokens.shape)
    mask = (tokens != PAD_ID).astype(jnp.int32)
    return jnp.cumsum(mask, axis=-1) * mask + cfg.pad_token_id


class BertEmbeddings(nn.Module):
    """Token ids (+ optional token types) -> LayerNorm(word + position + type embeddings), dropped out."""

    config: BertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, token_type_ids: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def table(name, rows, axes):
            return nn.Embed(rows, cfg.hidden_size, dtype=dtype, param_dtype=pdtype, name=name,
                            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes))

        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(tokens)
        x = (table("word_embeddings", cfg.vocab_size, ("vocab", "embed"))(tokens).astype(jnp.float32)
             + table("position_embeddings", cfg.max_position_embeddings, ("position", "embed"))(
                 position_ids(tokens, cfg)).astype(jnp.float32)
             + table("token_type_embeddings", cfg.type_vocab_size, ("token_type", "embed"))(
                 token_type_ids).astype(jnp.float32))
        x = _norm(cfg, "layer_norm")(x)
        x = Dropout(cfg.hidden_dropout_rate)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class SelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        h = cfg.hidden_size
        q = _dense(cfg, h, ("embed", "joined_kv"), "query")(x, deterministic)
        k = _dense(cfg, h, ("embed", "joined_kv"), "key")(x, deterministic)
        v = _dense(cfg, h, ("embed", "joined_kv"), "value")(x, deterministic)
        split = lambda t: nn.with_logical_constraint(
            t.reshape(t.shape[:2] + (cfg.num_heads, cfg.head_dim)), ("batch", "length", "heads", "kv"))
        q, k, v = split(q), split(k), split(v)
        impl = choose_impl(cfg.attention_impl, q, False, not deterministic and cfg.attention_dropout_rate > 0)
        if impl == "explicit":
            drop = lambda w: Dropout(cfg.attention_dropout_rate)(w, deterministic=deterministic)
            out = explicit_attention(q, k, v, None, key_mask, cfg.head_dim ** -0.5, drop)
        else:
            out = attention(q, k, v, None, key_mask, cfg.head_dim ** -0.5, impl)
        out = out.reshape(x.shape[:2] + (h,))
        return _dense(cfg, h, ("joined_kv", "embed"), "out")(out, deterministic)


class MLP(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        h = _activation(cfg.hidden_act)(_dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "wi")(x, deterministic))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h, deterministic)


class EncoderLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        drop = Dropout(cfg.hidden_dropout_rate)
        h = SelfAttention(cfg, name="attention")(x, key_mask, deterministic)
        x = _norm(cfg, "attention_layer_norm")(x + drop(h, deterministic=deterministic))
        h = MLP(cfg, name="mlp")(x, deterministic)
        x = _norm(cfg, "mlp_layer_norm")(x + drop(h, deterministic=deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertStack(nn.Module):
    """The `encoder` subtree: the post-LN layers over embedded tokens."""

    config: BertConfig

    @nn.compact
    def __call__(self, embedded: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        # The key mask [batch, L] goes to the attention as is (polyret/models/attention.py).
        return run_layers(self, EncoderLayer, self.config, self.config.num_layers, embedded, attention_mask,
                          deterministic)


class BertEncoder(nn.Module):
    """Token ids [batch, length] (0 = padding) -> last hidden states [batch, length, hidden_size].

    `attention_mask` defaults to `tokens != 0`; a narrower mask (e.g. ColBERT's query-augmentation
    mask tokens, which take part in positions but are not attended to) may be passed. Positions always
    follow `tokens != 0`, as Hugging Face derives them from the ids.
    """

    config: BertConfig

    def setup(self):
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = BertStack(self.config)

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None, deterministic: bool = True,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        if tokens.shape[-1] > self.config.max_length:  # JAX would clamp the position lookup silently
            raise ValueError(f"BertEncoder: inputs of length {tokens.shape[-1]} exceed the position table "
                             f"(max_length {self.config.max_length}); cut texts to at most that many tokens")
        if attention_mask is None:
            attention_mask = tokens != PAD_ID
        embedded = self.embeddings(tokens, token_type_ids, deterministic)
        return self.encoder(embedded, attention_mask, deterministic)
