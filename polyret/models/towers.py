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

from polyret.models.encoder_families import encoder_config_from_dict, family_of
from polyret.models.lora import LoraDense
from polyret.models.t5 import T5Config
from polyret.tokens import PAD_ID

POOLINGS = ("mean", "first", "last")  # last: the last real token (a decoder LLM's appended EOS)


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
    """ColBERT tower settings. The defaults are plain ColBERT over T5 ids (no markers, every query position
    attended); `polyret.models.colbert_x.colbert_x_config` fills in ColBERT-X as PLAID-X builds it
    from a BERT / XLM-R tokenizer (markers, its [MASK], its punctuation skip list, mask tokens not attended).

    ColBERT-X inputs are the vocabulary's ids of the bare text, `[CLS] text [SEP]` (HfVocabulary + EOS).
    PLAID-X tokenises '. ' + text and overwrites the first token after [CLS] with the [Q] / [D] marker; the
    model does the same on ids: it inserts the marker and `marker_suffix_ids` (what remains of the '. '
    placeholder's tokens, e.g. '.' when the vocabulary splits '. ' into '▁' + '.') after [CLS], then cuts
    to the length keeping each row's last token ([SEP]), as Hugging Face truncation does.
    """

    encoder: "EncoderConfig" = T5Config()
    projection_dim: int = 128
    query_length: int = 32
    # Queries are padded to query_length with this token and every position takes part in MaxSim
    # (ColBERT's query augmentation). mT5 has no [MASK]; a sentinel id is the usual choice.
    query_mask_token_id: int = 250099
    # Document tokens left out of MaxSim (punctuation); padding is always left out.
    skip_token_ids: tuple[int, ...] = ()
    # ColBERT-X (PLAID-X): marker ids inserted after the first token; None = no marker (plain ColBERT).
    query_marker_id: int | None = None
    document_marker_id: int | None = None
    marker_suffix_ids: tuple[int, ...] = ()
    # False (PLAID-X's default): the query's mask tokens get no attention from any position, yet each still
    # yields a vector that takes part in MaxSim. True: plain ColBERT, every position attended.
    attend_to_mask_tokens: bool = True
    # Documents longer than this (after the marker) are cut, keeping their last token (PLAID-X doc_maxlen).
    document_length: int | None = None

    def __post_init__(self):
        if (self.query_marker_id is None) != (self.document_marker_id is None):
            raise ValueError("ColBERTConfig: set both query_marker_id and document_marker_id, or neither")
        if self.query_marker_id is not None and self.query_length < 3 + len(self.marker_suffix_ids):
            raise ValueError(f"ColBERTConfig.query_length {self.query_length} leaves no room for [CLS], the "
                             "marker and [SEP]")

    @property
    def colbert_x(self) -> bool:
        """True when queries and documents carry PLAID-X's markers."""
        return self.query_marker_id is not None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ColBERTConfig":
        return cls(**{**d, "encoder": encoder_config_from_dict(d["encoder"]),
                      "skip_token_ids": tuple(d.get("skip_token_ids", ())),
                      "marker_suffix_ids": tuple(d.get("marker_suffix_ids", ()))})


ModelConfig = Union[DualEncoderConfig, ColBERTConfig]


# An encoder config of any registered family (polyret.models.encoder_families); T5 is the default.
EncoderConfig = Any


def hidden_size(cfg: EncoderConfig) -> int:
    """The encoder's output width (its family's `width`)."""
    return family_of(cfg).width(cfg)


def _l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-12))


def projection_head(encoder: EncoderConfig, features: int) -> LoraDense:
    """The bias-free projection after the encoder (`projection_layer`)."""
    return LoraDense(features, ("embed", "affinity"), nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                     encoder.lora, jnp.dtype(encoder.dtype), jnp.dtype(encoder.param_dtype))


def _attach_parts(tower: nn.Module, cfg: EncoderConfig) -> None:
    """In `setup`: the encoder's submodules under their own names at the tower's top level."""
    parts = family_of(cfg).parts(cfg)
    for name, module in parts.items():
        setattr(tower, name, module)
    tower.part_names = tuple(parts)


