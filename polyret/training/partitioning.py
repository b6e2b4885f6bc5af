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
    # Activations: batch over the batch axes; everything not named stays replicated. The batch rule comes
    # before the presets: flax assigns rules in order and a mesh axis once, so with ('embed', 'fsdp') first an
    # activation [batch, length, embed] would be split on embed and the batch replicated over fsdp.
    return tuple(extra) + (("batch", BATCH_AXES),) + tuple(presets[preset])


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


def optimizer_state_shardings(opt_shapes: Any, param_shapes: Any, logical_specs: Any, mesh: Mesh,
                              rules: Rules) -> Any:
    """A sharding for every optimizer-state leaf, derived from its parameter's logical axes by tree path.

    optax states hold trees shaped like the parameters (Adam's mu/nu, Adafactor's v), Adafactor's factored
    statistics (v_row / v_col: the parameter with one dimension reduced, as optax chooses it), one-element
    placeholders and scalar counters. A leaf is matched to its parameter by the trailing dictionary keys of
    its path (never by shape: same-shaped kernels have different axes); a leaf that fits none of these
    raises ConfigError rather than being placed somewhere silently.
    """
    params = {}
    for (path, shape), spec in zip(jax.tree_util.tree_flatten_with_path(param_shapes)[0],
                                   jax.tree_util.tree_leaves(logical_specs,
                                                             is_leaf=lambda x: isinstance(x, PartitionSpec))):
        params[_dict_keys(path)] = (tuple(shape.shape), tuple(spec) + (None,) * (len(shape.shape) - len(spec)))

    def place(path, leaf) -> NamedSharding:
        keys, field = _dict_keys(path), _field_before_dict_keys(path)
        shape = tuple(leaf.shape)
        if keys in params:
            param_shape, axes = params[keys]
            if shape == param_shape:
                return _logical(axes, mesh, rules)
            if field in ("v_row", "v_col") and len(param_shape) >= 2 and len(shape) == len(param_shape) - 1:
                order = np.argsort(param_shape)  # optax.adafactor's choice of the two factored dimensions
                dropped = int(order[-1] if field == "v_row" else order[-2])
                if shape == tuple(np.delete(param_shape, dropped)):
                    return _logical(tuple(np.delete(np.array(axes, object), dropped)), mesh, rules)
            if shape in ((), (1,)):
                return replicated(mesh)  # counters and Adafactor's placeholders for unfactored statistics
        elif shape == ():
            return replicated(mesh)  # step counts
        raise ConfigError(f"optimizer state leaf {jax.tree_util.keystr(path)} {shape} matches no parameter "
                          "(cannot derive its sharding)")

    return jax.tree_util.tree_map_with_path(place, opt_shapes)


def _dict_keys(path) -> tuple[str, ...]:
    """The trailing dictionary keys of a tree path: the parameter path inside an optax state."""
    keys = []
    for entry in reversed(path):
        if not isinstance(entry, jax.tree_util.DictKey):
            break
        keys.append(str(entry.key))
    return tuple(reversed(keys))


def _field_before_dict_keys(path) -> str | None:
    for entry in reversed(path):
        if isinstance(entry, jax.tree_util.GetAttrKey):
            return entry.name
        if not isinstance(entry, jax.tree_util.DictKey):
            return None
    return None


def _logical(axes: tuple, mesh: Mesh, rules: Rules) -> NamedSharding:
    return nn.logical_to_mesh_sharding(PartitionSpec(*axes), mesh, list(rules))
