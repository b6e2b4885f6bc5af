"""LoRA runs save only the adapters and keep the base frozen; a diverging run stops with a clear message;
every tiny recipe variant trains (in this process, 2 steps each)."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from polyret.models.model_folder import load_model, save_model
from polyret.models.t5 import PRESETS
from polyret.models.retrieval_model import init_params
from polyret.models.towers import DualEncoderConfig
from training_helpers import run_training


def test_lora_run_checkpoints_only_adapters_and_keeps_base(tmp_path, data_dir):
    base_cfg = DualEncoderConfig(encoder=PRESETS["mt5_tiny"], projection_dim=16, logit_scale=20.0)
    base_params, _ = init_params(base_cfg, jax.random.PRNGKey(3))
    save_model(tmp_path / "base", base_params, base_cfg, data_dir / "spm.model")
    run_training(tmp_path / "out.npz", ["--gin_file=runs/tiny/retrofit_hard_negatives_lora.gin",
                                        f"--gin.MODEL_DIR='{tmp_path}/lora'", f"--gin.DATA_DIR='{data_dir}'",
                                        f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path}/base'", "--gin.TRAIN_STEPS=6"])
    saved = ocp.StandardCheckpointer().restore(tmp_path / "lora" / "checkpoints" / "6" / "params")
    saved_keys = {"/".join(k) for k in traverse_util.flatten_dict(saved)}
    assert saved_keys and all(k.endswith(("lora_a", "lora_b")) for k in saved_keys)
    assert any("layers_1/attention/value" in k for k in saved_keys)
    assert json.loads((tmp_path / "lora" / "lora_base.json").read_text())["base_checkpoint"] == str(tmp_path / "base")
    merged, cfg, _ = load_model(tmp_path / "lora")
    assert cfg.encoder.lora is not None and cfg.encoder.lora.rank == 8
    flat_merged, flat_base = traverse_util.flatten_dict(merged), traverse_util.flatten_dict(base_params)
    for key, value in flat_base.items():  # the base is frozen
        np.testing.assert_array_equal(flat_merged[key], np.asarray(value), err_msg="/".join(key))
    assert any(np.abs(v).max() > 0 for k, v in flat_merged.items() if k[-1] == "lora_b")  # adapters trained


def test_diverging_run_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    proc = run_training(tmp_path / "o.npz", ["--gin_file=runs/tiny/swimx_xor.gin", f"--gin.MODEL_DIR='{tmp_path}/m'",
                                             f"--gin.DATA_DIR='{data_dir}'", "--gin.TRAIN_STEPS=50",
                                             "--gin.CheckpointConfig.every=1",
                                             "--gin.learning_rate_schedule.base_learning_rate=1e30"], check=False)
    assert proc.returncode != 0
    message = [l for l in proc.stderr.splitlines() if "FloatingPointError" in l][-1]
    assert "loss is nan" in message or "loss is inf" in message
    good = int(message.split("(step ")[1].split(")")[0])
    assert (tmp_path / "m" / "checkpoints" / str(good) / "params").is_dir()


@pytest.mark.parametrize("run", ["swimx_mc4_pretrain", "swimx_xtreme_up", "mtd_colbert_mix_entries",
                                 "mtd_colbert_round_robin"])
def test_tiny_variants_train(tmp_path, data_dir, run):
    from polyret.training.trainer import train_from_gin
    result = train_from_gin([f"runs/tiny/{run}.gin"], [f"MODEL_DIR='{tmp_path}/m'", f"DATA_DIR='{data_dir}'",
                                                       "TRAIN_STEPS=2"], progress=False)
    assert result.step == 2 and all(np.isfinite(result.losses))
    assert (tmp_path / "m" / "checkpoints" / "2" / "params").is_dir()


def test_a_model_dimension_set_in_gin_trains(tmp_path, data_dir):
    from polyret.training.trainer import train_from_gin
    result = train_from_gin(["runs/tiny/swimx_xor.gin"], [
        f"MODEL_DIR='{tmp_path}/m'", f"DATA_DIR='{data_dir}'", "TRAIN_STEPS=2", "t5_config.d_model=64"],
        progress=False)
    assert result.step == 2 and all(np.isfinite(result.losses))
    config = json.loads((tmp_path / "m" / "model_config.json").read_text())
    assert config["encoder"]["d_model"] == 64
    assert result.params["token_embedder"]["embedding"].shape[1] == 64
