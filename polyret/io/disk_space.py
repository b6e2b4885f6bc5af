"""A full disk reported as one line: the folder, the bytes the write needed, what was kept.

Writers stage their files (temp names, orbax's temp step folders) and swap them in only when complete,
so a full disk leaves the previous checkpoint/output intact; `disk_full_reported` turns the failure
(an OSError with ENOSPC, or a library's error carrying the same text, e.g. TensorStore's) into
`polyret.errors.DiskFull`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from polyret.errors import DiskFull

_TEXT = ("No space left on device", "ENOSPC", "Disk quota exceeded")


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` (or an exception it was raised from) is a full disk or exhausted quota."""
    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, DiskFull):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(error) for t in _TEXT):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the filesystem holding `folder` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@contextlib.contextmanager
def disk_full_reported(folder: str | os.PathLike, needed: int, what: str, kept: str) -> Iterator[None]:
    """Within the block, a full disk raises `DiskFull(folder, needed, ...)`; other errors pass unchanged.
    `what`: what was being written ("the checkpoint of step 40"); `kept`: what is intact."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:  # noqa: BLE001 (re-raised unless it is a full disk)
        if not is_disk_full(e):
            raise
        raise DiskFull(folder, needed, free_bytes(folder), what, kept) from e
