"""A run trained with scanned, rematerialised layers resumes with the plain loop (and the reverse), on two
simulated devices with FSDP, and ends where an uninterrupted loop run ends: one checkpoint layout,
optimizer state included."""

import numpy as np
import pytest

from training_helpers import load_result, run_training

pytestmark = pytest.mark.slow

SCAN = ["--gin.t5_config.scan_layers=True", "--gin.t5_config.remat_policy='full'"]


def _flags(model_dir, data_dir, steps):
    return ["--gin_file=runs/tiny/swimx_xor.gin", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.CheckpointConfig.every=2", "--gin.t5_config.dropout_rate=0.0",
            "--gin.create_mesh.data=1", "--gin.create_mesh.fsdp=2", "--gin.logical_axis_rules.preset='fsdp'"]


def test_scan_checkpoint_resumes_in_loop_and_back(tmp_path, data_dir):
    run_training(tmp_path / "loop.npz", _flags(tmp_path / "loop", data_dir, 6), devices=2)
    mixed = tmp_path / "mixed"
    run_training(tmp_path / "a.npz", _flags(mixed, data_dir, 2) + SCAN, devices=2)
    run_training(tmp_path / "b.npz", _flags(mixed, data_dir, 4), devices=2)
    run_training(tmp_path / "c.npz", _flags(mixed, data_dir, 6) + SCAN, devices=2)
    loop_losses, loop = load_result(tmp_path / "loop.npz")
    mixed_losses = np.concatenate([load_result(tmp_path / f"{part}.npz")[0] for part in "abc"])
    _, mixed_params = load_result(tmp_path / "c.npz")
    np.testing.assert_allclose(mixed_losses, loop_losses, rtol=1e-4)
    assert mixed_params.keys() == loop.keys()
    for key in loop:
        np.testing.assert_allclose(mixed_params[key], loop[key], rtol=1e-4, atol=1e-5, err_msg=key)
