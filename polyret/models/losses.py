"""Retrieval losses, one class each (as sentence-transformers does), for every RetrievalModel.

A loss is called as `loss(model, params, batch, rng) -> (value, metrics)` and asks the model for
representations (`model.represent`) and scores (`model.score` for every query against every passage,
`model.score_paired` for each query's own K passages), so the same class serves dual encoders (dot
products) and ColBERT (MaxSim). Each loss names the feature converter its batches need.

  ContrastiveLoss      in-batch softmax (+ hard negatives), optionally bidirectional (SWIM-X, retrofitting)
  KLDistillationLoss   KL(teacher || student) over each query's K passages (Multilingual Translate-Distill)
  MarginMSELoss        MSE against teacher margins over K passages (positive first)
  MatryoshkaLoss       any in-batch loss on each truncated, re-normalised prefix of the vectors, summed
  ListwiseLoss         softmax cross-entropy over each query's positive and own hard negatives (rerankers)
  PointwiseBCELoss     binary cross-entropy on positive / negative labels (rerankers)
  CachedLoss           GradCache around any in-batch loss: large batches under a memory cap, same gradients

The distillation, listwise and pointwise losses score each query's own passages through
`model.paired_scores`, so they train cross-encoders too; GradCache does not apply to them (pairs never
meet in-batch: a smaller batch gives the same per-pair gradients).

A new in-batch loss subclasses `InBatchLoss` and implements `from_representations`; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

import gin
import jax
import jax.numpy as jnp

from polyret.tokens import PAD_ID

if TYPE_CHECKING:  # the converters import TensorFlow; encoding, evaluation and planning never need them
    import seqio

# Large finite stand-in for -inf: exp() underflows to exactly 0 and 0 * it stays 0 (no NaN).
_MASKED = -1e9

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


# ------------------------------------------------------------------------------------- trainable parameters

# A frozen base (LoRA on a 7B LLM) is closed over, not differentiated: XLA never builds its gradients, which
# would otherwise take as much memory as the base itself. The zero gradients handed back are constants that
# the optimizer's frozen partition ignores.
def split_trainable(params: Any, trainable: Any) -> tuple[Any, Any]:
    """-> (trainable leaves, fixed leaves): two trees of params' structure, None where the other holds the leaf;
    with `trainable` None, (params, None)."""
    if trainable is None:
        return params, None
    train = jax.tree_util.tree_map(lambda x, t: x if t else None, params, trainable)
    fixed = jax.tree_util.tree_map(lambda x, t: None if t else x, params, trainable)
    return train, fixed


def merge_trainable(train: Any, fixed: Any) -> Any:
    """The inverse of `split_trainable`."""
    if fixed is None:
        return train
    return jax.tree_util.tree_map(lambda a, b: b if a is None else a, train, fixed, is_leaf=lambda x: x is None)


def with_zero_gradients(grads: Any, fixed: Any) -> Any:
    """Gradients of the trainable leaves -> a full tree, zeros for the fixed leaves."""
    if fixed is None:
        return grads
    return jax.tree_util.tree_map(lambda g, f: jnp.zeros_like(f) if g is None else g, grads, fixed,
                                  is_leaf=lambda x: x is None)


# ----------------------------------------------------------------------------------------- score-level math

def duplicate_positive_mask(passage_ids: jax.Array) -> jax.Array:
    """[B] ids -> [B, B] True where row i's in-batch 'negative' j is in fact the same passage."""
    same = passage_ids[:, None] == passage_ids[None, :]
    return same & ~jnp.eye(passage_ids.shape[0], dtype=bool)


def token_hash(tokens: jax.Array) -> jax.Array:
    """Cheap fingerprint of each token row [..., L] -> [...] (equal rows, equal hashes)."""
    weights = (jnp.arange(tokens.shape[-1], dtype=jnp.uint32) * jnp.uint32(2654435761)) | jnp.uint32(1)
    return jnp.sum(tokens.astype(jnp.uint32) * weights, axis=-1, dtype=jnp.uint32)


