"""Retrieval losses over score matrices, so they serve dual-encoder dot products and ColBERT MaxSim alike.

- `contrastive_loss`: in-batch softmax cross-entropy, query->passage over in-batch positives plus
  hard negatives, and optionally passage->query; label smoothing; duplicate positives masked.
- `kl_distillation_loss`: KL(teacher || student) over each query's K passages (Translate-Distill).
- `margin_mse_loss`: MSE between student and teacher margins (positive minus each negative).
Scores come in already multiplied by the logit scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Large finite stand-in for -inf: exp() underflows to exactly 0 and 0 * it stays 0 (no NaN).
_MASKED = -1e9


def duplicate_positive_mask(passage_ids: jax.Array) -> jax.Array:
    """[B] ids -> [B, B] True where row i's in-batch 'negative' j is in fact the same passage."""
    same = passage_ids[:, None] == passage_ids[None, :]
    return same & ~jnp.eye(passage_ids.shape[0], dtype=bool)


def softmax_cross_entropy(scores: jax.Array, label_smoothing: float = 0.0,
                          exclude: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Rows of `scores` [B, C] whose positive is column i for row i -> (mean loss, accuracy).

    `exclude` [B, C] removes candidates from a row's softmax (never the positive). Label smoothing
    spreads `label_smoothing` uniformly over the row's remaining candidates.
    """
    batch, num = scores.shape
    scores = scores.astype(jnp.float32)
    valid = jnp.ones(scores.shape, bool) if exclude is None else ~exclude
    valid = valid | jnp.eye(batch, num, dtype=bool)
    scores = jnp.where(valid, scores, _MASKED)
    log_probs = jax.nn.log_softmax(scores, axis=-1)
    labels = jnp.eye(batch, num, dtype=jnp.float32)
    if label_smoothing:
        spread = valid / jnp.sum(valid, axis=-1, keepdims=True)
        labels = (1.0 - label_smoothing) * labels + label_smoothing * spread
    loss = -jnp.sum(jnp.where(valid, labels * log_probs, 0.0), axis=-1)
    accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == jnp.arange(batch))
    return jnp.mean(loss), accuracy


def contrastive_loss(positive_scores: jax.Array, negative_scores: jax.Array | None = None,
                     negative_valid: jax.Array | None = None, *, bidirectional: bool = True,
                     label_smoothing: float = 0.0, duplicate_mask: jax.Array | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """In-batch softmax loss.

    positive_scores [B, B]: query i against the positive passage of every query j (positive on the diagonal).
    negative_scores [B, M]: every query against all M hard negatives of the batch (shared across the batch).
    negative_valid [M]: False for padded negatives. duplicate_mask [B, B]: see `duplicate_positive_mask`.
    With `bidirectional`, the passage->query loss over the transposed in-batch scores is averaged in.
    Returns (loss, {"loss_q2p", "loss_p2q", "accuracy"}).
    """
    batch = positive_scores.shape[0]
    exclude = jnp.zeros((batch, batch), bool) if duplicate_mask is None else duplicate_mask
    scores = positive_scores
    if negative_scores is not None:
        scores = jnp.concatenate([positive_scores, negative_scores], axis=1)
        invalid = (jnp.zeros(negative_scores.shape[1], bool) if negative_valid is None else ~negative_valid)
        exclude = jnp.concatenate([exclude, jnp.broadcast_to(invalid, negative_scores.shape)], axis=1)
    loss_q2p, accuracy = softmax_cross_entropy(scores, label_smoothing, exclude)
    metrics = {"loss_q2p": loss_q2p, "accuracy": accuracy}
    if not bidirectional:
        return loss_q2p, metrics
    p2q_exclude = None if duplicate_mask is None else duplicate_mask.T
    loss_p2q, _ = softmax_cross_entropy(positive_scores.T, label_smoothing, p2q_exclude)
    metrics["loss_p2q"] = loss_p2q
    return 0.5 * (loss_q2p + loss_p2q), metrics


def kl_distillation_loss(student_scores: jax.Array, teacher_scores: jax.Array, teacher_temperature: float = 1.0,
                         valid: jax.Array | None = None) -> jax.Array:
    """Mean over queries of KL(softmax(teacher / T) || softmax(student)) over K passages [B, K]."""
    student = student_scores.astype(jnp.float32)
    teacher = teacher_scores.astype(jnp.float32) / teacher_temperature
    if valid is not None:
        student = jnp.where(valid, student, _MASKED)
        teacher = jnp.where(valid, teacher, _MASKED)
    log_p_teacher = jax.nn.log_softmax(teacher, axis=-1)
    log_p_student = jax.nn.log_softmax(student, axis=-1)
    p_teacher = jnp.exp(log_p_teacher)
    kl = jnp.sum(jnp.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0), axis=-1)
    return jnp.mean(kl)


def margin_mse_loss(student_scores: jax.Array, teacher_scores: jax.Array) -> jax.Array:
    """[B, K] scores with the positive in column 0: MSE of (s_0 - s_k) against (t_0 - t_k), k >= 1."""
    student_margin = student_scores[:, :1] - student_scores[:, 1:]
    teacher_margin = teacher_scores[:, :1] - teacher_scores[:, 1:]
    return jnp.mean(jnp.square(student_margin.astype(jnp.float32) - teacher_margin.astype(jnp.float32)))
