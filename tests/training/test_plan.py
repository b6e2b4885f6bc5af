"""`polyret plan`: per-device memory from the run's gin alone (abstract shapes) against the trainer's real
step compiled with real parameters, optimizer state and a real batch on the same simulated mesh."""

import json
import os
import subprocess
import sys

import pytest

from training_helpers import ROOT

PROBE = ROOT / "tests" / "training" / "plan_probe.py"

CASES = {
    # dual encoder, Adafactor-free tiny run (AdamW), FSDP over 2 x data 2
    "swimx_xor-data2-fsdp2": ("runs/tiny/swimx_xor.gin", "data=2,fsdp=2",
                              ["logical_axis_rules.preset='fsdp'", "t5_config.scan_layers=True",
                               "t5_config.remat_policy='full'"]),
    # ColBERT distillation ([B, K, L] passages), FSDP + tensor parallel on a 1 x 2 x 2 mesh
    "mtd_colbert-fsdp2-model2": ("runs/tiny/mtd_colbert.gin", "data=1,fsdp=2,model=2",
                                 ["logical_axis_rules.preset='fsdp_tensor_parallel'"]),
}


def _probe(tmp_path, gin_file, mesh, bindings, data_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(PROBE), gin_file, str(data_dir), str(tmp_path / "m"), mesh, *bindings],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(CASES))
def test_plan_matches_the_real_compiled_step(tmp_path, data_dir, case):
    gin_file, mesh, bindings = CASES[case]
    result = _probe(tmp_path, gin_file, mesh, bindings, data_dir)
    plan, real = result["plan"], result["real"]
    print(case, json.dumps(result))
    # State sizes are exact: the real arrays' shards on device 0.
    assert plan["params"] == real["params"] and plan["optimizer"] == real["optimizer"]
    assert plan["batch"] == real["batch"]
    # XLA's analysis of the plan's abstract compile vs the real step's, within 10%.
    for key in ("argument", "output", "alias", "temp"):
        assert abs(plan[key] - real[key]) <= 0.10 * real[key], (key, plan[key], real[key])
    real_peak = real["argument"] + real["output"] - real["alias"] + real["temp"]
    assert abs(plan["peak"] - real_peak) <= 0.10 * real_peak


@pytest.mark.parametrize("preset", ["fsdp", "fsdp_tensor_parallel"])
def test_fsdp_rules_keep_the_activation_batch_sharded(preset):
    """flax assigns rules in order and each mesh axis once: the batch rule must win over ('embed', 'fsdp'),
    or activations [batch, length, embed] are split on embed with the batch replicated over fsdp."""
    from flax import linen as nn
    from jax.sharding import PartitionSpec as P
    from polyret.training.partitioning import logical_axis_rules
    rules = logical_axis_rules(preset)
    assert nn.logical_to_mesh_axes(("batch", "length", "embed"), rules) == P(("data", "fsdp"), None, None)
    assert nn.logical_to_mesh_axes(("vocab", "embed"), rules)[1] == "fsdp"  # parameters still FSDP-sharded


@pytest.mark.parametrize("flags,message", [
    (["--mesh", "data=two"], "--mesh: mesh 'data=two': 'data=two' is not AXIS=SIZE"),
    (["--mesh", "data=2", "--accelerator", "tpu-v9"], "--accelerator 'tpu-v9' is not one of"),
])
def test_plan_job_refuses_bad_flags_in_one_line(flags, message):
    proc = subprocess.run([sys.executable, "-m", "polyret.jobs.plan", "--gin_file=runs/tiny/swimx_xor.gin", *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_auto_remat_policy_is_the_cheapest_that_fits(monkeypatch):
    """`--remat_policy auto`: policies are tried cheapest in compute first and the first whose peak fits is
    chosen; the memory order is the one remat promises (none > dots_saveable >= full)."""
    from polyret.training import plan
    run = plan.read_run(["runs/tiny/swimx_xor.gin"], ["BATCH_SIZE=32", "t5_config.scan_layers=True",
                                                      "TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 128}"])
    mesh = plan.parse_mesh("data=1")
    monkeypatch.setitem(plan.ACCELERATORS, "test-chip", 0.0)  # nothing fits: every policy is planned
    chosen, plans = plan.cheapest_remat_policy(run, mesh, "test-chip")
    assert chosen is None and list(plans) == list(plan.REMAT_POLICIES)
    peaks = {policy: result.peak for policy, result in plans.items()}
    assert peaks["none"] > peaks["dots_saveable"] >= peaks["full"]
    budget = peaks["dots_saveable"] * 1.01  # fits dots_saveable (and full), not none
    monkeypatch.setitem(plan.ACCELERATORS, "test-chip", budget / (1 - plan.HEADROOM) / plan.GIB)
    chosen, plans = plan.cheapest_remat_policy(run, mesh, "test-chip")
    assert chosen == "dots_saveable" and list(plans) == ["none", "dots_saveable"]


def test_plan_gives_index_bytes_at_each_matryoshka_width():
    """A MatryoshkaLoss run (here inside a CachedLoss) is planned at its full width and each of its dims."""
    from polyret.retrieval.scann_index import index_bytes
    from polyret.training import plan
    try:
        run = plan.read_run(["runs/tiny/swimx_xor.gin"], [
            "train.loss=@CachedLoss()", "CachedLoss.loss=@MatryoshkaLoss()", "MatryoshkaLoss.dims=(8, 4, 1000)"])
        width = run.model_config.projection_dim or run.model_config.encoder.d_model
        assert width == 16 and plan.vector_widths(run) == (16, 8, 4)  # a dim wider than the model is not a width
    finally:
        import gin
        gin.clear_config()
    assert index_bytes(1_000_000, 4) < index_bytes(1_000_000, 8) < index_bytes(1_000_000, 16)
