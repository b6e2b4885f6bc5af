"""Faults a long run meets, each ending in one line and losing nothing that existed before: SIGTERM
(preemption; one process and two gloo processes: a checkpoint at the step reached, exit 143, the resumed
run bit-identical to an uninterrupted one), a full disk (a real size-capped tmpfs), a damaged latest
checkpoint (falls back to the previous good step), a bad record at line 50,000 of a training file (with
and without skipping) and the exact step of a non-finite loss."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training_helpers import (ROOT, TRAIN_ENV, TrainJob, checkpoint_arrays, checkpoint_steps, last_line,
                              train_argv)

STEPS = 24
PREEMPTED = "preempted at step {}; checkpoint written; rerun the same command to resume"


def _run(argv: list[str], devices: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **TRAIN_ENV, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir) -> dict:
    """Parameters and optimizer state after STEPS steps of an uninterrupted run."""
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "model"
    proc = _run(train_argv(model_dir, data_dir, STEPS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return checkpoint_arrays(model_dir, STEPS)


def _sigterm_then_resume(model_dir: Path, argvs: list[list[str]], step: int, signal_to: list[int]) -> int:
    """Start the processes, SIGTERM `signal_to` once process 0's bar shows `step`; check each stopped with
    143 and the one line at the same step, and that step's checkpoint is the latest; rerun to the end.
    Returns the step the checkpoint was written at."""
    jobs = [TrainJob(argv) for argv in argvs]
    assert jobs[0].wait_for_step(step), jobs[0].finish()[1][-3000:]
    for i in signal_to:
        os.kill(jobs[i].proc.pid, signal.SIGTERM)
    reached = set()
    for job in jobs:
        code, stderr = job.finish()
        assert code == 143, stderr[-3000:]
        line = last_line(stderr)
        assert line.startswith("polyret train: preempted at step "), line
        reached.add(int(line.split("preempted at step ")[1].split(";")[0]))
    assert len(reached) == 1, reached  # every host saved the same step
    (stopped,) = reached
    assert step <= stopped < STEPS
    assert last_line(jobs[0].stderr.decode()) == "polyret train: " + PREEMPTED.format(stopped)
    assert checkpoint_steps(model_dir)[-1] == stopped  # the step reached, committed
    assert (model_dir / "checkpoints" / str(stopped) / "_CHECKPOINT_METADATA").exists()
    resumed = [subprocess.Popen(argv, env={**os.environ, **TRAIN_ENV,
                                           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for argv in argvs]
    for p in resumed:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return stopped


def test_sigterm_checkpoints_the_step_reached_and_resumes_identically(tmp_path, data_dir, uninterrupted):
    model_dir = tmp_path / "model"
    step = random.Random().randint(3, STEPS - 6)  # a random step; the run may finish one or two more
    stopped = _sigterm_then_resume(model_dir, [train_argv(model_dir, data_dir, STEPS)], step, [0])
    assert stopped >= step
    _assert_identical(checkpoint_arrays(model_dir, STEPS), uninterrupted)


@pytest.mark.slow
def test_sigterm_to_one_of_two_gloo_processes(tmp_path, data_dir):
    """SIGTERM to process 1 only: JAX's preemption sync point makes both save the same step."""
    def argvs(model_dir):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        return [train_argv(model_dir, data_dir, STEPS, f"--coordinator_address=localhost:{port}",
                           "--num_processes=2", f"--process_id={i}") for i in range(2)]

    reference = tmp_path / "reference"
    procs = [subprocess.Popen(a, env={**os.environ, **TRAIN_ENV}, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for a in argvs(reference)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    model_dir = tmp_path / "model"
    step = random.Random().randint(3, STEPS - 8)
    _sigterm_then_resume(model_dir, argvs(model_dir), step, [1])
    _assert_identical(checkpoint_arrays(model_dir, STEPS), checkpoint_arrays(reference, STEPS))