def softmax_cross_entropy(scores: jax.Array, label_smoothing: float = 0.0,
                          exclude: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Rows of `scores` [B, C] whose positive is column i for row i -> (mean loss, accuracy).

    `exclude` [B, C] removes candidates from a row's softmax (never the positive). Label smoothing
    spreads `label_smoothing` uniformly over the row's remaining candidates. Computed in float32.
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
                     bidirectional_reduction: str = "mean", label_smoothing: float = 0.0,
                     duplicate_mask: jax.Array | None = None,
                     negative_mask: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    """In-batch softmax loss over scores already multiplied by the logit scale.

    positive_scores [B, B]: query i against the positive passage of every query j (positive on the diagonal).
    negative_scores [B, M]: every query against all M hard negatives of the batch (shared across the batch).
    negative_valid [M]: False for padded negatives. duplicate_mask [B, B]: see `duplicate_positive_mask`.
    negative_mask [B, M]: True where hard negative m is no negative for query i (a translation of its positive).
    With `bidirectional`, the passage->query loss over the transposed in-batch scores is added: averaged
    with the query->passage loss ('mean', polyret's default: the loss stays on the one-direction scale) or
    summed ('sum', as t5x_retrieval does; the gradient is twice as large, which Adafactor's update
    clipping and relative step mostly absorb).
    """
    batch = positive_scores.shape[0]
    exclude = jnp.zeros((batch, batch), bool) if duplicate_mask is None else duplicate_mask
    scores = positive_scores
    if negative_scores is not None:
        scores = jnp.concatenate([positive_scores, negative_scores], axis=1)
        invalid = (jnp.zeros(negative_scores.shape[1], bool) if negative_valid is None else ~negative_valid)
        invalid = jnp.broadcast_to(invalid, negative_scores.shape)
        if negative_mask is not None:
            invalid = invalid | negative_mask
        exclude = jnp.concatenate([exclude, invalid], axis=1)
    loss_q2p, accuracy = softmax_cross_entropy(scores, label_smoothing, exclude)
    metrics = {"loss_q2p": loss_q2p, "accuracy": accuracy}
    if not bidirectional:
        return loss_q2p, metrics
    p2q_exclude = None if duplicate_mask is None else duplicate_mask.T
    loss_p2q, _ = softmax_cross_entropy(positive_scores.T, label_smoothing, p2q_exclude)
    metrics["loss_p2q"] = loss_p2q
    total = loss_q2p + loss_p2q
    return (0.5 * total if bidirectional_reduction == "mean" else total), metrics


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


def language_divergence(student_scores: jax.Array, query_hash: jax.Array) -> jax.Array:
    """PLAID-X's round-robin language regulariser (colbert/training/training.py, on unless `nolangreg`).

    Rows with the same query (`query_hash` [B]) are language copies of one query over the same K passages.
    For every two copies a and b of a query: 0.5 KL(p_a || p_b) + 0.5 KL(p_b || p_a) between their softmax
    over the K student scores [B, K]. Summed, then divided as PLAID-X divides its per-language-pair
    `KLDivLoss(reduction='batchmean')` over b*K log-probabilities averaged over the n(n+1)/2 language pairs
    (diagonal included): by n(n+1)/2 * b * K, with n copies per query and b queries. 0 without copies.
    """
    log_p = jax.nn.log_softmax(student_scores.astype(jnp.float32), axis=-1)
    p = jnp.exp(log_p)
    # KL(p_i || p_j) = sum_k p_i log p_i - sum_k p_i log p_j, for every pair of rows at once.
    kl = jnp.sum(p * log_p, axis=-1)[:, None] - p @ log_p.T
    rows = student_scores.shape[0]
    same = query_hash[:, None] == query_hash[None, :]
    pairs = same & (jnp.arange(rows)[:, None] < jnp.arange(rows)[None, :])
    total = jnp.sum(jnp.where(pairs, 0.5 * (kl + kl.T), 0.0))
    copies = jnp.sum(same) / rows  # n: every row has n rows of its query, itself included
    return total / (copies * (copies + 1) / 2 * (rows / copies) * student_scores.shape[1])


def margin_mse_loss(student_scores: jax.Array, teacher_scores: jax.Array) -> jax.Array:
    """[B, K] scores with the positive in column 0: MSE of (s_0 - s_k) against (t_0 - t_k), k >= 1."""
    student_margin = student_scores[:, :1] - student_scores[:, 1:]
    teacher_margin = teacher_scores[:, :1] - teacher_scores[:, 1:]
    return jnp.mean(jnp.square(student_margin.astype(jnp.float32) - teacher_margin.astype(jnp.float32)))


# ------------------------------------------------------------------------------------------ loss classes

class Loss:
    """Base class. Subclasses set FEATURE_CONVERTER (a class name in polyret.seqio_tasks.feature_converters)
    and implement `__call__`."""

    FEATURE_CONVERTER: ClassVar[str] = "DualEncoderFeatureConverter"

    def __call__(self, model: Any, params: Any, batch: Batch, rng: jax.Array | None,
                 deterministic: bool = False) -> tuple[jax.Array, Metrics]:
        raise NotImplementedError

    def converter_class(self, task_features: Iterable[str]) -> type[seqio.FeatureConverter]:
        """The converter class for data with these task features: hard negatives ride along when the data
        has them (`polyret plan` asks this without any data)."""
        # Imported here: the converters need TensorFlow (seqio), which only data reading needs.
        from polyret.seqio_tasks import feature_converters as fc
        name = self.FEATURE_CONVERTER
        if name == "DualEncoderFeatureConverter" and "negative_targets" in task_features:
            name = "HardNegativeFeatureConverter"
        return getattr(fc, name)

    def feature_converter(self, task: seqio.Task | seqio.Mixture) -> seqio.FeatureConverter:
        """The converter for batches of `task` (its vocabulary's end id is appended to every sequence)."""
        converter = self.converter_class(task.output_features)
        return converter(eos_id=task.output_features["inputs"].vocabulary.eos_id)

    def value_and_grad(self, model: Any, params: Any, batch: Batch, rng: jax.Array | None, trainable: Any = None
                       ) -> tuple[tuple[jax.Array, Metrics], Any]:
        """((loss, metrics), grads w.r.t. params); CachedLoss overrides this. `trainable` (a bool tree, LoRA's):
        only those parameters are differentiated, the others get zero gradients (see `split_trainable`)."""
        train, fixed = split_trainable(params, trainable)
        loss_of = lambda t: self(model, merge_trainable(t, fixed), batch, rng)  # noqa: E731
        out, grads = jax.value_and_grad(loss_of, has_aux=True)(train)
        return out, with_zero_gradients(grads, fixed)


class InBatchLoss(Loss):
    """A loss over the representations of the whole batch: queries, positives, optional hard negatives.

    Subclasses implement `from_representations`; CachedLoss (GradCache) wraps any of them, because the
    representations are the only place the batch meets itself.
    """

    def representations(self, model: Any, params: Any, batch: Batch, rng: jax.Array | None,
                        deterministic: bool = False) -> dict[str, Any]:
        return {side: model.represent(params, batch[feature], SIDES[side], rng_for(rng, side), deterministic)
                for side, feature in FEATURES.items() if feature in batch}

    def from_representations(self, model: Any, params: Any, reps: dict[str, Any], batch: Batch
                             ) -> tuple[jax.Array, Metrics]:
        raise NotImplementedError

    def __call__(self, model, params, batch, rng, deterministic=False):
        return self.from_representations(model, params, self.representations(model, params, batch, rng,
                                                                              deterministic), batch)


# Batch features per representation, and which tower encodes them.
FEATURES = {"queries": "left_encoder_input_tokens", "passages": "right_encoder_input_tokens",
            "negatives": "right_negative_encoder_input_tokens"}
SIDES = {"queries": "query", "passages": "document", "negatives": "document"}


def rng_for(rng: jax.Array | None, side: str) -> jax.Array | None:
    """A separate dropout key per representation, the same whether or not GradCache is used."""
    return None if rng is None else jax.random.fold_in(rng, list(FEATURES).index(side))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ContrastiveLoss(InBatchLoss):
    """In-batch softmax: every query against every positive in the (global) batch plus all hard negatives."""

    bidirectional: bool = True
    bidirectional_reduction: str = "mean"  # 'mean' or 'sum' (t5x_retrieval)
    label_smoothing: float = 0.0
    mask_duplicate_positives: bool = True
    # Rows that ask the same query are each other's positives, never negatives: in a collection of translations
    # the same question asked of the German and the French copy of a section (adapt's training data).
    mask_duplicate_queries: bool = False
    # Passages that translate one another (one `group`, where the data carries `passage_group` /
    # `negative_groups`) are never each other's in-batch or hard negatives.
    mask_passage_groups: bool = True
    score_scale: float = 1.0  # on top of the model's own logit scale

    def __post_init__(self):
        if self.bidirectional_reduction not in ("mean", "sum"):
            raise ValueError(f"ContrastiveLoss.bidirectional_reduction must be 'mean' or 'sum', "
                             f"got {self.bidirectional_reduction!r}")

    def from_representations(self, model, params, reps, batch):
        scale = self.score_scale * model.logit_scale(params)
        positive = scale * model.score(reps["queries"], reps["passages"])
        negative = negative_valid = None
        if "negatives" in reps:
            negatives = batch[FEATURES["negatives"]]
            negative = scale * model.score(reps["queries"], flatten_negatives(reps["negatives"]))
            negative_valid = jnp.any(negatives != PAD_ID, axis=-1).reshape(-1)
        masks = [duplicate_positive_mask(token_hash(batch[FEATURES[side]]))
                 for side, on in (("passages", self.mask_duplicate_positives), ("queries", self.mask_duplicate_queries))
                 if on]
        negative_mask = None
        if self.mask_passage_groups and "passage_group" in batch:
            groups = batch["passage_group"]
            masks.append(duplicate_positive_mask(groups))
            if negative is not None and "negative_groups" in batch:
                negative_mask = groups[:, None] == batch["negative_groups"].reshape(-1)[None, :]
        duplicates = functools.reduce(jnp.logical_or, masks) if masks else None
        return contrastive_loss(positive, negative, negative_valid, bidirectional=self.bidirectional,
                                bidirectional_reduction=self.bidirectional_reduction,
                                label_smoothing=self.label_smoothing, duplicate_mask=duplicates,
                                negative_mask=negative_mask)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MatryoshkaLoss(InBatchLoss):
    """Matryoshka representation learning (sentence-transformers' MatryoshkaLoss): the wrapped in-batch loss
    on each prefix of the vectors, cut to `dims` and L2-normalised again, weighted by `weights` and summed,
    so the first 256, 128, 64 ... dimensions are each a usable embedding (`--truncate_dim` at search time).
    Wraps any InBatchLoss; CachedLoss wraps it in turn (`CachedLoss.loss = @MatryoshkaLoss()`)."""

    loss: InBatchLoss = ContrastiveLoss()
    dims: tuple[int, ...] = (768, 512, 256, 128, 64)
    weights: tuple[float, ...] | None = None  # None: 1 for every dimension

    def __post_init__(self):
        if not isinstance(self.loss, InBatchLoss):
            raise ValueError(f"MatryoshkaLoss wraps an in-batch loss, not {type(self.loss).__name__}")
        if self.weights is not None and len(self.weights) != len(self.dims):
            raise ValueError(f"MatryoshkaLoss: {len(self.weights)} weights for {len(self.dims)} dims")

    @property
    def FEATURE_CONVERTER(self):  # noqa: N802  (the wrapped loss's data)
        return self.loss.FEATURE_CONVERTER

    def from_representations(self, model, params, reps, batch):
        width = reps["queries"].vectors.shape[-1]
        if max(self.dims) > width:
            raise ValueError(f"MatryoshkaLoss.dims {max(self.dims)} exceed the model's {width} dimensions")
        normalize = getattr(model.config, "l2_norm", True)  # a dot-product model's prefixes stay as they are
        total, metrics = 0.0, {}
        for dim, weight in zip(self.dims, self.weights or [1.0] * len(self.dims)):
            cut = {side: rep._replace(vectors=truncate(rep.vectors, dim, normalize)) for side, rep in reps.items()}
            value, inner = self.loss.from_representations(model, params, cut, batch)
            total = total + weight * value
            metrics[f"loss@{dim}"] = value
            if dim == max(self.dims):
                metrics.update(inner)
        return total, metrics


def truncate(vectors: jax.Array, dim: int, normalize: bool = True) -> jax.Array:
    """The first `dim` dimensions, L2-normalised again unless `normalize` is False (a Matryoshka prefix)."""
    cut = vectors[..., :dim].astype(jnp.float32)
    if not normalize:
        return cut
    return cut * jax.lax.rsqrt(jnp.maximum(jnp.sum(cut * cut, axis=-1, keepdims=True), 1e-12))


def flatten_negatives(reps: Any) -> Any:
    """[B, N, ...] representations -> [B * N, ...] (every leaf)."""
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), reps)


