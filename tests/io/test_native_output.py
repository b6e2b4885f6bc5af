"""C++ output on file descriptor 2 goes to Python logging, not the console: a direct write, and ScaNN's own
absl log lines while it builds a tree index (which no environment variable silences)."""

import logging
import os

import numpy as np

from polyret.io.native_output import native_stderr_to_log


def test_descriptor_2_is_logged_and_restored(capfd, caplog):
    caplog.set_level(logging.INFO, logger="native_test")
    with native_stderr_to_log("native_test"):
        os.write(2, "I0000 written by C++ ü\n\n".encode())
    os.write(2, b"after the block\n")
    assert capfd.readouterr().err == "after the block\n"
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("native_test", "I0000 written by C++ ü")]


def test_scann_build_log_is_not_on_the_console(capfd, caplog):
    from polyret.retrieval.scann_index import ScannConfig, ScannIndex

    caplog.set_level(logging.INFO, logger="scann")
    vectors = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    index = ScannIndex.build([str(i) for i in range(3000)], vectors, k=5,
                             config=ScannConfig(brute_force_below=1000, num_leaves=20, num_leaves_to_search=20))
    assert not index.brute_force
    assert "I0000" not in capfd.readouterr().err
    assert any("Partitioner" in r.getMessage() for r in caplog.records if r.name == "scann")
