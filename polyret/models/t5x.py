"""Read T5X checkpoints: the msgpack layout (inline arrays + tensorstore zarr leaves) and the Orbax layout.

The legacy layout is a folder `checkpoint_N/` with a msgpack file `checkpoint`
(`{'version', 'optimizer': {'target': params, 'state': ...}}`); large leaves are tensorstore specs whose
kvstore names a zarr folder beside the file (driver 'gfile' on Google's file system: read here with
driver 'file'). The Orbax layout is whatever orbax's PyTreeCheckpointer wrote; the parameters are found
under `target`, `optimizer/target`, `state/params` or `params`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from flax import serialization, traverse_util

from polyret.models.t5 import T5Config

_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "_sharding")


def detect_format(path: Path) -> str:
    """'msgpack' or 'orbax'; raises FileNotFoundError naming the path otherwise."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: T5X checkpoint folder not found")
    if any((path / m).exists() for m in _ORBAX_MARKERS):
        return "orbax"
    if (path / "checkpoint").is_file():
        return "msgpack"
    raise FileNotFoundError(f"{path}: neither a T5X msgpack checkpoint (no 'checkpoint' file) nor an Orbax one "
                            f"(none of {', '.join(_ORBAX_MARKERS)})")


def _is_tensorstore_spec(leaf: Any) -> bool:
    return isinstance(leaf, dict) and "driver" in leaf and "kvstore" in leaf


def _read_tensorstore(spec: dict[str, Any], folder: Path, name: str) -> np.ndarray:
    spec = dict(spec)
    kvstore = dict(spec["kvstore"])
    array_path = Path(kvstore["path"])
    if not array_path.is_absolute():
        array_path = folder / array_path.name
    if not array_path.is_dir():
        raise FileNotFoundError(f"{array_path}: array folder for parameter {name} is missing")
    spec["kvstore"] = {"driver": "file", "path": str(array_path)}
    try:
        return np.asarray(ts.open(spec, open=True, read=True).result().read().result())
    except Exception as e:
        raise ValueError(f"{array_path}: cannot read parameter {name}: {e}") from e


def _find_params(tree: dict[str, Any], source: Path) -> dict[str, Any]:
    for keys in (("optimizer", "target"), ("target",), ("state", "params"), ("params",)):
        node = tree
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return node
    raise ValueError(f"{source}: no parameters found (looked for optimizer/target, target, state/params, params; "
                     f"top-level keys are {sorted(tree)})")


def load_t5x_params(path: str | os.PathLike) -> dict[str, Any]:
    """A T5X checkpoint folder -> its parameter tree (numpy), layout detected."""
    path = Path(path).resolve()
    if detect_format(path) == "orbax":
        try:
            tree = ocp.PyTreeCheckpointer().restore(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot read Orbax checkpoint: {e}") from e
        params = _find_params(tree, path)
        return traverse_util.unflatten_dict({k: np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()})
    checkpoint_file = path / "checkpoint"
    try:
        tree = serialization.msgpack_restore(checkpoint_file.read_bytes())
    except Exception as e:
        raise ValueError(f"{checkpoint_file}: not a T5X msgpack checkpoint: {e}") from e
    params = _find_params(tree, checkpoint_file)
    flat = {}
    # tensorstore specs are dicts themselves, so walk the tree by hand instead of flatten_dict.
    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if _is_tensorstore_spec(node):
            flat[prefix] = _read_tensorstore(node, path, "/".join(prefix))
        elif isinstance(node, dict):
            for key, child in node.items():
                walk(child, prefix + (key,))
        else:
            flat[prefix] = np.asarray(node)
    walk(params, ())
    return traverse_util.unflatten_dict(flat)


def infer_t5_config(params: dict[str, Any], **overrides: Any) -> T5Config:
    """Read the encoder architecture off the parameter shapes (shared-tower T5X layout)."""
    try:
        encoder = params["encoder"]
        vocab_size, d_model = params["token_embedder"]["embedding"].shape
        num_heads, num_buckets = encoder["relpos_bias"]["rel_embedding"].shape
        layer = encoder["layers_0"]
        inner = layer["attention"]["query"]["kernel"].shape[1]
        mlp = layer["mlp"]
    except KeyError as e:
        raise ValueError(f"checkpoint has no parameter named {e.args[0]!r} where a T5 encoder has one") from e
    gated = "wi_0" in mlp
    d_ff = (mlp["wi_0"] if gated else mlp["wi"])["kernel"].shape[1]
    num_layers = sum(1 for k in encoder if k.startswith("layers_"))
    fields = dict(vocab_size=int(vocab_size), d_model=int(d_model), num_heads=int(num_heads),
                  d_kv=int(inner // num_heads), d_ff=int(d_ff), num_layers=num_layers,
                  activation="gated-gelu" if gated else "relu", relative_attention_num_buckets=int(num_buckets))
    fields.update(overrides)
    return T5Config(**fields)
