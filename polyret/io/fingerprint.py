"""Fingerprints of what produced an output, and the one-line refusal when a resume does not match.

A resumable output (encode shards, SAP / translation / teacher chunks, demo stages, training runs)
records a fingerprint: its inputs (file content hashes, or size + mtime + head/tail hash for big
files), the checkpoint (step, config hash, a sampled parameter hash) and the job's settings. A resume
compares the recorded fingerprint with the current one; any difference is refused with one line that
names what differs (`FingerprintMismatch`), instead of mixing two runs in one output.

A training run's own resume rules (model config, initial checkpoint) live with the trainer, in
`polyret.training.state`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

WHOLE_FILE_LIMIT = 64 << 20  # files up to this size are hashed whole; bigger ones by head and tail
PART = 4 << 20
INFORMATIONAL = ("path",)  # recorded for the message, not compared (a moved file is the same file)


class FingerprintMismatch(ValueError):
    """A resume (or import) whose inputs or settings differ from the recorded ones; one line."""


def canonical(value: Any) -> Any:
    """JSON-compatible copy (tuples -> lists, paths -> str) so recorded and current values compare equal."""
    return json.loads(json.dumps(value, default=_json_default, sort_keys=True))


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def digest(value: Any) -> str:
    """sha256 of a JSON-compatible value (keys sorted)."""
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True).encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """A file's identity: content sha256 (whole file up to 64 MiB), else size + mtime + head/tail sha256."""
    path = Path(path)
    stat = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if stat.st_size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return {"path": str(path.absolute()), "size": stat.st_size, "sha256": h.hexdigest()}
        h.update(f.read(PART))
        f.seek(-PART, os.SEEK_END)
        h.update(f.read(PART))
    return {"path": str(path.absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "head_tail_sha256": h.hexdigest()}


def folder_fingerprint(folder: str | os.PathLike) -> dict[str, Any]:
    """A model folder's identity: every file's name and size, content sha256 for files up to 64 MiB
    (configs, tokenizers) and head/tail sha256 for bigger ones (weights); no mtimes, so a copy matches."""
    folder = Path(folder)
    if folder.is_file():
        return file_fingerprint(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        entry = file_fingerprint(path)
        entry.pop("path"), entry.pop("mtime_ns", None)
        files[str(path.relative_to(folder))] = entry
    return {"path": str(folder.absolute()), "files": files}


def texts_fingerprint(texts: Mapping[str, str]) -> dict[str, Any]:
    """Identity of an {id: text} collection exactly as it is used (ids, texts and their order)."""
    h = hashlib.sha256()
    for key, text in texts.items():
        h.update(key.encode("utf-8", "surrogatepass") + b"\x00" + text.encode("utf-8", "surrogatepass") + b"\x01")
    return {"count": len(texts), "sha256": h.hexdigest()}


def params_fingerprint(params: Any) -> str:
    """A cheap identity of a parameter tree: names, shapes, dtypes and the first/last 256 values of each
    leaf (two different models differ there; hashing every byte of a large model would take seconds)."""
    from flax import traverse_util

    h = hashlib.sha256()
    flat = traverse_util.flatten_dict(params) if isinstance(params, Mapping) else {("params",): params}
    for key in sorted(flat):
        value = np.asarray(flat[key])
        h.update(f"{'/'.join(map(str, key))}:{value.shape}:{value.dtype}".encode())
        ravel = value.reshape(-1)
        h.update(np.ascontiguousarray(ravel[:256]).tobytes())
        h.update(np.ascontiguousarray(ravel[-256:]).tobytes())
    return h.hexdigest()


def checkpoint_step(checkpoint_dir: str | os.PathLike) -> int | None:
    """The training step a checkpoint path stands for: a step folder (…/checkpoints/<step>), a training
    MODEL_DIR (its latest finished step), or None for a plain checkpoint folder."""
    path = Path(checkpoint_dir)
    if path.name.isdigit() and path.parent.name == "checkpoints":
        return int(path.name)
    steps = path / "checkpoints"
    if steps.is_dir():
        done = [int(p.name) for p in steps.iterdir() if p.name.isdigit() and (p / "params").is_dir()]
        return max(done) if done else None
    return None


# ------------------------------------------------------------------------------------------ comparing

def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a hash: its start is enough to see that it differs
    return text if len(text) <= 40 else text[:37] + "..."


def differences(recorded: Any, current: Any, prefix: str = "",
                ignore: Iterable[str] = INFORMATIONAL) -> list[tuple[str, Any, Any]]:
    """(dotted key, recorded, current) for every leaf that differs; keys named in `ignore` are skipped."""
    ignore = set(ignore)
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(recorded) | set(current), key=str):
            if key in ignore:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in recorded or key not in current:
                out.append((name, recorded.get(key, "<absent>"), current.get(key, "<absent>")))
            else:
                out += differences(recorded[key], current[key], name, ignore)
        return out
    if isinstance(recorded, list) and isinstance(current, list) and len(recorded) == len(current):
        out = []
        for i, (a, b) in enumerate(zip(recorded, current)):
            out += differences(a, b, f"{prefix}[{i}]", ignore)
        return out
    return [] if recorded == current else [(prefix or "value", recorded, current)]


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    shown = [f"{name} ({_short(a)} -> {_short(b)})" for name, a, b in diffs[:limit]]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(shown) + more


def check_match(recorded: Mapping[str, Any], current: Mapping[str, Any], where: str | os.PathLike,
                remedy: str = "use a new output folder, or --overwrite to start over",
                allowed: Iterable[str] = ()) -> None:
    """Raise FingerprintMismatch (one line: where, what differs, what to do) unless they match.
    `allowed`: dotted keys (or their prefixes) that may differ."""
    allowed = tuple(allowed)
    diffs = [d for d in differences(canonical(recorded), canonical(current))
             if not any(d[0] == a or d[0].startswith(a + ".") for a in allowed)]
    if diffs:
        raise FingerprintMismatch(f"{where}: written by an earlier run with different settings or inputs; "
                                  f"differs in {describe(diffs)}; {remedy}")


def read_json(path: str | os.PathLike) -> Any | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise FingerprintMismatch(f"{path}: unreadable ({e}); it was damaged, or not written by polyret") from None
