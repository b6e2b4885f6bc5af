"""The encoder layer stack of every family: a Python loop or one scanned layer body, with optional remat.

One parameter layout everywhere. Outside this module the layers are always `layers_0 ... layers_{n-1}`
(T5X / Hugging Face names, per-layer logical axes), whether a run scans or not, so checkpoints, import,
export, resume, LoRA masks and `RetrievalModel.abstract_params()` never see a second layout.

With `scan_layers`, `apply` builds a stacked *view* of those per-layer parameters (`nn.map_variables`,
`jnp.stack` leaf by leaf, leading axis = layer) and runs a single layer body under `nn.scan`, so XLA
compiles one layer instead of n. The view shares the stack's own scope (`nn.share_scope`), so no name
level is added; gradients flow back through the stack to the per-layer leaves. The price is one copy of
the layer weights per step (and one of their gradients), which is small beside the activations of a
training step (benchmarks/RESULTS.md, "scan and remat"). Initialisation always runs the loop, so a seed
gives the same weights scanned or not.

Rematerialisation (`remat_policy`), cheapest in compute first (`REMAT_POLICIES` keeps this order, and
`polyret plan --remat_policy auto` takes the first that fits):
  'none'           keep every activation the backward pass needs;
  'dots_saveable'  keep the results of matmuls without batch dimensions (the q/k/v/out projections and the
                   MLP: nearly all FLOPs), recompute elementwise work and attention (a few % of the FLOPs);
  'offload_dots'   the same matmul results, kept in pinned host memory instead of HBM (jax host offload:
                   GPU and TPU; costs the transfers, frees the device);
  'full'           keep only each layer's input, recompute the whole layer (about +33% FLOPs).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

REMAT_POLICIES = ("none", "dots_saveable", "offload_dots", "full")
# Encoder config fields that change how the layers run, never the parameters: a resumed run may change them.
EXECUTION_ONLY_FIELDS = ("scan_layers", "remat_policy", "attention_impl")

_LAYER = re.compile(r"layers_(\d+)$")


def check_stack_options(owner: str, scan_layers: bool, remat_policy: str) -> None:
    """Raise ValueError (naming the config field) for an unknown remat policy or a non-bool scan flag."""
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"{owner}.remat_policy must be one of {REMAT_POLICIES}, got {remat_policy!r}")
    if not isinstance(scan_layers, bool):
        raise ValueError(f"{owner}.scan_layers must be True or False, got {scan_layers!r}")


def checkpoint_policy(policy: str) -> Any:
    """A `remat_policy` name -> the jax.checkpoint policy (None: save nothing but the layer's input)."""
    policies = jax.checkpoint_policies
    return {"full": None, "dots_saveable": policies.dots_with_no_batch_dims_saveable,
            "offload_dots": policies.offload_dot_with_no_batch_dims("device", "pinned_host")}[policy]


def _remat(layer_cls: type[nn.Module], policy: str) -> type[nn.Module]:
    if policy == "none":
        return layer_cls
    checkpoint_policy_ = checkpoint_policy(policy)
    # Argument 3 of `layer(x, bias, deterministic)` (self is 0) is a Python bool: static.
    return nn.remat(layer_cls, policy=checkpoint_policy_, prevent_cse=True, static_argnums=(3,))


def stacked_view(params: dict[str, Any]) -> dict[str, Any]:
    """Per-layer params {'layers_0': t0, 'layers_1': t1, ...} -> {'layers': tree of [n, ...] arrays}."""
    indices = sorted(int(m.group(1)) for m in map(_LAYER.match, params) if m)
    if indices != list(range(len(indices))):
        raise ValueError(f"layer parameters are not numbered 0..n-1: found layers {indices}")
    trees = [params[f"layers_{i}"] for i in indices]
    return {"layers": jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)}


class _Body(nn.Module):
    """One layer as an nn.scan body: (x, bias) -> (x, None); shares the layer's scope (no extra name)."""

    layer_cls: Any
    config: Any
    deterministic: bool

    def setup(self):
        self.layer = self.layer_cls(self.config)
        nn.share_scope(self, self.layer)

    def __call__(self, x: jax.Array, bias: jax.Array) -> tuple[jax.Array, None]:
        return self.layer(x, bias, self.deterministic), None


class _ScannedLayers(nn.Module):
    """Runs `num_layers` copies of the body under nn.scan over the stacked parameters `layers/...`."""

    layer_cls: Any
    config: Any
    deterministic: bool
    num_layers: int

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        scan = nn.scan(_Body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                       in_axes=nn.broadcast, length=self.num_layers,
                       metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = scan(self.layer_cls, self.config, self.deterministic, name="layers")(x, bias)
        return x


_StackedView = nn.map_variables(_ScannedLayers, "params", init=False, mutable=False,
                                trans_in_fn=lambda variables: {"params": stacked_view(variables["params"])})


def run_layers(stack: nn.Module, layer_cls: type[nn.Module], config: Any, num_layers: int, x: jax.Array,
               bias: jax.Array, deterministic: bool) -> jax.Array:
    """Inside `stack`'s compact `__call__`: apply its `layers_i` children to x, looped or scanned.

    `config` must have `scan_layers` and `remat_policy`; `layer_cls(config)(x, bias, deterministic)` is
    one layer."""
    layer_cls = _remat(layer_cls, config.remat_policy)
    if not config.scan_layers or stack.is_initializing():
        for i in range(num_layers):
            x = layer_cls(config, name=f"layers_{i}")(x, bias, deterministic)
        return x
    view = _StackedView(layer_cls, config, deterministic, num_layers, name="layers_scanned")
    nn.share_scope(stack, view)
    return view(x, bias)

