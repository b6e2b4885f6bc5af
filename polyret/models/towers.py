"""Retrieval towers as Flax modules: a dual encoder (one vector per text) and ColBERT (one per token).
The trainer and jobs reach them through `retrieval_model.RetrievalModel`, never directly.

Parameter names follow t5x_retrieval: with shared towers the encoder sits at the top level
(`token_embedder`, `encoder`) beside `projection_layer/kernel`; separate towers nest the same names
under `left_tower` and `right_tower`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import gin
import jax
import jax.numpy as jnp
from flax import linen as nn

from polyret.models.lora import LoraDense
from polyret.tokens import PAD_ID
from polyret.models.bert import BertConfig, BertEmbeddings, BertEncoder, BertStack
from polyret.models.t5 import EncoderStack, T5Config, T5Encoder, make_token_embedder

POOLINGS = ("mean", "first")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DualEncoderConfig:
    encoder: "EncoderConfig" = T5Config()
    shared_towers: bool = True
    pooling: str = "mean"
    projection_dim: int | None = None  # bias-free projection after pooling; None keeps d_model
    l2_norm: bool = True
    logit_scale: float = 100.0  # initial value when learnable
    learnable_logit_scale: bool = False

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"DualEncoderConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DualEncoderConfig":
        return cls(**{**d, "encoder": encoder_config_from_dict(d["encoder"])})


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ColBERTConfig:
    encoder: "EncoderConfig" = T5Config()
    projection_dim: int = 128
    query_length: int = 32
    # Queries are padded to query_length with this token and every position takes part in MaxSim
    # (ColBERT's query augmentation). mT5 has no [MASK]; a sentinel id is the usual choice.
    query_mask_token_id: int = 250099
    # Document tokens left out of MaxSim (punctuation); padding is always left out.
    skip_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ColBERTConfig":
        return cls(**{**d, "encoder": encoder_config_from_dict(d["encoder"]),
                      "skip_token_ids": tuple(d.get("skip_token_ids", ()))})


ModelConfig = Union[DualEncoderConfig, ColBERTConfig]


EncoderConfig = Union[T5Config, BertConfig]


class _T5Family:
    """T5 / mT5 / ByT5: parameters `token_embedder` and `encoder` (T5X names) at the tower's top level."""

    @staticmethod
    def parts(cfg: T5Config) -> dict[str, nn.Module]:
        return {"token_embedder": make_token_embedder(cfg), "encoder": EncoderStack(cfg)}

    @staticmethod
    def hidden(parts: dict[str, nn.Module], tokens: jax.Array, attention_mask: jax.Array,
               deterministic: bool) -> jax.Array:
        embedded = nn.with_logical_constraint(parts["token_embedder"](tokens), ("batch", "length", "embed"))
        return parts["encoder"](embedded, attention_mask, deterministic)

    tower = T5Encoder


class _BertFamily:
    """BERT / RoBERTa / XLM-R: parameters `embeddings` and `encoder` at the tower's top level."""

    @staticmethod
    def parts(cfg: BertConfig) -> dict[str, nn.Module]:
        return {"embeddings": BertEmbeddings(cfg), "encoder": BertStack(cfg)}

    @staticmethod
    def hidden(parts: dict[str, nn.Module], tokens: jax.Array, attention_mask: jax.Array,
               deterministic: bool) -> jax.Array:
        return parts["encoder"](parts["embeddings"](tokens, None, deterministic), attention_mask, deterministic)

    tower = BertEncoder


def encoder_family(cfg: EncoderConfig):
    """The encoder family of an encoder config; a new family adds a class like _T5Family and a line here."""
    return _BertFamily if isinstance(cfg, BertConfig) else _T5Family


def encoder_config_from_dict(d: dict[str, Any]) -> EncoderConfig:
    return BertConfig.from_dict(d) if "hidden_size" in d else T5Config.from_dict(d)


def hidden_size(cfg: EncoderConfig) -> int:
    return cfg.hidden_size if isinstance(cfg, BertConfig) else cfg.d_model


def _l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-12))


def _projection(encoder: EncoderConfig, features: int) -> LoraDense:
    return LoraDense(features, ("embed", "affinity"), nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                     encoder.lora, jnp.dtype(encoder.dtype), jnp.dtype(encoder.param_dtype))


def _attach_parts(tower: nn.Module, cfg: EncoderConfig) -> None:
    """In `setup`: the encoder's submodules under their own names at the tower's top level."""
    parts = encoder_family(cfg).parts(cfg)
    for name, module in parts.items():
        setattr(tower, name, module)
    tower.part_names = tuple(parts)


