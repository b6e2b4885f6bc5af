"""polyret's Dropout (two 16-bit draws per random word) against what inverted dropout must be: the keep rate
within binomial noise of 1 - rate, the two halves of a word independent, kept values scaled so the expectation is
the input's, and the identity when deterministic."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyret.models.dropout import Dropout, keep_mask

N = 1 << 20


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_is_one_minus_rate_within_binomial_noise(rate):
    mask, keep_prob = keep_mask(jax.random.key(0), (N // 512, 512), 1.0 - rate)
    assert abs(keep_prob - (1.0 - rate)) < 1e-5
    sd = np.sqrt(keep_prob * (1 - keep_prob) / N)
    assert abs(float(np.asarray(mask).mean()) - keep_prob) < 5 * sd


def test_the_two_halves_of_a_word_are_independent():
    mask = np.asarray(keep_mask(jax.random.key(1), (N,), 0.5)[0], dtype=np.float64)
    low, high = mask[0::2], mask[1::2]
    # Uncorrelated: |r| within 5 standard errors of 0; both halves keep half.
    assert abs(np.corrcoef(low, high)[0, 1]) < 5 / np.sqrt(len(low))
    assert abs(low.mean() - 0.5) < 5 * 0.5 / np.sqrt(len(low)) and abs(high.mean() - 0.5) < 5 * 0.5 / np.sqrt(len(high))


def test_odd_widths_and_scalars_have_their_own_shape():
    for shape in [(3, 5), (7,), (2, 3, 1)]:
        assert keep_mask(jax.random.key(2), shape, 0.9)[0].shape == shape


def test_dropout_scales_kept_values_and_keeps_the_expectation():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 1024)), jnp.float32)
    layer = Dropout(0.1)
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)}))
    kept = y != 0
    keep_prob = round(0.9 * 65536) / 65536
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / keep_prob, rtol=1e-6)
    ones = np.asarray(layer.apply({}, jnp.ones((N,)), deterministic=False, rngs={"dropout": jax.random.key(4)}))
    assert abs(ones.mean() - 1.0) < 5 * np.sqrt(0.1 / 0.9 / N)
    # Another key, another mask; the same key, the same mask.
    again = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(5)})
    assert np.array_equal(np.asarray(again), y) and not np.array_equal(np.asarray(other), y)


def test_deterministic_and_rate_zero_are_the_identity_and_need_no_rng():
    x = jnp.arange(12.0).reshape(3, 4)
    assert Dropout(0.1).apply({}, x, deterministic=True) is x
    assert Dropout(0.0).apply({}, x, deterministic=False) is x
    assert not np.asarray(Dropout(1.0).apply({}, x, deterministic=False)).any()


def test_same_contract_as_flax_dropout_inside_a_module():
    """Drop-in for nn.Dropout: same call, the 'dropout' rng collection, a missing rng is flax's error."""
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic):
            return Dropout(0.5)(nn.Dense(4)(x), deterministic=deterministic)

    x = jnp.ones((2, 3))
    params = Block().init(jax.random.key(0), x, True)
    out = Block().apply(params, x, False, rngs={"dropout": jax.random.key(1)})
    assert out.shape == (2, 4)
    with pytest.raises(Exception, match="dropout"):
        Block().apply(params, x, False)
