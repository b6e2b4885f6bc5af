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
