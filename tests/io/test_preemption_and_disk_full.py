"""The shared fault pieces without JAX: SIGTERM/SIGINT recorded (not fatal) inside `graceful_stop`, nested
guards sharing one flag, the handlers given back; and a resumable output on a real full disk (a 64 KiB
tmpfs) stopping with one line while the records written before stay and a rerun continues."""

import json
import os
import signal

import pytest

from polyret.errors import DiskFull, Preempted
from polyret.io import preemption
from polyret.synthesis.resumable import ResumableFiles


def test_signals_are_recorded_inside_the_guard_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with preemption.graceful_stop():
        preemption.stop_if_requested("not reached")  # nothing asked yet
        with preemption.graceful_stop():  # a trainer inside a study
            os.kill(os.getpid(), signal.SIGTERM)  # the process lives on
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal while "saving": only recorded
            assert preemption.requested() == signal.SIGTERM
            with pytest.raises(Preempted) as inner:
                preemption.stop_if_requested("preempted at step 3; checkpoint written; rerun the same command")
        assert preemption.requested() == signal.SIGTERM  # the study sees it too
    assert inner.value.signum == signal.SIGTERM and preemption.exit_status(inner.value.signum) == 143
    assert str(inner.value) == "preempted at step 3; checkpoint written; rerun the same command"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert preemption.requested() is None
    with preemption.graceful_stop():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: no KeyboardInterrupt mid-work
        assert preemption.requested() == signal.SIGINT
    assert preemption.exit_status(signal.SIGINT) == 130


@pytest.fixture
def tiny_disk(capped_disk):
    return capped_disk("64k")


def test_resumable_output_on_a_full_disk_keeps_what_was_recorded(tiny_disk):
    out, state = tiny_disk / "out.jsonl", tiny_disk / "out.jsonl.state.json"
    files = ResumableFiles({"records": out}, state, {"run": 1})
    chunk = [json.dumps({"i": i, "text": "x" * 900}) for i in range(8)]  # ~7 KiB a chunk
    done = 0
    with pytest.raises(DiskFull) as error:
        while True:
            files.append({"records": chunk}, {"done": done + len(chunk)})
            done += len(chunk)
    message = str(error.value)
    assert message.startswith(f"{tiny_disk}: disk full while writing ") and "(needs " in message
    assert "\n" not in message
    recorded = json.loads(state.read_text())
    assert recorded["progress"] == {"done": done} and done > 0
    # A rerun (after space was freed) cuts the half-written chunk off and continues from the record.
    resumed = ResumableFiles({"records": out}, state, {"run": 1})
    assert resumed.progress == {"done": done}
    assert [json.loads(line)["i"] for line in resumed.lines("records")] == list(range(8)) * (done // 8)