def _shared_hidden(tower: nn.Module, tokens: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    parts = {name: getattr(tower, name) for name in tower.part_names}
    return family_of(tower.config.encoder).hidden(parts, tokens, attention_mask, deterministic)


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """hidden [B, L, D], mask [B, L] (right-padded rows) -> [B, D] by 'mean', 'first' or 'last' (the last
    token the mask keeps)."""
    if pooling == "mean":
        weights = mask.astype(hidden.dtype)[..., None]
        return jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    if pooling == "last":
        last = jnp.maximum(jnp.sum(mask, axis=1, dtype=jnp.int32) - 1, 0)
        return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return hidden[:, 0]


class DualEncoder(nn.Module):
    config: DualEncoderConfig

    def setup(self):
        cfg = self.config
        family = family_of(cfg.encoder)
        if cfg.shared_towers:
            _attach_parts(self, cfg.encoder)
        else:
            self.left_tower = family.tower(cfg.encoder)
            self.right_tower = family.tower(cfg.encoder)
        if cfg.projection_dim:
            self.projection_layer = projection_head(cfg.encoder, cfg.projection_dim)
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
        pooled = pool(hidden, tokens != PAD_ID, self.config.pooling)
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


def insert_after_first(tokens: jax.Array, ids: tuple[int, ...], length: int) -> jax.Array:
    """Right-padded rows [B, L] -> [B, length]: `ids` inserted after each row's first token, then padded or
    cut to `length`; a cut row keeps its last token in the final position (as HF truncation keeps [SEP]).
    All-padding rows stay padding. Static shapes: jittable."""
    batch = tokens.shape[0]
    n = jnp.sum(tokens != PAD_ID, axis=-1)
    if ids:
        inserted = jnp.where(n[:, None] > 0, jnp.asarray(ids, tokens.dtype)[None, :], PAD_ID)
        tokens = jnp.concatenate([tokens[:, :1], inserted.astype(tokens.dtype), tokens[:, 1:]], axis=1)
        n = jnp.where(n > 0, n + len(ids), 0)
    width = tokens.shape[1]
    if width < length:
        return jnp.pad(tokens, ((0, 0), (0, length - width)))
    if width > length:
        last = jnp.take_along_axis(tokens, jnp.maximum(n - 1, 0)[:, None], axis=1)
        tokens = tokens[:, :length]
        cut = (n > length)[:, None] & (jnp.arange(length) == length - 1)[None, :]
        tokens = jnp.where(cut, jnp.broadcast_to(last, (batch, length)), tokens)
    return tokens


class ColBERT(nn.Module):
    """Late interaction: per-token projection to `projection_dim`, L2 norm, scored by MaxSim."""

    config: ColBERTConfig

    def setup(self):
        cfg = self.config
        _attach_parts(self, cfg.encoder)
        self.projection_layer = projection_head(cfg.encoder, cfg.projection_dim)

    def _token_vectors(self, tokens: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        hidden = _shared_hidden(self, tokens, attention_mask, deterministic)
        return _l2_normalize(self.projection_layer(hidden, deterministic))

    def query_inputs(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Query ids [B, L] -> (the ids the encoder reads [B, query_length], its attention mask): the
        marker inserted (ColBERT-X), padding replaced by the mask token (query augmentation)."""
        cfg = self.config
        if cfg.colbert_x:
            tokens = insert_after_first(tokens, (cfg.query_marker_id, *cfg.marker_suffix_ids), cfg.query_length)
        else:
            tokens = tokens[:, : cfg.query_length]
            tokens = jnp.pad(tokens, ((0, 0), (0, cfg.query_length - tokens.shape[1])))
        real = tokens != PAD_ID
        attention = jnp.ones(tokens.shape, bool) if cfg.attend_to_mask_tokens else real
        return jnp.where(real, tokens, cfg.query_mask_token_id), attention

    def document_inputs(self, tokens: jax.Array) -> jax.Array:
        """Document ids [B, L] -> the ids the encoder reads: marker inserted (ColBERT-X), cut to
        `document_length`; [B, min(L + inserted, document_length)]."""
        cfg = self.config
        ids = (cfg.document_marker_id, *cfg.marker_suffix_ids) if cfg.colbert_x else ()
        length = tokens.shape[1] + len(ids)
        if cfg.document_length is not None:
            length = min(length, cfg.document_length)
        if not ids and length == tokens.shape[1]:
            return tokens
        return insert_after_first(tokens, ids, length)

    def encode_query(self, tokens: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """Query ids [B, L] -> (vectors [B, query_length, dim], mask [B, query_length]); every position,
        mask tokens included, takes part in MaxSim."""
        tokens, attention = self.query_inputs(tokens)
        mask = jnp.ones(tokens.shape, bool)
        return self._token_vectors(tokens, attention, deterministic), mask

    def encode_document(self, tokens: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """Document ids [..., L] -> (vectors [..., L', dim], mask [..., L']); pads and skip ids masked and
        their vectors zero. L' = L unless markers or `document_length` change it (`document_inputs`)."""
        lead = tokens.shape[:-1]
        flat = self.document_inputs(tokens.reshape(-1, tokens.shape[-1]))
        vectors = self._token_vectors(flat, flat != PAD_ID, deterministic)
        mask = flat != PAD_ID
        for skip in self.config.skip_token_ids:
            mask = mask & (flat != skip)
        vectors = vectors * mask[..., None]
        return vectors.reshape(lead + vectors.shape[1:]), mask.reshape(lead + mask.shape[1:])

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
