"""GradCache for the dual encoder's contrastive loss: large in-batch negatives under a memory cap.

1. embed the whole batch chunk by chunk without keeping activations;
2. take the loss gradient with respect to the embeddings (the only step that sees the whole batch);
3. re-encode chunk by chunk and pull those embedding gradients back into the parameters (a VJP per chunk).
Every chunk uses the same dropout key in passes 1 and 3, so the gradients equal the plain step's.
The batch is never split before the loss: all B queries still see all B passages (and negatives).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from polyret.models.towers import DualEncoder
from polyret.training.objectives import Objective, contrastive_from_embeddings, encode, token_hash


def _chunks(x: jax.Array, num_chunks: int) -> jax.Array:
    if x.shape[0] % num_chunks:
        raise ValueError(f"GradCache: batch {x.shape[0]} is not divisible into {num_chunks} chunks")
    return x.reshape((num_chunks, x.shape[0] // num_chunks) + x.shape[1:])


def grad_cache_loss_and_grads(model: DualEncoder, params: Any, batch: dict[str, jax.Array], objective: Objective,
                              num_chunks: int, rng: jax.Array | None, deterministic: bool = False
                              ) -> tuple[tuple[jax.Array, dict], Any]:
    """-> ((loss, metrics), grads), as jax.value_and_grad(compute_loss, has_aux=True) would give."""
    if objective.distillation:
        raise ValueError("GradCache applies to the contrastive objective (distillation has no in-batch negatives)")
    left = batch["left_encoder_input_tokens"]
    right = batch["right_encoder_input_tokens"]
    negatives = batch.get("right_negative_encoder_input_tokens")
    sides = [("left", _chunks(left, num_chunks)), ("right", _chunks(right, num_chunks))]
    if negatives is not None:
        sides.append(("right", _chunks(negatives, num_chunks)))

    def keys(offset: int) -> jax.Array | None:
        if rng is None:
            return None
        return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(num_chunks) + offset)

    chunk_keys = [keys(i * num_chunks) for i in range(len(sides))]

    def embed_all(side: str, chunks: jax.Array, ks) -> jax.Array:
        frozen = jax.lax.stop_gradient(params)
        if ks is None:
            out = jax.lax.map(lambda t: encode(model, frozen, t, side, None, deterministic), chunks)
        else:
            out = jax.lax.map(lambda xs: encode(model, frozen, xs[0], side, xs[1], deterministic), (chunks, ks))
        return out.reshape((-1,) + out.shape[2:])

    embeddings = [embed_all(side, chunks, ks) for (side, chunks), ks in zip(sides, chunk_keys)]
    negative_valid = None if negatives is None else jnp.any(negatives != 0, axis=-1).reshape(-1)
    learnable_scale = "logit_scale" in params
    scale = params["logit_scale"] if learnable_scale else jnp.asarray(model.config.logit_scale, jnp.float32)

    def loss_fn(q, p, n, s):
        return contrastive_from_embeddings(q, p, n, negative_valid, token_hash(right), s, objective)

    negatives_embedded = embeddings[2] if negatives is not None else None
    (loss, metrics), (gq, gp, gn, gscale) = jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3), has_aux=True)(
        embeddings[0], embeddings[1], negatives_embedded, scale)
    cotangents = [gq, gp] + ([gn] if negatives is not None else [])

    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    for (side, chunks), ks, g in zip(sides, chunk_keys, cotangents):
        g = _chunks(g, num_chunks)

        def body(acc, xs, side=side):
            tokens, cot, k = xs
            _, vjp = jax.vjp(lambda p: encode(model, p, tokens, side, k, deterministic), params)
            return jax.tree_util.tree_map(jnp.add, acc, vjp(cot)[0]), None

        if rng is None:
            grads, _ = jax.lax.scan(lambda acc, xs: body(acc, (xs[0], xs[1], None)), grads, (chunks, g))
        else:
            grads, _ = jax.lax.scan(body, grads, (chunks, g, ks))
    if learnable_scale:
        grads = {**grads, "logit_scale": grads["logit_scale"] + gscale}
    return (loss, metrics), grads
