"""Device mesh and logical-axis partitioning (MaxText / t5x style).

Parameters carry logical axis names (`embed`, `mlp`, `joined_kv`, `heads`, `vocab`, ...); a list of rules
maps them to mesh axes (`data`, `fsdp`, `model`). The presets in gin_configs/partitioning/ choose rules:
data parallel (everything replicated), FSDP (parameters sharded over `fsdp` on `embed`), tensor parallel
(`mlp`, `joined_kv`, `heads`, `vocab` over `model`). The batch is always split over (`data`, `fsdp`).
"""

from __future__ import annotations

from typing import Any, Sequence

import gin
import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, Any]]


class ConfigError(ValueError):
    """A configuration mistake found before compilation; the message says what to change."""

DATA_PARALLEL_RULES: Rules = ()
FSDP_RULES: Rules = (("embed", "fsdp"),)
TENSOR_PARALLEL_RULES: Rules = (("mlp", "model"), ("joined_kv", "model"), ("heads", "model"), ("vocab", "model"))


@gin.configurable
def logical_axis_rules(preset: str = "data_parallel", extra: Rules = ()) -> tuple[tuple[str, Any], ...]:
    presets = {"data_parallel": DATA_PARALLEL_RULES, "fsdp": FSDP_RULES, "tensor_parallel": TENSOR_PARALLEL_RULES,
               "fsdp_tensor_parallel": FSDP_RULES + TENSOR_PARALLEL_RULES}
    if preset not in presets:
        raise ConfigError(f"logical_axis_rules.preset {preset!r} is not one of {sorted(presets)}")
    # Activations: batch over the batch axes; everything not named stays replicated.
    return tuple(extra) + tuple(presets[preset]) + (("batch", BATCH_AXES),)


@gin.configurable
def create_mesh(data: int = -1, fsdp: int = 1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, model) mesh over all devices; one size may be -1 (the rest of the devices)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = {"data": data, "fsdp": fsdp, "model": model}
    unknown = [k for k, v in sizes.items() if v == -1]
    if len(unknown) > 1:
        raise ConfigError(f"create_mesh: only one axis may be -1, got {sizes}")
    known = int(np.prod([v for v in sizes.values() if v != -1]))
    if unknown:
        if len(devices) % known:
            raise ConfigError(f"create_mesh: {len(devices)} devices cannot be split into {sizes}; set the sizes so "
                             f"their product divides {len(devices)}")
        sizes[unknown[0]] = len(devices) // known
    if int(np.prod(list(sizes.values()))) != len(devices):
        raise ConfigError(f"create_mesh: mesh {sizes} needs {int(np.prod(list(sizes.values())))} devices but there "
                         f"are {len(devices)}; change create_mesh.data/fsdp/model")
    return Mesh(np.array(devices).reshape([sizes[a] for a in MESH_AXES]), MESH_AXES)


def batch_size_per_shard(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def param_shardings(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
    return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def like_params_shardings(tree_shapes: Any, param_shapes: Any, param_sharding: Any, mesh: Mesh) -> Any:
    """Shardings for optimizer state: a leaf shaped like some parameter takes that parameter's sharding
    (Adam moments), anything else (Adafactor's factored rows/columns, counters) is replicated."""
    by_shape: dict[tuple, Any] = {}
    for shape, sharding in zip(jax.tree_util.tree_leaves(param_shapes), jax.tree_util.tree_leaves(
            param_sharding, is_leaf=lambda x: isinstance(x, NamedSharding))):
        by_shape.setdefault(tuple(shape.shape), sharding)
    return jax.tree_util.tree_map(lambda leaf: by_shape.get(tuple(leaf.shape), replicated(mesh)), tree_shapes)
