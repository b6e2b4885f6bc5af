"""Output folders that are never lost, never half-written and never written over somebody else's files.

A job writes a folder through `atomic_output_dir(target, kind)`: everything goes into a fresh temp folder
beside the target (`.<name>.polyret-tmp-<host>-<pid>-<n>`), a marker file `.polyret-output.json` records
what kind of output it is, and the finished folder is swapped into place in one step (Linux
`renameat2(RENAME_EXCHANGE)`; elsewhere two renames, undone on the next run if a kill falls between
them). A kill at any moment therefore leaves the previous output or the new one at the target, and the
next run removes what a killed run left beside it.

What may be replaced: nothing, an empty folder, or an earlier output of the same kind (the marker says
so). An output of another kind, or a folder in the layout of this kind written before markers existed,
only with `overwrite=True` (a job's `--overwrite`). A folder holding anything else, a file, or a folder
that contains one of the job's inputs is refused even then: `--overwrite` never removes a parent folder.
Files and folders follow the umask (temp folders from `tempfile` would be 0700).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import itertools
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

MARKER = ".polyret-output.json"
_TMP, _OLD = "polyret-tmp", "polyret-old"
_counter = itertools.count()

# Layouts of outputs written before markers existed: with --overwrite they may be replaced, provided the
# folder holds nothing but these names.
LEGACY_LAYOUTS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (names that must exist, names allowed)
    "checkpoint": ({"model_config.json", "params"}, {"model_config.json", "params", "spiece.model", "tokenizer",
                                                     "lora_base.json"}),
    "hf_export": ({"config.json"}, {"config.json", "model.safetensors", "tokenizer_config.json", "spiece.model",
                                    "tokenizer.json", "vocab.txt", "special_tokens_map.json", "added_tokens.json",
                                    "sentencepiece.bpe.model", "sentence_bert_config.json", "1_Pooling", "2_Dense",
                                    "3_Normalize", "modules.json", "config_sentence_transformers.json",
                                    "colbert_projection.safetensors", "query_encoder", "document_encoder"}),
}

_overwrite_allowed: contextvars.ContextVar[frozenset[Path]] = contextvars.ContextVar("polyret_overwrite",
                                                                                     default=frozenset())


class OutputError(ValueError):
    """An output folder that must not be written (the message names it and says why, in one line)."""


def _abs(path: str | os.PathLike) -> Path:
    # realpath: a symlinked target is written where the link points (renaming over the link would not).
    return Path(os.path.realpath(os.path.abspath(path)))


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a polyret output folder, or None when the folder has none (or an unreadable one)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


@contextlib.contextmanager
def allow_overwrite(*targets: str | os.PathLike) -> Iterator[None]:
    """Within the block, outputs written to these targets may replace an output of another kind or a
    legacy layout (what `overwrite=True` allows), also when library code in between writes them."""
    token = _overwrite_allowed.set(_overwrite_allowed.get() | {_abs(t) for t in targets})
    try:
        yield
    finally:
        _overwrite_allowed.reset(token)


def _is_legacy(folder: Path, kind: str) -> bool:
    if kind not in LEGACY_LAYOUTS:
        return False
    required, allowed = LEGACY_LAYOUTS[kind]
    names = {p.name for p in folder.iterdir()}
    return required <= names and names <= allowed


def _describe(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:4]) + (f", ... ({len(names)} entries)" if len(names) > 4 else "")
    return shown


def check_target(target: str | os.PathLike, kind: str, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Raise OutputError unless an output of `kind` may be written at `target`; returns the absolute target.
    Jobs call it before any work; `atomic_output_dir` calls it again before writing."""
    target = _abs(target)
    overwrite = overwrite or target in _overwrite_allowed.get()
    for item in inputs:
        if item is None:
            continue
        source = _abs(item)
        if source == target or target in source.parents:
            raise OutputError(f"{target}: the output folder contains the input {source}; choose another folder")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is a file, not a folder; choose a folder path")
    if not target.is_dir() or not any(target.iterdir()):
        return target
    marker = read_marker(target)
    if marker is not None and marker["kind"] == kind:
        return target
    if marker is not None:
        if overwrite:
            return target
        raise OutputError(f"{target}: holds a polyret {marker['kind']} output, not a {kind}; pass --overwrite "
                          "to replace it, or choose another folder")
    if _is_legacy(target, kind):
        if overwrite:
            return target
        raise OutputError(f"{target}: holds an earlier {kind} (written without a polyret marker); pass "
                          "--overwrite to replace it, or choose another folder")
    raise OutputError(f"{target}: not empty and not a polyret {kind} output (it holds {_describe(target)}); "
                      "refusing to replace it, even with --overwrite; choose a new or empty folder")


