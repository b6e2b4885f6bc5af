"""The attention core of every encoder family: softmax(scale * q.k + bias, key padding masked) . v, through
`jax.nn.dot_product_attention`, so that GPUs run cuDNN's fused (flash) kernel and other platforms XLA.

`attention_impl` (a field of T5Config / BertConfig; gin `t5_config.attention_impl = 'cudnn'`):
  'auto'   cuDNN where it runs and computes the same thing (a CUDA GPU, bf16/fp16 activations, head dim a
           multiple of 8 up to 128, even lengths, no attention dropout in this call), XLA everywhere else;
  'xla'    XLA: the scores [batch, heads, L, L] in float32, softmax in float32 (what polyret always did);
  'cudnn'  cuDNN always; a ValueError where it cannot run (CPU, TPU, float32, attention dropout).
TPU keeps XLA: Pallas splash attention takes masks but no additive bias, and T5's learned relative-position
bias is one (its gradient trains `relpos_bias`); at these lengths (<= 512) XLA's TPU fusion is also close.

Masks. The key mask is a key-padding mask [batch, L] of right-padded rows (True then False), which is what
every polyret tower passes (`tokens != 0`, or all True). cuDNN receives it as per-row key lengths (its
PADDING mask type; no [batch, heads, L, L] mask or bias is built), XLA as a boolean mask. A row with no real
token attends to its first key under cuDNN and uniformly under XLA; nothing downstream reads such a row.

Attention dropout (training with `dropout_rate` / `attention_dropout_rate` > 0) needs the probabilities,
which a fused kernel never materialises: that call runs the explicit path (`explicit_attention`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ATTENTION_IMPLS = ("auto", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def check_attention_impl(owner: str, impl: str) -> None:
    """Raise ValueError naming the config field for an unknown implementation."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"{owner}.attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")


def _on_cuda_gpu() -> bool:
    device = jax.devices()[0]
    return device.platform == "gpu" and "nvidia" in device.device_kind.lower()


def cudnn_unsupported(q: jax.Array, has_bias: bool, dropout: bool) -> str | None:
    """Why cuDNN's fused kernel cannot compute this attention exactly (None: it can)."""
    if dropout:
        return "attention dropout is active (set the dropout rate to 0 or attention_impl='auto'/'xla')"
    if not _on_cuda_gpu():
        return f"it needs a CUDA GPU, this process runs on {jax.devices()[0].platform}"
    if jnp.dtype(q.dtype) not in _CUDNN_DTYPES:
        return f"it needs bfloat16 or float16 activations, got {jnp.dtype(q.dtype).name} (set dtype='bfloat16')"
    head_dim, length = q.shape[-1], q.shape[1]
    if head_dim % 8 or head_dim > 128:
        return f"the head dim must be a multiple of 8 up to 128, got {head_dim}"
    if has_bias and length % 2:  # cuDNN's backward with a bias needs even lengths
        return f"with a bias the length must be even, got {length}"
    return None


def choose_impl(impl: str, q: jax.Array, has_bias: bool, dropout: bool) -> str:
    """'auto' | 'xla' | 'cudnn' -> the implementation this call runs ('explicit' when dropout is active)."""
    why = cudnn_unsupported(q, has_bias, dropout) if impl != "xla" else None
    if impl == "cudnn" and why:
        raise ValueError(f"attention_impl='cudnn' cannot run here: {why}")
    if dropout:
        return "explicit"
    if impl == "auto":
        return "xla" if why else "cudnn"
    return impl


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, key_mask: jax.Array, scale: float,
              impl: str, causal: bool = False) -> jax.Array:
    """q [batch, L, heads, head_dim]; k, v [batch, L, kv_heads, head_dim] (kv_heads divides heads: grouped-
    query attention); bias [1 or batch, heads, L, L] (float32) or None; key_mask [batch, L] bool (right-padded
    rows); impl 'xla' | 'cudnn'; causal: a query sees no later key -> [batch, L, heads, head_dim] in q's dtype."""
    if impl == "cudnn":
        return padding_as_lengths(q, k, v, bias, key_mask, scale, "cudnn", causal)
    return jax.nn.dot_product_attention(q, k, v, bias, key_mask[:, None, None, :], scale=scale, is_causal=causal,
                                        implementation="xla")


def padding_as_lengths(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, key_mask: jax.Array,
                       scale: float, implementation: str, causal: bool = False) -> jax.Array:
    """The call cuDNN gets: key padding as per-row key lengths, the bias unbroadcast [1, heads, L, L] in the
    activations' dtype. (With implementation='xla' the tests run this same call on CPU.)"""
    lengths = jnp.maximum(jnp.sum(key_mask, axis=-1, dtype=jnp.int32), 1)
    return jax.nn.dot_product_attention(q, k, v, None if bias is None else bias.astype(q.dtype), scale=scale,
                                        is_causal=causal, key_value_seq_lengths=lengths,
                                        implementation=implementation)


def explicit_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, key_mask: jax.Array,
                       scale: float, dropout: Callable[[jax.Array], jax.Array], causal: bool = False) -> jax.Array:
    """The same attention written out, with `dropout` applied to the probabilities [batch, heads, L, L]."""
    groups = q.shape[2] // k.shape[2]  # grouped-query attention: each key/value head serves `groups` heads
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias
    mask = key_mask[:, None, None, :]
    if causal:
        length = q.shape[1]
        mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = dropout(jax.nn.softmax(logits, axis=-1)).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
