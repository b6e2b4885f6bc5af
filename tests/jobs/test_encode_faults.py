"""encode under SIGTERM and on a full disk: it stops after the shard in flight (exit 143, one line) or at the
shard that does not fit (exit 1, one line naming the folder and the bytes), the finished shards are kept
byte for byte, and the rerun ends identical to an uninterrupted run."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from polyret.jobs import encode as job


def _args(ckpt, corpus, out):
    return ["--checkpoint", str(ckpt), "--corpus", str(corpus), "--output_dir", str(out), "--shard_size", "4",
            "--max_length", "24", "--batch_size", "4"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _last_err(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("polyret encode:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def reference(tiny_data, tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("encode_ref") / "emb"
    assert job.main(_args(tiny_checkpoints["a"], tiny_data["corpus"] / "de.jsonl", out)) == 0
    return _tree(out)


def test_sigterm_stops_after_the_shard_in_flight(tiny_data, tiny_checkpoints, tmp_path, reference, capsys):
    out = tmp_path / "emb"

    def signal_after_first_shard():
        while not list(out.glob("shard-*.ids")):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, which is encoding

    threading.Thread(target=signal_after_first_shard, daemon=True).start()
    assert job.main(_args(tiny_checkpoints["a"], tiny_data["corpus"] / "de.jsonl", out)) == 143
    line = _last_err(capsys)
    done = int(line.split("stopped after ")[1].split(" of ")[0])
    assert line == (f"polyret encode: stopped after {done} of 15 shards; finished shards are kept in {out}; "
                    "rerun the same command to resume")
    partial = _tree(out)
    assert 1 <= done < 15 and sum(name.endswith(".ids") for name in partial) == done
    assert all(reference[name] == data for name, data in partial.items())  # finished shards, byte for byte
    assert job.main(_args(tiny_checkpoints["a"], tiny_data["corpus"] / "de.jsonl", out)) == 0
    assert _tree(out) == reference


@pytest.fixture
def tiny_disk(capped_disk):
    return capped_disk("48k")


def test_full_disk_keeps_the_finished_shards(tiny_data, tiny_checkpoints, tiny_disk, reference, capsys):
    """A real 48 KiB tmpfs: a file takes at least a 4 KiB page, so a few of the 15 shards fit."""
    out = tiny_disk / "emb"
    assert job.main(_args(tiny_checkpoints["a"], tiny_data["corpus"] / "de.jsonl", out)) == 1
    line = _last_err(capsys)
    assert line.startswith(f"polyret encode: {out}: disk full while writing shard ") and "(needs " in line
    assert line.endswith("; the finished shards are kept; free space and run the same command again")
    partial = _tree(out)
    assert all(reference[name] == data for name, data in partial.items())  # no half shard, no temp file
    assert 0 < sum(name.endswith(".ids") for name in partial) < 15
