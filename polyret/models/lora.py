"""LoRA: low-rank adapters beside the kernels whose parameter path matches a regex.

A matched layer computes  y = x W + (alpha / rank) * dropout(x) A B  with A [in, rank] and B [rank, out];
B starts at zero, so a fresh adapter leaves the model's outputs exactly as they were. The adapters live
next to the kernel (`.../query/lora_a`, `.../query/lora_b`); `lora_trainable_mask` marks them for optax
so the base stays frozen, and `merge_lora` folds them into the kernels for export.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from polyret.models.dropout import Dropout

LORA_A, LORA_B = "lora_a", "lora_b"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # Matched against the kernel's '/'-joined path inside its tower, e.g. "encoder/layers_0/attention/query/kernel".
    target_regex: str = r".*/attention/(query|value)/kernel$"

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def matches(self, kernel_path: str) -> bool:
        return re.search(self.target_regex, kernel_path) is not None


class LoraDense(nn.Module):
    """Dense layer with logical axes and an optional LoRA adapter; bias-free unless `use_bias` (BERT family)."""

    features: int
    kernel_axes: tuple[str, str]
    kernel_init: Callable
    lora: LoraConfig | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                            (x.shape[-1], self.features), self.param_dtype)
        x = x.astype(self.dtype)
        y = jnp.dot(x, kernel.astype(self.dtype))
        if self.lora is not None and self.lora.matches("/".join(self.path + ("kernel",))):
            cfg = self.lora
            a = self.param(LORA_A, nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_in", "uniform"), (self.kernel_axes[0], None)),
                (x.shape[-1], cfg.rank), self.param_dtype)
            b = self.param(LORA_B, nn.with_logical_partitioning(nn.initializers.zeros, (None, self.kernel_axes[1])),
                           (cfg.rank, self.features), self.param_dtype)
            h = Dropout(cfg.dropout)(x, deterministic=deterministic)
            y = y + cfg.scale * jnp.dot(jnp.dot(h, a.astype(self.dtype)), b.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.kernel_axes[1],)),
                              (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


def lora_trainable_mask(params: Any) -> Any:
    """Boolean tree: True for LoRA adapter leaves (train), False for the frozen base."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] in (LORA_A, LORA_B) for k in flat})


def has_lora(params: Any) -> bool:
    return any(k[-1] == LORA_A for k in traverse_util.flatten_dict(params))


def merge_lora(params: Any, lora: LoraConfig) -> Any:
    """Fold every adapter into its kernel (kernel += scale * A @ B) and drop the adapters."""
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    merged = {}
    for key, value in flat.items():
        if key[-1] in (LORA_A, LORA_B):
            continue
        if key[-1] == "kernel" and key[:-1] + (LORA_A,) in flat:
            a = flat[key[:-1] + (LORA_A,)].astype(np.float32)
            b = flat[key[:-1] + (LORA_B,)].astype(np.float32)
            value = (value.astype(np.float32) + lora.scale * a @ b).astype(value.dtype)
        merged[key] = value
    return traverse_util.unflatten_dict(merged)