def _shared_hidden(tower: nn.Module, tokens: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    parts = {name: getattr(tower, name) for name in tower.part_names}
    return encoder_family(tower.config.encoder).hidden(parts, tokens, attention_mask, deterministic)


class DualEncoder(nn.Module):
    config: DualEncoderConfig

    def setup(self):
        cfg = self.config
        family = encoder_family(cfg.encoder)
        if cfg.shared_towers:
            _attach_parts(self, cfg.encoder)
        else:
            self.left_tower = family.tower(cfg.encoder)
            self.right_tower = family.tower(cfg.encoder)
        if cfg.projection_dim:
            self.projection_layer = _projection(cfg.encoder, cfg.projection_dim)
        if cfg.learnable_logit_scale:
            self.logit_scale_param = self.param("logit_scale", nn.initializers.constant(cfg.logit_scale), ())

    def _hidden(self, tokens: jax.Array, side: str, deterministic: bool) -> jax.Array:
        if self.config.shared_towers:
            return _shared_hidden(self, tokens, tokens != PAD_ID, deterministic)
        tower = self.left_tower if side == "left" else self.right_tower
        return tower(tokens, deterministic=deterministic)

    def encode(self, tokens: jax.Array, side: str = "left", deterministic: bool = True) -> jax.Array:
        """Token ids [..., length] -> embeddings [..., dim] (float32)."""
        lead = tokens.shape[:-1]
        tokens = tokens.reshape(-1, tokens.shape[-1])
        hidden = self._hidden(tokens, side, deterministic).astype(jnp.float32)
        if self.config.pooling == "mean":
            mask = (tokens != PAD_ID).astype(jnp.float32)[..., None]
            pooled = jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        else:
            pooled = hidden[:, 0]
        if self.config.projection_dim:
            pooled = self.projection_layer(pooled, deterministic).astype(jnp.float32)
        if self.config.l2_norm:
            pooled = _l2_normalize(pooled)
        pooled = nn.with_logical_constraint(pooled, ("batch", "affinity"))
        return pooled.reshape(lead + pooled.shape[-1:])

    def logit_scale(self) -> jax.Array:
        if self.config.learnable_logit_scale:
            return self.logit_scale_param
        return jnp.asarray(self.config.logit_scale, jnp.float32)

    def __call__(self, left_tokens: jax.Array, right_tokens: jax.Array, right_negative_tokens: jax.Array | None = None,
                 deterministic: bool = True) -> dict[str, jax.Array]:
        out = {"left": self.encode(left_tokens, "left", deterministic),
               "right": self.encode(right_tokens, "right", deterministic),
               "logit_scale": self.logit_scale()}
        if right_negative_tokens is not None:
            out["right_negative"] = self.encode(right_negative_tokens, "right", deterministic)
        return out


class ColBERT(nn.Module):
    """Late interaction: per-token projection to `projection_dim`, L2 norm, scored by MaxSim."""

    config: ColBERTConfig

    def setup(self):
        cfg = self.config
        _attach_parts(self, cfg.encoder)
        self.projection_layer = _projection(cfg.encoder, cfg.projection_dim)

    def _token_vectors(self, tokens: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        hidden = _shared_hidden(self, tokens, attention_mask, deterministic)
        return _l2_normalize(self.projection_layer(hidden, deterministic))

    def encode_query(self, tokens: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """Query ids [B, <=query_length] -> (vectors [B, query_length, dim], mask [B, query_length])."""
        cfg = self.config
        tokens = tokens[:, : cfg.query_length]
        tokens = jnp.pad(tokens, ((0, 0), (0, cfg.query_length - tokens.shape[1])))
        tokens = jnp.where(tokens == PAD_ID, cfg.query_mask_token_id, tokens)
        mask = jnp.ones(tokens.shape, bool)
        return self._token_vectors(tokens, mask, deterministic), mask

    def encode_document(self, tokens: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """Document ids [..., L] -> (vectors [..., L, dim], mask [..., L]); pads and skip ids masked."""
        lead = tokens.shape[:-1]
        flat = tokens.reshape(-1, tokens.shape[-1])
        vectors = self._token_vectors(flat, flat != PAD_ID, deterministic)
        mask = flat != PAD_ID
        for skip in self.config.skip_token_ids:
            mask = mask & (flat != skip)
        vectors = vectors * mask[..., None]
        return vectors.reshape(lead + vectors.shape[1:]), mask.reshape(tokens.shape)

    def __call__(self, left_tokens: jax.Array, right_tokens: jax.Array, right_negative_tokens: jax.Array | None = None,
                 deterministic: bool = True) -> dict[str, jax.Array]:
        q, q_mask = self.encode_query(left_tokens, deterministic)
        d, d_mask = self.encode_document(right_tokens, deterministic)
        out = {"left": q, "left_mask": q_mask, "right": d, "right_mask": d_mask}
        if right_negative_tokens is not None:
            out["right_negative"], out["right_negative_mask"] = self.encode_document(right_negative_tokens, deterministic)
        return out


def dot_scores(queries: jax.Array, passages: jax.Array) -> jax.Array:
    """[Bq, D] x [Bp, D] -> [Bq, Bp]."""
    return jnp.einsum("qd,pd->qp", queries, passages, preferred_element_type=jnp.float32)


def maxsim_scores(queries: jax.Array, query_mask: jax.Array, docs: jax.Array, doc_mask: jax.Array) -> jax.Array:
    """Every query against every document: [Bq, Lq, D], [Bq, Lq], [Bd, Ld, D], [Bd, Ld] -> [Bq, Bd]."""
    sim = jnp.einsum("qid,pjd->qpij", queries, docs, preferred_element_type=jnp.float32)
    sim = jnp.where(doc_mask[None, :, None, :], sim, -jnp.inf)
    best = jnp.max(sim, axis=-1)
    best = jnp.where(jnp.isfinite(best), best, 0.0)  # a document with no valid token scores 0
    return jnp.sum(best * query_mask[:, None, :], axis=-1)


def maxsim_paired(queries: jax.Array, query_mask: jax.Array, docs: jax.Array, doc_mask: jax.Array) -> jax.Array:
    """Each query against its own K documents: [B, Lq, D], [B, Lq], [B, K, Ld, D], [B, K, Ld] -> [B, K]."""
    sim = jnp.einsum("bid,bkjd->bkij", queries, docs, preferred_element_type=jnp.float32)
    sim = jnp.where(doc_mask[:, :, None, :], sim, -jnp.inf)
    best = jnp.max(sim, axis=-1)
    best = jnp.where(jnp.isfinite(best), best, 0.0)
    return jnp.sum(best * query_mask[:, None, :], axis=-1)