def current_umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: str | os.PathLike) -> None:
    """Give every file and folder under root (and root) the modes the umask gives new ones: some writers
    (safetensors: 0600; tempfile: 0700) create files other users of a shared machine cannot read."""
    mask = current_umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), dir_mode, follow_symlinks=False)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


def _fsync_tree(root: Path) -> None:
    """Flush files and folders to disk, so a power cut after the swap cannot leave empty files."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)


def _fsync_dir(folder: str | os.PathLike) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder
    finally:
        os.close(fd)


def _side_name(target: Path, tag: str) -> Path:
    host = socket.gethostname().replace("-", "_") or "host"
    return target.parent / f".{target.name}.{tag}-{host}-{os.getpid()}-{next(_counter)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: str | os.PathLike) -> None:
    """Tidy what killed runs of this host left beside `target`: a previous output moved aside (fallback
    swap) is moved back when the target is missing; temp folders of dead processes are removed."""
    target = _abs(target)
    if not target.parent.is_dir():
        return
    host = socket.gethostname().replace("-", "_") or "host"
    for path in sorted(target.parent.glob(f".{glob_escape(target.name)}.polyret-*")):
        rest = path.name[len(target.name) + 2:]
        tag = next((t for t in (_TMP, _OLD) if rest.startswith(t + "-")), None)
        parts = rest[len(tag or "") + 1:].rsplit("-", 2)
        if tag is None or len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _pid_alive(int(parts[1])) and int(parts[1]) != os.getpid():
            continue  # another live process is writing (or swapping) this target now
        if tag == _OLD and not target.exists():
            os.rename(path, target)  # killed between the two renames of the fallback swap
        else:
            shutil.rmtree(path, ignore_errors=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def swap_in(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`; whatever was there is removed after the swap."""
    if not target.exists():
        os.rename(new, target)
    elif target.is_dir() and not any(target.iterdir()):
        os.rename(new, target)  # rename() replaces an empty folder in one step
    elif _exchange(new, target):
        shutil.rmtree(new)  # `new` now names the previous output
    else:
        old = _side_name(target, _OLD)
        os.rename(target, old)
        os.rename(new, target)  # a kill right before this line: recover() moves `old` back
        shutil.rmtree(old)
    _fsync_dir(target.parent)


def write_marker(folder: str | os.PathLike, kind: str, fingerprint: Mapping[str, Any] | None = None) -> None:
    marker = {"kind": kind, "complete": True, "fingerprint": dict(fingerprint or {})}
    (Path(folder) / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                       encoding="utf-8")


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, kind: str, overwrite: bool = False,
                      fingerprint: Mapping[str, Any] | None = None,
                      inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield an empty temp folder beside `target` to write into; on success it becomes `target` (with
    its marker), on an exception it is removed and `target` is untouched."""
    inputs = list(inputs)
    target = check_target(target, kind, overwrite, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = _side_name(target, _TMP)
    tmp.mkdir()  # mode 0777 & ~umask, unlike tempfile.mkdtemp's 0700
    try:
        yield tmp
        write_marker(tmp, kind, fingerprint)
        apply_umask(tmp)
        _fsync_tree(tmp)
        check_target(target, kind, overwrite, inputs)  # the target may have changed while we wrote
        swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a small file whole or not at all (temp file beside it, then rename), with umask modes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_TMP}-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
