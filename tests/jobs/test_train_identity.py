"""A training run keeps its identity: resuming with a changed (shape-compatible) model config is refused in
one line and model_config.json is left as the checkpoints need it; an INITIAL_CHECKPOINT_PATH with another
layer count or of another tower is refused, naming the parameters (issue 15, item 3)."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from polyret.models.model_folder import save_model
from polyret.models.retrieval_model import init_params
from polyret.models.t5 import PRESETS
from polyret.models.towers import ColBERTConfig, DualEncoderConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from polyret.seqio_tasks.template_tasks import template_data_setup
    folder = tmp_path_factory.mktemp("template_data")
    template_data_setup(folder, num_entities=60)
    return folder


def _train(model_dir, data_dir, *flags, steps=2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.run([sys.executable, "-m", "polyret.jobs.train", "--gin_file=runs/tiny/swimx_xor.gin",
                           f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'", f"--gin.TRAIN_STEPS={steps}",
                           "--gin.CheckpointConfig.every=2", *flags],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _one_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def test_resume_with_another_pooling_is_refused(tmp_path, data_dir):
    model_dir = tmp_path / "run"
    assert _train(model_dir, data_dir).returncode == 0
    before = (model_dir / "model_config.json").read_text()
    steps = sorted(p.name for p in (model_dir / "checkpoints").iterdir())
    line = _one_line(_train(model_dir, data_dir, "--gin.DualEncoderConfig.pooling='first'",
                            "--gin.DualEncoderConfig.l2_norm=False", steps=4))
    assert line.startswith("polyret train: ") and "pooling" in line and "l2_norm" in line, line
    assert (model_dir / "model_config.json").read_text() == before  # older checkpoints keep their head
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == steps  # nothing trained


def _checkpoint(folder: Path, config) -> Path:
    return save_model(folder, init_params(config, jax.random.PRNGKey(0))[0], config)


def test_initial_checkpoint_with_another_layer_count_is_refused(tmp_path, data_dir):
    one_layer = _checkpoint(tmp_path / "one_layer", DualEncoderConfig(
        encoder=dataclasses.replace(PRESETS["mt5_tiny"], num_layers=1), projection_dim=16))
    line = _one_line(_train(tmp_path / "a", data_dir, f"--gin.INITIAL_CHECKPOINT_PATH='{one_layer}'"))
    assert "INITIAL_CHECKPOINT_PATH" in line and "layers_1" in line, line
    assert not (tmp_path / "a" / "checkpoints").exists() or not any((tmp_path / "a" / "checkpoints").iterdir())


def test_initial_checkpoint_of_another_tower_is_refused(tmp_path, data_dir):
    colbert = _checkpoint(tmp_path / "colbert", ColBERTConfig(encoder=PRESETS["mt5_tiny"], projection_dim=16,
                                                              query_length=16, query_mask_token_id=3))
    line = _one_line(_train(tmp_path / "b", data_dir, f"--gin.INITIAL_CHECKPOINT_PATH='{colbert}'"))
    assert "INITIAL_CHECKPOINT_PATH" in line and "colbert" in line.lower(), line
