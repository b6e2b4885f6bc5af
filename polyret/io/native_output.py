"""What C++ libraries print on the process's stderr, sent to Python logging instead of the console.

ScaNN logs its index builds through absl's C++ logging, which writes straight to file descriptor 2 and
ignores TF_CPP_MIN_LOG_LEVEL / GLOG_minloglevel; those lines would land between a job's progress bars and
its one line per stage. Inside `native_stderr_to_log`, descriptor 2 points at a temporary file whose lines
are logged afterwards (polyret's jobs send other libraries' records to their log file, not the console).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def native_stderr_to_log(logger_name: str, level: int = logging.INFO) -> Iterator[None]:
    """Lines written to descriptor 2 inside the block become records of `logger_name` when it ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            logger = logging.getLogger(logger_name)
            for line in capture.read().decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    logger.log(level, "%s", line)
