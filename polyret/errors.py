"""Errors that every room raises and every job classifies (one line to the user, a known exit status)."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data; the message starts with `file:line:` and names the field."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


class ServiceUnreachable(RuntimeError):
    """A server the job needs (an LLM endpoint) cannot be reached even after retries; what was written so
    far is kept and a rerun resumes."""


class Preempted(Exception):
    """Stopped on SIGTERM (preemption) or SIGINT at a consistent point, after saving what the run had
    reached; the same command resumes. Jobs exit with 128 + `signum` (143 for SIGTERM: see README,
    "Outputs are never lost", for how schedulers requeue on it)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class DiskFull(OSError):
    """No space left while writing a checkpoint or an output; what existed before is intact. The message
    names the folder and the bytes the write needed."""

    def __init__(self, folder: str | os.PathLike, needed: int, free: int, what: str, kept: str):
        super().__init__(28, f"{folder}: disk full while writing {what} (needs {_size(needed)}, "
                             f"{_size(free)} free); {kept}; free space and run the same command again")
        self.folder, self.needed, self.free = str(folder), needed, free

    def __str__(self) -> str:  # OSError's own form is "[Errno 28] ..."
        return self.strerror


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB ({n} bytes)"
