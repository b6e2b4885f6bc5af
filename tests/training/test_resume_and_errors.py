"""Kill-and-resume (SIGKILL after a checkpoint) ends where an uninterrupted run ends; configuration
mistakes fail with one line before compilation. (The paper runs' settings: tests/seqio_tasks/test_paper_recipes.py.)"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from training_helpers import HELPER, ROOT, load_result, run_training


def _flags(model_dir, data_dir, steps=8):
    return ["--gin_file=runs/tiny/swimx_xor.gin", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.CheckpointConfig.every=2", "--gin.t5_config.dropout_rate=0.1"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, data_dir):
    run_training(tmp_path / "full.npz", _flags(tmp_path / "full", data_dir))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    model_dir = tmp_path / "killed"
    # A slow-down hook is not needed: poll for the step-4 checkpoint and kill at once.
    proc = subprocess.Popen([sys.executable, str(HELPER), str(tmp_path / "x.npz")] + _flags(model_dir, data_dir, 400),
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (model_dir / "checkpoints" / "4" / "commit_success.txt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its step-4 checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert 4 in steps and max(steps) < 400
    run_training(tmp_path / "resumed.npz", _flags(model_dir, data_dir, 8))
    full_losses, full = load_result(tmp_path / "full.npz")
    resumed_losses, resumed = load_result(tmp_path / "resumed.npz")
    np.testing.assert_allclose(resumed_losses, full_losses[-len(resumed_losses):], rtol=1e-5)
    for key in full:
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("flags,message", [
    (["--gin.no_such_fn.x=3"], "gin configuration error: No configurable matching 'no_such_fn'"),
    (["--gin.create_mesh.data=3"], "create_mesh: mesh {'data': 3, 'fsdp': 1, 'model': 1} needs 3 devices but there are 2"),
    (["--gin.BATCH_SIZE=15"], "batch size 15 is not divisible by the 2 batch shards"),
    (["--gin.t5_config.vocab_size=256"], "uses a vocabulary of 500 ids but the model embeds only 256"),
])
def test_configuration_errors_are_one_line_before_compiling(tmp_path, data_dir, flags, message):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-m", "polyret.jobs.train", "--gin_file=runs/tiny/swimx_xor.gin",
                           f"--gin.MODEL_DIR='{tmp_path}/m'", f"--gin.DATA_DIR='{data_dir}'"] + flags,
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("polyret train: ") and message in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m" / "checkpoints").exists()