class _DistillationLoss(Loss):
    """Student scores of each query's own K passages against the teacher's scores."""

    FEATURE_CONVERTER = "DistillationFeatureConverter"
    score_scale: float

    def student_scores(self, model, params, batch, rng, deterministic) -> jax.Array:
        return self.score_scale * model.paired_scores(params, batch[FEATURES["queries"]], batch[FEATURES["passages"]],
                                                      rng_for(rng, "queries"), rng_for(rng, "passages"),
                                                      deterministic)

    def distill(self, student: jax.Array, teacher: jax.Array) -> jax.Array:
        raise NotImplementedError

    def regularizers(self, student: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """Extra terms added to the distillation loss, by metric name (none by default)."""
        return {}

    def __call__(self, model, params, batch, rng, deterministic=False):
        student = self.student_scores(model, params, batch, rng, deterministic)
        teacher = batch["teacher_scores"]
        metrics = {"accuracy": jnp.mean(jnp.argmax(student, -1) == jnp.argmax(teacher, -1))}
        loss = self.distill(student, teacher)
        for name, term in self.regularizers(student, batch).items():
            loss, metrics[name] = loss + term, term
        return loss, metrics


@gin.configurable
@dataclasses.dataclass(frozen=True)
class KLDistillationLoss(_DistillationLoss):
    """KL(softmax(teacher / T) || softmax(student)) over each query's K passages (Translate-Distill)."""

    teacher_temperature: float = 1.0
    score_scale: float = 1.0
    # PLAID-X's round-robin language regulariser (`language_divergence`), added with weight 1 as PLAID-X adds it.
    language_regularizer: bool = False

    def distill(self, student, teacher):
        return kl_distillation_loss(student, teacher, self.teacher_temperature)

    def regularizers(self, student, batch):
        if not self.language_regularizer:
            return {}
        return {"language_divergence": language_divergence(student, token_hash(batch[FEATURES["queries"]]))}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MarginMSELoss(_DistillationLoss):
    """MSE between student and teacher margins (passage 0 is the positive)."""

    score_scale: float = 1.0

    def distill(self, student, teacher):
        return margin_mse_loss(student, teacher)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TranslateTrainLoss(_DistillationLoss):
    """Multilingual Translate-Train (MTT, the baseline of MTD): cross-entropy over each query's K translated
    passages with the best-scored passage as the positive and the other K-1 as negatives (PLAID-X's
    translate-train n-way cross-entropy; no in-batch negatives). On a task registered with `qrels` the scores
    are the judgements, so the positive is the judged one, as PLAID-X trains MTT on MS MARCO's triples; on a
    Translate-Distill task it is the teacher's best passage of the draw."""

    score_scale: float = 1.0

    def distill(self, student, teacher):
        labels = jnp.argmax(jnp.where(jnp.isfinite(teacher), teacher, -jnp.inf), axis=-1)
        log_p = jax.nn.log_softmax(student.astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


class _OwnPassagesLoss(Loss):
    """Each query's positive and its hard negatives, scored together ([B, 1 + N], positive first, padded
    negatives masked): no in-batch negatives, so it serves cross-encoders as well as dual encoders."""

    FEATURE_CONVERTER = "HardNegativeFeatureConverter"

    def scores(self, model, params, batch, rng, deterministic) -> tuple[jax.Array, jax.Array]:
        positives, negatives = batch[FEATURES["passages"]][:, None], batch[FEATURES["negatives"]]
        width = max(positives.shape[-1], negatives.shape[-1])  # length buckets cut each feature on its own
        pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1])))  # noqa: E731
        passages = jnp.concatenate([pad(positives), pad(negatives)], axis=1)
        scores = model.paired_scores(params, batch[FEATURES["queries"]], passages, rng_for(rng, "queries"),
                                     rng_for(rng, "passages"), deterministic)
        return scores.astype(jnp.float32), jnp.any(passages != PAD_ID, axis=-1)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ListwiseLoss(_OwnPassagesLoss):
    """Softmax cross-entropy of the positive against the query's own hard negatives (sentence-transformers'
    CrossEntropyLoss for rerankers; Tevatron's and FlagEmbedding's reranker loss)."""

    def __call__(self, model, params, batch, rng, deterministic=False):
        scores, valid = self.scores(model, params, batch, rng, deterministic)
        log_p = jax.nn.log_softmax(jnp.where(valid, scores, _MASKED), axis=-1)
        accuracy = jnp.mean(jnp.argmax(jnp.where(valid, scores, _MASKED), axis=-1) == 0)
        return -jnp.mean(log_p[:, 0]), {"accuracy": accuracy}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PointwiseBCELoss(_OwnPassagesLoss):
    """Binary cross-entropy on labels: the positive 1, each hard negative 0, every real pair counted once
    (sentence-transformers' BinaryCrossEntropyLoss; monoT5's true/false training). `pos_weight` weighs the
    positives (sentence-transformers' `pos_weight`)."""

    pos_weight: float = 1.0

    def __call__(self, model, params, batch, rng, deterministic=False):
        scores, valid = self.scores(model, params, batch, rng, deterministic)
        labels = jnp.zeros_like(scores).at[:, 0].set(1.0)
        weights = jnp.where(valid, jnp.where(labels > 0, self.pos_weight, 1.0), 0.0)
        per_pair = labels * jax.nn.softplus(-scores) + (1.0 - labels) * jax.nn.softplus(scores)
        accuracy = jnp.sum(jnp.where(valid, (scores > 0) == (labels > 0), False)) / jnp.sum(valid)
        return jnp.sum(weights * per_pair) / jnp.sum(weights), {"accuracy": accuracy}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CachedLoss(Loss):
    """GradCache around an in-batch loss: the same loss and gradients with activations held for one chunk.

    1. represent the whole batch chunk by chunk without keeping activations;
    2. take the loss gradient with respect to the representations (the only step that sees the batch);
    3. re-encode chunk by chunk and pull those gradients back into the parameters (a VJP per chunk).
    The batch is never split before the loss: all B queries still see all B passages and negatives.
    Without dropout the loss and gradients equal the wrapped loss's; with dropout every chunk draws its own
    mask (the same in passes 1 and 3), so they match it in distribution.
    """

    loss: InBatchLoss = ContrastiveLoss()
    num_chunks: int = 2

    def __post_init__(self):
        if not isinstance(self.loss, InBatchLoss):
            raise ValueError(f"CachedLoss wraps an in-batch loss; {type(self.loss).__name__} has no in-batch "
                             "representations to cache")

    @property
    def FEATURE_CONVERTER(self):  # noqa: N802  (mirrors the wrapped loss)
        return self.loss.FEATURE_CONVERTER

    def feature_converter(self, task):
        return self.loss.feature_converter(task)

    def __call__(self, model, params, batch, rng, deterministic=False):
        return self.loss(model, params, batch, rng, deterministic)

    def _chunks(self, x: jax.Array) -> jax.Array:
        if x.shape[0] % self.num_chunks:
            raise ValueError(f"CachedLoss: batch {x.shape[0]} is not divisible into {self.num_chunks} chunks")
        return x.reshape((self.num_chunks, x.shape[0] // self.num_chunks) + x.shape[1:])

    def value_and_grad(self, model, params, batch, rng, trainable=None):
        sides = {side: self._chunks(batch[feature]) for side, feature in FEATURES.items() if feature in batch}
        train, fixed = split_trainable(params, trainable)

        def chunk_keys(side: str) -> jax.Array | None:
            if rng is None:
                return None
            return jax.vmap(lambda i: jax.random.fold_in(rng_for(rng, side), i))(jnp.arange(self.num_chunks))

        def represent(p, side, tokens, key):
            return model.represent(p, tokens, SIDES[side], key, False)

        def unchunk(tree):
            return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)

        reps = {}
        frozen = jax.lax.stop_gradient(params)
        for side, chunks in sides.items():
            keys = chunk_keys(side)
            if keys is None:
                out = jax.lax.map(lambda t, side=side: represent(frozen, side, t, None), chunks)
            else:
                out = jax.lax.map(lambda xs, side=side: represent(frozen, side, xs[0], xs[1]), (chunks, keys))
            reps[side] = unchunk(out)

        # Gradients with respect to the float vectors only; masks come from the tokens.
        def loss_of(vectors, p):
            full = {side: reps[side]._replace(vectors=vectors[side]) for side in reps}
            return self.loss.from_representations(model, p, full, batch)

        vectors = {side: rep.vectors for side, rep in reps.items()}
        (value, metrics), (vector_grads, direct_grads) = jax.value_and_grad(
            lambda v, t: loss_of(v, merge_trainable(t, fixed)), argnums=(0, 1), has_aux=True)(vectors, train)

        grads = direct_grads  # parameters the loss reads directly (a learnable logit scale)
        for side, chunks in sides.items():
            keys = chunk_keys(side)
            cotangents = self._chunks(vector_grads[side])

            def body(acc, xs, side=side):
                tokens, cot, key = xs
                _, vjp = jax.vjp(lambda t: represent(merge_trainable(t, fixed), side, tokens, key).vectors, train)
                return jax.tree_util.tree_map(jnp.add, acc, vjp(cot)[0]), None

            if keys is None:
                grads, _ = jax.lax.scan(lambda acc, xs, body=body: body(acc, (xs[0], xs[1], None)), grads,
                                        (chunks, cotangents))
            else:
                grads, _ = jax.lax.scan(body, grads, (chunks, cotangents, keys))
        return (value, metrics), with_zero_gradients(grads, fixed)
