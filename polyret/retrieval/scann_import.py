"""`scann_ops_pybind` without TensorFlow.

`scann/__init__.py` ends with `try: import tensorflow; from scann.scann_ops.py import scann_ops` (the TF
custom-op searcher) `except ModuleNotFoundError: pass`. polyret only uses the pybind searcher, which does not
need TensorFlow, yet that import alone costs ~750 MiB of resident memory and seconds of start-up: more than
the vectors of a 1M x 128 corpus. So while `scann` is imported (and only then, and only when TensorFlow is
not loaded already) `import tensorflow` is made to fail the way scann expects; TensorFlow stays importable
afterwards for code that does need it (seqio, training).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


@contextlib.contextmanager
def tensorflow_import_blocked() -> Iterator[None]:
    """Within the block `import tensorflow` raises ModuleNotFoundError, unless TensorFlow is loaded already
    (then nothing changes: blocking it would gain nothing)."""
    if "tensorflow" in sys.modules:
        yield
        return
    # A None entry in sys.modules makes `import tensorflow` raise ModuleNotFoundError (Python's own rule).
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


with tensorflow_import_blocked():
    from scann import scann_ops_pybind  # noqa: E402

__all__ = ["scann_ops_pybind", "tensorflow_import_blocked"]
