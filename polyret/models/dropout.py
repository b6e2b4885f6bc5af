"""Dropout whose keep masks cost half the random bits of `flax.linen.Dropout`.

`jax.random.bernoulli` draws one 32-bit word per element whatever precision it needs, and on CPU those draws are
a sixth of a MiniLM fine-tuning step (benchmarks/RESULTS.md, issue 35). Here each 32-bit word gives two
elements: its low and high 16 bits, each compared with the keep probability in 1/65536ths (rate 0.1 keeps with
probability 58982/65536, within 1e-5 of 0.9; kept values are scaled by that exact probability, so the
expectation is unchanged). The two halves of a word land on neighbouring elements of the last axis, so a mask
drawn for a sharded activation stays on the shard that uses it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def keep_mask(rng: jax.Array, shape: tuple[int, ...], keep_prob: float) -> tuple[jax.Array, float]:
    """A boolean mask of `shape`, each element True with probability `threshold / 65536` (returned beside it)."""
    threshold = round(keep_prob * 65536)
    last = shape[-1] if shape else 1
    words = jax.random.bits(rng, tuple(shape[:-1]) + ((last + 1) // 2,), jnp.uint32)
    halves = jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(words.shape[:-1] + (-1,))
    mask = halves[..., :last] < threshold
    return mask.reshape(shape), threshold / 65536


class Dropout(nn.Module):
    """`flax.linen.Dropout`'s contract (rate, `deterministic`, the 'dropout' rng collection), cheaper masks."""

    rate: float
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        mask, keep_prob = keep_mask(self.make_rng(self.rng_collection), inputs.shape, 1.0 - self.rate)
        return jnp.where(mask, inputs / jnp.asarray(keep_prob, inputs.dtype), jnp.zeros_like(inputs))
