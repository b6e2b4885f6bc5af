"""Shared test set-up: offline Hugging Face, CPU JAX, and small fixtures built once per session."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Jobs keep compiled programs on disk (polyret.jobs.common.enable_compilation_cache); the tests keep theirs
# out of the home folder, shared by both workers and every job they start. The same size cap as the jobs', so
# the tests' own programs are written with the access-time files a capped writer needs (jax-ml/jax#39880).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/polyret-tests-xla-cache")
from polyret.jobs.common import COMPILATION_CACHE_BYTES  # noqa: E402  (imports no JAX: the settings above still apply)

os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_BYTES))

from pathlib import Path

import pytest

from shared_paths import FIXTURES, T5X_FIXTURE  # noqa: F401

SAMPLE_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "der schnelle braune fuchs springt über den faulen hund",
    "le renard brun rapide saute par dessus le chien paresseux",
    "быстрая коричневая лиса прыгает через ленивую собаку",
    "retrieval models encode queries and passages into vectors",
    "multilingual dense retrieval with synthetic queries",
] * 20


@pytest.fixture(scope="session")
def tiny_spm(tmp_path_factory) -> Path:
    """A SentencePiece model with T5's special ids (pad 0, eos 1, unk 2), trained with sentencepiece."""
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("spm")
    text = folder / "text.txt"
    text.write_text("\n".join(SAMPLE_TEXT) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "sp"), vocab_size=80,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return folder / "sp.model"


@pytest.fixture
def capped_disk(tmp_path):
    """`capped_disk("64k")`: a folder on a real size-capped tmpfs (`mount -t tmpfs -o size=...`), for full-disk
    tests; skipped where the test cannot mount (not root)."""
    import subprocess

    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk_{size}_{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                               capture_output=True).returncode != 0:
            pytest.skip("needs root to mount a size-capped tmpfs")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """A job run in-process (`setup_logging`) adds console handlers bound to this test's captured stderr, which
    pytest closes afterwards; left on the root logger they would fail every later test's log records."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_collection_modifyitems(items):
    """Test files run longest first, so the two xdist workers (`--dist loadfile`) end together: a long file
    picked up last would leave one worker idle for minutes. file_durations.json holds each file's seconds on
    the 2-core VM (files over 20 s); the others keep collection order. `POLYRET_FILE_DURATIONS=PATH ./run tests`
    writes this run's per-file seconds to PATH, to refresh it."""
    seconds = json.loads((Path(__file__).parent / "file_durations.json").read_text())
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0))


_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Each test file's seconds (setup, call and teardown), summed in the controller as xdist reports arrive."""
    if os.environ.get("POLYRET_FILE_DURATIONS"):
        path = report.nodeid.split("::")[0]
        _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    out = os.environ.get("POLYRET_FILE_DURATIONS")
    if out and _FILE_SECONDS and not hasattr(session.config, "workerinput"):  # the controller, not a worker
        ranked = sorted(((f, round(s)) for f, s in _FILE_SECONDS.items() if s > 20), key=lambda x: -x[1])
        Path(out).write_text(json.dumps(dict(ranked), indent=1) + "\n")
