"""GradCache (CachedLoss) gives the plain loss's gradients with a fraction of its activation memory, for any
in-batch loss; and a new in-batch loss is one class, with no change to the trainer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from polyret.models.losses import CachedLoss, ContrastiveLoss, InBatchLoss
from polyret.models.retrieval_model import build_model
from polyret.models.t5 import T5Config
from polyret.models.towers import ColBERTConfig, DualEncoderConfig
from polyret.training.trainer import make_train_step

ENCODER = T5Config(vocab_size=256, d_model=64, num_heads=4, d_kv=16, d_ff=128, num_layers=2, dropout_rate=0.1)
CFG = DualEncoderConfig(encoder=ENCODER, projection_dim=32, learnable_logit_scale=True, logit_scale=10.0)


def _batch(b=64, length=48, negatives=2):
    rng = np.random.default_rng(0)
    tokens = lambda *shape: jnp.asarray(rng.integers(3, 256, size=shape), jnp.int32)
    batch = {"left_encoder_input_tokens": tokens(b, length), "right_encoder_input_tokens": tokens(b, length),
             "right_negative_encoder_input_tokens": tokens(b, negatives, length)}
    batch["right_encoder_input_tokens"] = batch["right_encoder_input_tokens"].at[5].set(
        batch["right_encoder_input_tokens"][3])  # a duplicate positive, masked in both paths
    return batch


def _assert_same(value_and_grads, reference, rtol=1e-4):
    (loss, _), grads = value_and_grads
    (ref_loss, _), ref_grads = reference
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6)  # float32 sums in another order


def test_cached_loss_equals_plain_gradients():
    loss = ContrastiveLoss(label_smoothing=0.05)
    plain, cached = build_model(CFG, loss), build_model(CFG, CachedLoss(loss, num_chunks=8))
    params, _ = plain.init(jax.random.PRNGKey(0))
    batch = _batch(b=32)
    _assert_same(jax.jit(cached.value_and_grad)(params, batch, None), jax.jit(plain.value_and_grad)(params, batch, None))


def test_cached_loss_wraps_colbert_too():
    cfg = ColBERTConfig(encoder=dataclasses.replace(ENCODER, dropout_rate=0.0), projection_dim=16, query_length=16,
                        query_mask_token_id=3)
    plain = build_model(cfg, ContrastiveLoss())
    cached = build_model(cfg, CachedLoss(ContrastiveLoss(), num_chunks=4))
    params, _ = plain.init(jax.random.PRNGKey(0))
    batch = _batch(b=16, length=24)
    _assert_same(jax.jit(cached.value_and_grad)(params, batch, None), jax.jit(plain.value_and_grad)(params, batch, None))


@dataclasses.dataclass(frozen=True)
class SymmetricHingeLoss(InBatchLoss):
    """A new in-batch loss defined in a test: mean hinge between each positive and the best in-batch negative."""

    margin: float = 0.2

    def from_representations(self, model, params, reps, batch):
        scores = model.score(reps["queries"], reps["passages"])
        positive = jnp.diag(scores)
        negative = jnp.max(jnp.where(jnp.eye(len(scores), dtype=bool), -jnp.inf, scores), axis=1)
        return jnp.mean(jax.nn.relu(self.margin - positive + negative)), {}


def test_a_new_in_batch_loss_is_one_class_and_trains_through_the_trainer_step():
    batch = {k: v for k, v in _batch(b=8, length=16).items() if k != "right_negative_encoder_input_tokens"}
    model = build_model(dataclasses.replace(CFG, learnable_logit_scale=False), SymmetricHingeLoss())
    params, _ = model.init(jax.random.PRNGKey(0))
    # Closed form from the representations, computed here with numpy.
    q = np.asarray(model.encode_queries(params, batch["left_encoder_input_tokens"]).vectors)
    p = np.asarray(model.encode_documents(params, batch["right_encoder_input_tokens"]).vectors)
    s = q @ p.T
    expected = np.mean(np.maximum(0, 0.2 - np.diag(s) + np.where(np.eye(8, dtype=bool), -np.inf, s).max(1)))
    np.testing.assert_allclose(model.loss_value(params, batch, None, True)[0], expected, rtol=1e-5)
    tx = optax.sgd(0.1)
    step = jax.jit(make_train_step(model, tx, optax.constant_schedule(0.1), (), jax.random.PRNGKey(0)))
    _, _, metrics = step(params, tx.init(params), batch, jnp.int32(0))
    np.testing.assert_allclose(metrics["loss"], model.loss_value(params, batch, jax.random.fold_in(
        jax.random.PRNGKey(0), 0))[0], rtol=1e-5)
    _assert_same(jax.jit(build_model(model.config, CachedLoss(SymmetricHingeLoss(), 4)).value_and_grad)(
        params, batch, None), jax.jit(model.value_and_grad)(params, batch, None))


def test_cached_loss_peak_memory_is_a_quarter_or_less():
    plain = build_model(CFG)
    cached = build_model(CFG, CachedLoss(ContrastiveLoss(), num_chunks=16))
    params, _ = plain.init(jax.random.PRNGKey(0))
    batch = _batch(b=256, length=64)
    memory = lambda m: jax.jit(m.value_and_grad).lower(params, batch, None).compile().memory_analysis(
        ).temp_size_in_bytes
    plain_mem, cached_mem = memory(plain), memory(cached)
    print(f"temp memory: plain {plain_mem / 2**20:.1f} MiB, CachedLoss(16 chunks) {cached_mem / 2**20:.1f} MiB, "
          f"ratio {cached_mem / plain_mem:.3f}")
    assert cached_mem <= 0.25 * plain_mem


def test_only_the_trainable_parameters_are_differentiated():
    """With a trainable mask (a LoRA run's), the plain and the cached loss give the full gradient on the trainable
    leaves and zeros on the frozen ones: the same values as differentiating everything, then masking."""
    from flax import traverse_util
    loss = ContrastiveLoss()
    plain, cached = build_model(CFG, loss), build_model(CFG, CachedLoss(loss, num_chunks=4))
    params, _ = plain.init(jax.random.PRNGKey(0))
    flat = traverse_util.flatten_dict(params)
    trainable = traverse_util.unflatten_dict({k: "projection_layer" in k or "logit_scale" in k for k in flat})
    batch = _batch(b=16, length=24)
    (ref_loss, _), ref = jax.jit(plain.value_and_grad)(params, batch, None)
    masked = jax.tree_util.tree_map(lambda g, t: g if t else jnp.zeros_like(g), ref, trainable)
    for model in (plain, cached):
        out = jax.jit(lambda p, b, model=model: model.value_and_grad(p, b, None, trainable))(params, batch)
        _assert_same(out, ((ref_loss, {}), masked))
