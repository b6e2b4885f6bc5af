"""What C++ libraries print on the process's stderr, sent to Python logging instead of the console.

ScaNN logs its index builds through absl's C++ logging, which writes straight to file descriptor 2 and
ignores TF_CPP_MIN_LOG_LEVEL / GLOG_minloglevel; those lines would land between a job's progress bars and
its one line per stage. Inside `native_stderr_to_log`, descriptor 2 points at a file in the temporary
folder whose lines are logged when the block ends, at the level of absl's prefix (`I`, `W`, `E`, `F`), so
polyret's jobs keep them in their log file and show errors as usual. Descriptor 2 belongs to the whole
process, so one block runs at a time and other threads' stderr output in that window is logged with it.
If the process dies inside the block (a C++ crash), the file is left behind with what was printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Iterator

_ABSL_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_ABSL_PREFIX = re.compile(r"([IWEF])\d{4} ")  # e.g. "W1205 12:00:00.000000  123 file.cc:42] ..."
_lock = threading.RLock()


@contextlib.contextmanager
def native_stderr_to_log(logger_name: str) -> Iterator[None]:
    """Lines written to descriptor 2 inside the block become records of `logger_name` when it ends (a line
    without absl's prefix takes the level of the line before it; INFO at first)."""
    with _lock:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # descriptor 2 is closed: nothing would reach a console anyway
            saved = None
        if saved is None:
            yield
            return
        fd, path = tempfile.mkstemp(prefix=f"polyret-native-stderr-{os.getpid()}-", suffix=".txt")
        os.dup2(fd, 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(fd, "rb") as captured:
                text = captured.read().decode("utf-8", errors="replace")
            os.unlink(path)
            _log_lines(logging.getLogger(logger_name), text)


def _log_lines(logger: logging.Logger, text: str) -> None:
    level = logging.INFO
    for line in text.splitlines():
        if line.strip():
            prefix = _ABSL_PREFIX.match(line)
            level = _ABSL_LEVELS[prefix.group(1)] if prefix else level
            logger.log(level, "%s", line)
