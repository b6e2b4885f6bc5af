"""The same 5-step run on 1 device and on 8 simulated devices (data parallel, FSDP, tensor parallel), and
on two real processes over gloo, gives the same losses and parameters."""

import socket

import numpy as np
import pytest

from training_helpers import load_result, run_training

pytestmark = pytest.mark.slow


def _flags(model_dir, data_dir, partitioning=None, steps=5):
    flags = ["--gin_file=runs/tiny/swimx_xor.gin", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'",
             f"--gin.TRAIN_STEPS={steps}", "--gin.CheckpointConfig.every=100"]
    if partitioning:
        flags.insert(1, f"--gin_file=partitioning/{partitioning}.gin")
    return flags


@pytest.fixture(scope="module")
def single_device(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("single")
    run_training(tmp / "out.npz", _flags(tmp / "model", data_dir))
    return load_result(tmp / "out.npz")


def _assert_same(a, b, rtol=2e-4, atol=2e-5):
    losses_a, params_a = a
    losses_b, params_b = b
    np.testing.assert_allclose(losses_a, losses_b, rtol=rtol, atol=atol)
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        np.testing.assert_allclose(params_a[key], params_b[key], rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("partitioning", ["data_parallel", "fsdp", "tensor_parallel"])
def test_eight_devices_match_one(tmp_path, data_dir, single_device, partitioning):
    run_training(tmp_path / "out.npz", _flags(tmp_path / "model", data_dir, partitioning), devices=8)
    assert int(np.load(tmp_path / "out.npz")["devices"]) == 8
    _assert_same(single_device, load_result(tmp_path / "out.npz"))


def test_two_processes_match_one(tmp_path, data_dir):
    import subprocess, sys, os
    from training_helpers import HELPER, ROOT
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = []
    for pid in range(2):
        flags = _flags(tmp_path / "model", data_dir) + [
            "--gin.DatasetConfig.shuffle=False", "--gin.MIXTURE_OR_TASK_NAME='template_pairs_cross_lingual_de'",
            f"--coordinator_address=localhost:{port}", "--num_processes=2",
            f"--process_id={pid}"]
        procs.append(subprocess.Popen([sys.executable, str(HELPER), str(tmp_path / f"out{pid}.npz")] + flags,
                                      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]
    assert int(np.load(tmp_path / "out0.npz")["processes"]) == 2
    # Unshuffled single task, single-process reference: host h reads examples h, h+2, ..., so each global
    # batch holds the same examples as the single process's batch (the loss does not depend on their order).
    run_training(tmp_path / "ref.npz", _flags(tmp_path / "ref_model", data_dir) + [
        "--gin.DatasetConfig.shuffle=False", "--gin.MIXTURE_OR_TASK_NAME='template_pairs_cross_lingual_de'"])
    _assert_same(load_result(tmp_path / "ref.npz"), load_result(tmp_path / "out0.npz"))
