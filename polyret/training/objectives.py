"""Training objectives over a batch of model features, for dual-encoder and ColBERT towers.

  contrastive      in-batch softmax (+ hard negatives), optionally bidirectional (SWIM-X, retrofitting)
  kl_distillation  KL(teacher || student) over each query's K passages (Multilingual Translate-Distill)
  margin_mse       MarginMSE against teacher margins over K passages (positive first)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp

from polyret.models import losses
from polyret.models.towers import ColBERT, DualEncoder, dot_scores, maxsim_paired, maxsim_scores

KINDS = ("contrastive", "kl_distillation", "margin_mse")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Objective:
    kind: str = "contrastive"
    bidirectional: bool = True
    label_smoothing: float = 0.0
    mask_duplicate_positives: bool = True
    teacher_temperature: float = 1.0
    colbert_score_scale: float = 1.0  # MaxSim scores are used as logits times this

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Objective.kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def distillation(self) -> bool:
        return self.kind != "contrastive"


def token_hash(tokens: jax.Array) -> jax.Array:
    """Cheap fingerprint of each token row [..., L] -> [...] (equal rows, equal hashes)."""
    weights = (jnp.arange(tokens.shape[-1], dtype=jnp.uint32) * jnp.uint32(2654435761)) | jnp.uint32(1)
    return jnp.sum(tokens.astype(jnp.uint32) * weights, axis=-1, dtype=jnp.uint32)


def contrastive_from_embeddings(queries: jax.Array, passages: jax.Array, negatives: jax.Array | None,
                                negative_valid: jax.Array | None, passage_hash: jax.Array | None,
                                logit_scale: jax.Array, objective: Objective) -> tuple[jax.Array, dict]:
    """Dual-encoder in-batch loss from embeddings [B, D], [B, D], [B, N, D] (used by GradCache too)."""
    positive = logit_scale * dot_scores(queries, passages)
    negative = None
    if negatives is not None:
        negative = logit_scale * dot_scores(queries, negatives.reshape(-1, negatives.shape[-1]))
    duplicates = (losses.duplicate_positive_mask(passage_hash)
                  if objective.mask_duplicate_positives and passage_hash is not None else None)
    return losses.contrastive_loss(positive, negative, negative_valid, bidirectional=objective.bidirectional,
                                   label_smoothing=objective.label_smoothing, duplicate_mask=duplicates)


def _distillation_loss(student: jax.Array, teacher: jax.Array, objective: Objective) -> tuple[jax.Array, dict]:
    if objective.kind == "kl_distillation":
        loss = losses.kl_distillation_loss(student, teacher, objective.teacher_temperature)
    else:
        loss = losses.margin_mse_loss(student, teacher)
    agree = jnp.mean(jnp.argmax(student, -1) == jnp.argmax(teacher, -1))
    return loss, {"accuracy": agree}


def compute_loss(model: Any, params: Any, batch: dict[str, jax.Array], objective: Objective,
                 rng: jax.Array | None, deterministic: bool = False) -> tuple[jax.Array, dict]:
    """Loss and metrics for one batch of model features."""
    left = batch["left_encoder_input_tokens"]
    right = batch["right_encoder_input_tokens"]
    negatives = batch.get("right_negative_encoder_input_tokens")
    rngs = {"dropout": rng} if rng is not None else {}
    out = model.apply({"params": params}, left, right, negatives, deterministic=deterministic, rngs=rngs)
    colbert = isinstance(model, ColBERT)
    if objective.distillation:
        if colbert:
            student = objective.colbert_score_scale * maxsim_paired(out["left"], out["left_mask"], out["right"],
                                                                    out["right_mask"])
        else:
            student = out["logit_scale"] * jnp.einsum("bd,bkd->bk", out["left"], out["right"])
        return _distillation_loss(student, batch["teacher_scores"], objective)
    negative_valid = None if negatives is None else jnp.any(negatives != 0, axis=-1).reshape(-1)
    passage_hash = token_hash(right)
    if not colbert:
        return contrastive_from_embeddings(out["left"], out["right"], out.get("right_negative"), negative_valid,
                                           passage_hash, out["logit_scale"], objective)
    scale = objective.colbert_score_scale
    positive = scale * maxsim_scores(out["left"], out["left_mask"], out["right"], out["right_mask"])
    negative = None
    if negatives is not None:
        d = out["right_negative"]
        negative = scale * maxsim_scores(out["left"], out["left_mask"], d.reshape((-1,) + d.shape[2:]),
                                         out["right_negative_mask"].reshape(-1, d.shape[2]))
    duplicates = losses.duplicate_positive_mask(passage_hash) if objective.mask_duplicate_positives else None
    return losses.contrastive_loss(positive, negative, negative_valid, bidirectional=objective.bidirectional,
                                   label_smoothing=objective.label_smoothing, duplicate_mask=duplicates)


def encode(model: DualEncoder, params: Any, tokens: jax.Array, side: str, rng: jax.Array | None,
           deterministic: bool) -> jax.Array:
    rngs = {"dropout": rng} if rng is not None else {}
    return model.apply({"params": params}, tokens, side, deterministic, rngs=rngs, method=DualEncoder.encode)
