"""benchmarks/gpu_train_step.py runs on CPU at a tiny size (--tiny: tiny models, both sides, JSON written
to --output), and its model FLOPs equal an independent count: the matmul FLOPs (2 x output size x
contracted size of every dot_general) in the jaxpr of the same loss (or encoding) with unrolled layers,
x3 for a training step. XLA's own cost analysis cannot serve: it counts a scanned layer body once."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training_helpers import ROOT

BENCH = ROOT / "benchmarks" / "gpu_train_step.py"


def _dot_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
        repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (list, tuple)) else [value]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += repeat * _dot_flops(inner)
    return total


def _reference_flops(bench, name: str, batch: int) -> int:
    """Matmul FLOPs of the workload's forward, read off the jaxpr with the layers unrolled (x3: training)."""
    w = bench.TINY[name]
    model = bench._ours_model(w, True, "none")
    model = type(model)(dataclasses.replace(model.config, encoder=dataclasses.replace(model.config.encoder,
                                                                                      scan_layers=False)),
                        model.loss)
    params, _ = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    vocab = model.config.encoder.vocab_size
    if not w.train:
        tokens = jnp.asarray(bench._tokens(rng, (batch, w.passage_length), vocab))
        return _dot_flops(jax.make_jaxpr(lambda p: model.encode_documents(p, tokens).vectors)(params).jaxpr)
    batch_data = {"left_encoder_input_tokens": bench._tokens(rng, (batch, w.query_length), vocab)}
    if name == "colbert":
        batch_data["right_encoder_input_tokens"] = bench._tokens(rng, (batch, w.passages_per_query,
                                                                       w.passage_length), vocab)
        batch_data["teacher_scores"] = np.zeros((batch, w.passages_per_query), np.float32)
        batch_data["passage_languages"] = np.zeros((batch, w.passages_per_query), np.int32)
    else:
        batch_data["right_encoder_input_tokens"] = bench._tokens(rng, (batch, w.passage_length), vocab)
    forward = jax.make_jaxpr(lambda p: model.loss_value(p, batch_data, deterministic=True)[0])(params)
    return 3 * _dot_flops(forward.jaxpr)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--output", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ratio ours/PyTorch" in proc.stdout
    return json.loads(out.read_text())


def test_tiny_run_writes_every_workload_for_both_sides(report):
    assert set(report["results"]) == {"dual", "colbert", "encode"}
    for name, result in report["results"].items():
        for side in ("ours", "torch"):
            shared = result[side]["shared"]
            assert shared is not None and shared["seconds_per_step"] > 0, (name, side)
        assert result["ratio_shared"] > 0 and result["ratio_largest"] > 0


def test_model_flops_equal_the_unrolled_jaxpr_count(report):
    sys.path.insert(0, str(BENCH.parent))
    try:
        import gpu_train_step as bench
    finally:
        sys.path.pop(0)
    for name, result in report["results"].items():
        for which in ("shared", "largest"):
            row = result["ours"][which]
            assert row["flops_per_step"] == _reference_flops(bench, name, row["batch"]), (name, which)
