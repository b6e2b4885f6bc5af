"""C++ output on file descriptor 2 goes to Python logging, not the console: direct writes (absl's level
prefixes kept as levels, also when the block raises), and ScaNN's own absl log lines while it builds a tree
index (which no environment variable silences)."""

import glob
import logging
import os
import tempfile

import numpy as np
import pytest

from polyret.io.native_output import native_stderr_to_log


def _leftovers():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"polyret-native-stderr-{os.getpid()}-*")))


def test_descriptor_2_is_logged_at_absl_levels_and_restored(capfd, caplog):
    caplog.set_level(logging.INFO, logger="native_test")
    before = _leftovers()
    with native_stderr_to_log("native_test"):
        os.write(2, "I1205 12:00:00.1  7 a.cc:1] built ü\n\nW1205 12:00:00.2  7 a.cc:2] slow\n  detail\n".encode())
    os.write(2, b"after the block\n")
    assert capfd.readouterr().err == "after the block\n"
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "native_test"] == [
        (logging.INFO, "I1205 12:00:00.1  7 a.cc:1] built ü"), (logging.WARNING, "W1205 12:00:00.2  7 a.cc:2] slow"),
        (logging.WARNING, "  detail")]
    assert _leftovers() == before


def test_output_is_logged_when_the_block_raises(capfd, caplog):
    caplog.set_level(logging.INFO, logger="native_test")
    with pytest.raises(RuntimeError, match="build failed"):
        with native_stderr_to_log("native_test"):
            os.write(2, b"E1205 12:00:00.3  7 a.cc:3] out of memory\n")
            raise RuntimeError("build failed")
    assert capfd.readouterr().err == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "native_test"] == [
        (logging.ERROR, "E1205 12:00:00.3  7 a.cc:3] out of memory")]


def test_scann_build_log_is_not_on_the_console(capfd, caplog):
    from polyret.retrieval.scann_index import ScannConfig, ScannIndex

    caplog.set_level(logging.INFO, logger="scann")
    vectors = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    index = ScannIndex.build([str(i) for i in range(3000)], vectors, k=5,
                             config=ScannConfig(brute_force_below=1000, num_leaves=20, num_leaves_to_search=20))
    assert not index.brute_force
    assert "I0000" not in capfd.readouterr().err
    assert any("Partitioner" in r.getMessage() for r in caplog.records if r.name == "scann")
