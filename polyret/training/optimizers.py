"""Optimizers and learning-rate schedules (optax), gin-configurable; LoRA freezes the base by masking."""

from __future__ import annotations

import sys
from typing import Any, Callable

import gin
import jax
import optax
from flax import traverse_util

from polyret.models.lora import LORA_A, LORA_B


@gin.configurable
def learning_rate_schedule(base_learning_rate: float = 1e-3, schedule: str = "constant", warmup_steps: int = 0,
                           total_steps: int | None = None, end_factor: float = 0.0) -> optax.Schedule:
    """warmup (linear from 0) then: constant | linear (to end_factor) | cosine (to end_factor) | rsqrt
    (t5x's 1/sqrt(max(step, warmup)) shape, equal to base at the end of warmup)."""
    if schedule == "constant":
        decay = optax.constant_schedule(base_learning_rate)
    elif schedule in ("linear", "cosine"):
        if not total_steps:
            raise ValueError(f"learning_rate_schedule: schedule {schedule!r} needs total_steps")
        steps = max(1, total_steps - warmup_steps)
        decay = (optax.linear_schedule(base_learning_rate, base_learning_rate * end_factor, steps)
                 if schedule == "linear" else optax.cosine_decay_schedule(base_learning_rate, steps, end_factor))
    elif schedule == "rsqrt":
        start = max(1, warmup_steps)
        decay = lambda step: base_learning_rate * (start / (step + start)) ** 0.5
    else:
        raise ValueError(f"learning_rate_schedule: unknown schedule {schedule!r} (constant, linear, cosine, rsqrt)")
    if not warmup_steps:
        return decay
    if total_steps and warmup_steps >= total_steps:
        # The run ends inside the warmup: say so before anything compiles (the last step, total_steps - 1, is
        # the highest rate it reaches).
        peak = base_learning_rate * (total_steps - 1) / warmup_steps
        print(f"WARNING: learning_rate_schedule: warmup_steps {warmup_steps} >= {total_steps} training steps: the "
              f"rate peaks at {peak:.3g} ({peak / base_learning_rate:.0%} of base_learning_rate "
              f"{base_learning_rate:g}) and the {schedule} phase never starts", file=sys.stderr, flush=True)
    return optax.join_schedules([optax.linear_schedule(0.0, base_learning_rate, warmup_steps), decay], [warmup_steps])


@gin.configurable
def adafactor(learning_rate: optax.Schedule, decay_rate: float = 0.8, clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True, min_dim_size_to_factor: int = 128,
              weight_decay_rate: float | None = None) -> optax.GradientTransformation:
    """Adafactor with t5x's defaults (decay 0.8, parameter scaling, update clipping 1.0, no momentum)."""
    return optax.adafactor(learning_rate, decay_rate=decay_rate, clipping_threshold=clipping_threshold,
                           multiply_by_parameter_scale=multiply_by_parameter_scale,
                           min_dim_size_to_factor=min_dim_size_to_factor, weight_decay_rate=weight_decay_rate)


@gin.configurable
def adamw(learning_rate: optax.Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.01) -> optax.GradientTransformation:
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


@gin.configurable
def make_optimizer(learning_rate: optax.Schedule, optimizer: Callable[..., optax.GradientTransformation] = adafactor,
                   max_grad_norm: float | None = None, trainable: Any | None = None) -> optax.GradientTransformation:
    """`optimizer(learning_rate)` with optional global-norm clipping; parameters whose `trainable` mask
    is False get no update (LoRA's frozen base)."""
    tx = optimizer(learning_rate)
    if max_grad_norm:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    if trainable is not None:
        labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable)
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
    return tx


def lora_trainable(params: Any, fresh_paths: set[tuple[str, ...]]) -> Any:
    """LoRA adapters and freshly created heads train; everything loaded from the base stays frozen."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] in (LORA_A, LORA_B) or k in fresh_paths for k in flat})
