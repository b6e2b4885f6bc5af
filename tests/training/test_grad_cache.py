"""GradCache gives the plain step's gradients with a fraction of its activation memory."""

import jax
import jax.numpy as jnp
import numpy as np

from polyret.models.t5 import T5Config
from polyret.models.towers import DualEncoder, DualEncoderConfig, init_params
from polyret.training.grad_cache import grad_cache_loss_and_grads
from polyret.training.objectives import Objective, compute_loss

CFG = DualEncoderConfig(encoder=T5Config(vocab_size=256, d_model=64, num_heads=4, d_kv=16, d_ff=128, num_layers=2,
                                         dropout_rate=0.1), projection_dim=32, learnable_logit_scale=True,
                        logit_scale=10.0)


def _batch(b=64, length=48, negatives=2):
    rng = np.random.default_rng(0)
    tokens = lambda *shape: jnp.asarray(rng.integers(3, 256, size=shape), jnp.int32)
    batch = {"left_encoder_input_tokens": tokens(b, length), "right_encoder_input_tokens": tokens(b, length),
             "right_negative_encoder_input_tokens": tokens(b, negatives, length)}
    batch["right_encoder_input_tokens"] = batch["right_encoder_input_tokens"].at[5].set(
        batch["right_encoder_input_tokens"][3])  # a duplicate positive, masked in both paths
    return batch


def test_grad_cache_equals_plain_gradients():
    model = DualEncoder(CFG)
    params, _ = init_params(CFG, jax.random.PRNGKey(0))
    batch = _batch()
    objective = Objective(label_smoothing=0.05)
    plain = jax.jit(jax.value_and_grad(lambda p: compute_loss(model, p, batch, objective, None, True), has_aux=True))
    (loss, _), grads = plain(params)
    (loss_gc, _), grads_gc = jax.jit(
        lambda p: grad_cache_loss_and_grads(model, p, batch, objective, 8, None, True))(params)
    np.testing.assert_allclose(loss_gc, loss, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads_gc), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # float32 sums in another order


def test_grad_cache_peak_memory_is_a_quarter_or_less():
    model = DualEncoder(CFG)
    params, _ = init_params(CFG, jax.random.PRNGKey(0))
    batch = _batch(b=256, length=64)
    objective = Objective()
    plain = jax.jit(jax.value_and_grad(lambda p, x: compute_loss(model, p, x, objective, None, True), has_aux=True))
    cached = jax.jit(lambda p, x: grad_cache_loss_and_grads(model, p, x, objective, 16, None, True))
    plain_mem = plain.lower(params, batch).compile().memory_analysis().temp_size_in_bytes
    cached_mem = cached.lower(params, batch).compile().memory_analysis().temp_size_in_bytes
    print(f"temp memory: plain {plain_mem / 2**20:.1f} MiB, GradCache(16 chunks) {cached_mem / 2**20:.1f} MiB, "
          f"ratio {cached_mem / plain_mem:.3f}")
    assert cached_mem <= 0.25 * plain_mem
