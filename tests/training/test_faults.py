"""Faults a long run meets, each ending in one line and losing nothing that existed before: SIGTERM
(preemption; one process and two gloo processes: a checkpoint at the step reached, exit 143, the resumed
run bit-identical to an uninterrupted one), a full disk (a real size-capped tmpfs), a damaged latest
checkpoint (falls back to the previous good step), a bad record at line 50,000 of a training file (with
and without skipping) and the exact step of a non-finite loss."""

import json
import os
import random
import re
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from training_helpers import (ROOT, TRAIN_ENV, TrainJob, checkpoint_arrays, checkpoint_steps, last_line,
                              train_argv)

STEPS = 24
# Two processes agree on the stop step through JAX's coordination service, which takes a moment; a tiny step
# takes ~40 ms, so the run needs room after the signal (at 24 steps it could end first).
GLOO_STEPS = 80
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


def _sigterm_then_resume(model_dir: Path, argvs: list[list[str]], step: int, signal_to: list[int],
                         steps: int = STEPS) -> int:
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
    assert step <= stopped < steps
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
        return [train_argv(model_dir, data_dir, GLOO_STEPS, f"--coordinator_address=localhost:{port}",
                           "--num_processes=2", f"--process_id={i}") for i in range(2)]

    reference = tmp_path / "reference"
    procs = [subprocess.Popen(a, env={**os.environ, **TRAIN_ENV}, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for a in argvs(reference)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    model_dir = tmp_path / "model"
    step = random.Random().randint(3, 20)
    _sigterm_then_resume(model_dir, argvs(model_dir), step, [1], GLOO_STEPS)
    _assert_identical(checkpoint_arrays(model_dir, GLOO_STEPS), checkpoint_arrays(reference, GLOO_STEPS))


# ------------------------------------------------------------------------------------------- full disk

@pytest.fixture
def small_disk(capped_disk):
    """A real 2 MiB tmpfs: room for the run's files and two checkpoints of the tiny model (~0.7 MB each), not three."""
    return capped_disk("2m")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_full_disk_keeps_the_previous_checkpoint_and_says_what_it_needed(small_disk, data_dir):
    model_dir = small_disk / "model"
    quiet = ["--gin.train.log_every=1000", "--gin.CheckpointConfig.keep=None"]
    first = _run(train_argv(model_dir, data_dir, 2, "--gin.CheckpointConfig.every=2", *quiet))
    assert first.returncode == 0, first.stderr[-3000:]
    before = _tree(model_dir / "checkpoints")
    assert checkpoint_steps(model_dir) == [1, 2]
    # Resume to step 40 with a checkpoint every 2 steps: the third does not fit.
    proc = _run(train_argv(model_dir, data_dir, 40, "--gin.CheckpointConfig.every=2", *quiet))
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    # Which checkpoint no longer fits depends on the filesystem's block accounting; the message names it.
    match = re.match(rf"polyret train: {re.escape(str(model_dir / 'checkpoints'))}: disk full while writing the "
                     r"checkpoint of step (\d+) \(needs (\d+) bytes", line)
    assert match, line
    failed, needed = int(match[1]), int(match[2])
    assert failed > 2 and failed % 2 == 0
    arrays = checkpoint_arrays(model_dir, 2)
    total = sum(v.nbytes for v in arrays.values())  # parameters and optimizer state, as stored
    assert total - 64 <= needed <= total  # the estimate counts the arrays, not orbax's few scalar leaves
    assert f"; the checkpoint of step {failed - 2} is intact; free space and run the same command again" in line
    assert "Traceback" not in proc.stderr
    after = _tree(model_dir / "checkpoints")
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that existed was touched
    assert checkpoint_steps(model_dir) == [1, *range(2, failed, 2)]
    leftovers = [k for k in after if ".orbax-checkpoint-tmp" in k]
    assert not leftovers, leftovers
    assert all(np.isfinite(v).all() for v in arrays.values())  # and it loads


# ------------------------------------------------------------------------------------ damaged checkpoint

def test_damaged_checkpoints_fall_back_to_the_previous_good_step(tmp_path, data_dir, uninterrupted):
    """Step 8 truncated (a data file cut in half) and step 4 missing a file, as a crashed copy leaves them:
    the run moves both aside with a warning naming the file, resumes from step 1, and ends identical."""
    model_dir = tmp_path / "model"
    proc = _run(train_argv(model_dir, data_dir, 8, "--gin.CheckpointConfig.every=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_steps(model_dir) == [1, 4, 8]
    step8, step4 = model_dir / "checkpoints" / "8", model_dir / "checkpoints" / "4"
    data_files = sorted((p for p in (step8 / "params").rglob("*") if p.is_file() and "/d/" in str(p)),
                        key=lambda p: -p.stat().st_size)
    truncated = data_files[0]
    truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 2])
    missing = step4 / "state" / "manifest.ocdbt"
    missing.unlink()
    damaged = {"8": _tree(step8), "4": _tree(step4)}
    proc = _run(train_argv(model_dir, data_dir, STEPS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The job prints polyret's warnings through Python logging (a "WARNING:<logger>:" prefix when a library
    # has configured the root logger).
    warnings = [re.sub(r"^WARNING:[\w.]+:", "", line) for line in proc.stderr.splitlines()
                if "damaged checkpoint" in line]
    assert len(warnings) == 2, proc.stderr[-3000:]
    assert warnings[0].startswith(f"{step8}/") and "moved the step to" in warnings[0]
    assert warnings[0].endswith(f"{model_dir / 'damaged_checkpoints' / '8'} and resumed from step 1")
    assert warnings[1].startswith(f"{step4}/") and warnings[1].endswith("and resumed from step 1")
    for step, files in damaged.items():  # moved aside, not deleted
        assert _tree(model_dir / "damaged_checkpoints" / step) == files
    _assert_identical(checkpoint_arrays(model_dir, STEPS), uninterrupted)


def test_no_readable_checkpoint_is_refused_in_one_line(tmp_path, data_dir):
    model_dir = tmp_path / "model"
    proc = _run(train_argv(model_dir, data_dir, 1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (model_dir / "checkpoints" / "1" / "params" / "_METADATA").write_text("{")
    before = _tree(model_dir / "checkpoints")
    proc = _run(train_argv(model_dir, data_dir, 4))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith(f"polyret train: {model_dir / 'checkpoints' / '1'}"), line
    assert "damaged checkpoint" in line and "no checkpoint in" in line and "Traceback" not in proc.stderr
    assert _tree(model_dir / "checkpoints") == before  # nothing moved, nothing started from scratch


# ------------------------------------------------------------------------------- bad record, deep inside

BAD_LINE = 50_000
BIG_BATCH = 512


def _big_file(tmp_path: Path, data_dir: Path) -> Path:
    """SWIM-IR JSONL of 50,100 records (the template pairs repeated); line 50,000's query is a number."""
    good = [line for f in sorted((data_dir / "train").glob("swim_ir_*.jsonl")) for line in f.read_text().splitlines()]
    lines = [good[i % len(good)] for i in range(BAD_LINE + 100)]
    bad = json.loads(lines[BAD_LINE - 1])
    bad["query"] = 5
    lines[BAD_LINE - 1] = json.dumps(bad)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _big_file_argv(model_dir: Path, data_dir: Path, path: Path, steps: int, *extra: str) -> list[str]:
    return train_argv(model_dir, data_dir, steps, "--gin.DatasetConfig.setup=@swim_ir_data_setup",
                      f"--gin.swim_ir_data_setup.files={{'big': '{path}'}}",
                      f"--gin.swim_ir_data_setup.vocabulary_path='{data_dir / 'spm.model'}'",
                      "--gin.swim_ir_data_setup.mixture='faulty'", "--gin.MIXTURE_OR_TASK_NAME='faulty'",
                      "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", f"--gin.BATCH_SIZE={BIG_BATCH}",
                      "--gin.DatasetConfig.shuffle=False", "--gin.train.log_every=1000", *extra)


@pytest.mark.slow
def test_bad_record_at_line_50000_checkpoints_then_stops_or_is_skipped(tmp_path, data_dir):
    path = _big_file(tmp_path, data_dir)
    model_dir = tmp_path / "model"
    # Unshuffled, the batches hold lines 1-512, 513-1024, ...: the batch after step 97 holds line 50,000.
    reached = (BAD_LINE - 1) // BIG_BATCH
    proc = _run(_big_file_argv(model_dir, data_dir, path, 200))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc.stderr) == (
        f"polyret train: {path}:{BAD_LINE}: field 'query' has type int; stopped at step {reached} (checkpoint "
        "written); fix the record or set --gin.DatasetConfig.skip_bad_records=True, then run the same command "
        "again to resume")
    assert checkpoint_steps(model_dir) == [1, reached]
    kept = _tree(model_dir / "checkpoints")

    proc = _run(_big_file_argv(model_dir, data_dir, path, reached + 3, "--gin.DatasetConfig.skip_bad_records=True"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipped bad record: {path}:{BAD_LINE}: field 'query' has type int" in proc.stderr
    assert "; skipped 1 bad record (1 field 'query' has type int" in proc.stdout, proc.stdout
    assert checkpoint_steps(model_dir) == [1, reached, reached + 3]
    after = _tree(model_dir / "checkpoints")
    assert {k: v for k, v in after.items() if k in kept} == kept  # the resumed run kept what existed


# ------------------------------------------------------------------------------------- non-finite loss

def test_non_finite_loss_reports_its_exact_step_between_log_steps(tmp_path, data_dir):
    """The learning rate is NaN at step index 5 (the 6th update): the 7th step's loss is the first
    non-finite one. Logs every 3 steps, checkpoints every 5: reported at step 9 as step 7; step 5 kept."""
    (tmp_path / "nan_schedule.py").write_text(
        "import gin\nimport jax.numpy as jnp\n\n\n@gin.configurable\ndef nan_at_step(step=gin.REQUIRED, "
        "base=3e-3):\n    return lambda s: jnp.where(s == step, jnp.nan, base)\n")
    (tmp_path / "nan.gin").write_text("import nan_schedule\ntrain.learning_rate = @nan_at_step()\n"
                                      "nan_at_step.step = 5\n")
    model_dir = tmp_path / "model"
    env = {**os.environ, **TRAIN_ENV, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(train_argv(model_dir, data_dir, 20, f"--gin_file={tmp_path / 'nan.gin'}",
                                     "--gin.train.log_every=3", "--gin.CheckpointConfig.every=5"),
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc.stderr) == (
        f"polyret train: step 7: loss is nan; stopped at step 9. The last good checkpoint (step 5) is kept in "
        f"{model_dir / 'checkpoints'}"), proc.stderr[-1500:]
    assert checkpoint_steps(model_dir) == [1, 5]
    assert all(np.isfinite(v).all() for v in checkpoint_arrays(model_dir, 5).values())
