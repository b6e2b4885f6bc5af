"""Mixed precision: with `dtype='bfloat16'` the matmuls run in bf16 while parameters, gradients and optimizer
state stay float32 and every softmax, norm and the loss run in float32; a tiny run's loss curve tracks the
float32 run; the learning test still passes in bf16; `param_dtype='bfloat16'` stores bf16 parameters."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyret.training.trainer import train_from_gin
from polyret.models import bert, t5, towers
from polyret.models.model_folder import load_model
from polyret.models.retrieval_model import build_model, init_params
from polyret.retrieval.encode import TowerEncoder
from polyret.retrieval.tokenize import Tokenizer
from polyret.training.optimizers import adamw
from test_learning import _recall_at_10
from training_helpers import run_training

T5_BF16 = dataclasses.replace(t5.PRESETS["mt5_tiny"], dtype="bfloat16", dropout_rate=0.0, scan_layers=True)
XLMR_BF16 = dataclasses.replace(bert.PRESETS["xlm_roberta_tiny"], dtype="bfloat16")


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in it (scan bodies, custom_jvp rules, pjit)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _dtypes(vars_):
    return {str(v.aval.dtype) for v in vars_ if hasattr(v.aval, "dtype")}


@pytest.mark.parametrize("encoder,colbert", [(T5_BF16, False), (XLMR_BF16, True)], ids=["mt5-dual", "xlmr-colbert"])
def test_bf16_matmuls_with_float32_params_softmax_norms_and_loss(encoder, colbert):
    cfg = (towers.ColBERTConfig(encoder=encoder, projection_dim=8, query_length=8, query_mask_token_id=3) if colbert
           else towers.DualEncoderConfig(encoder=encoder, projection_dim=8))
    model = build_model(cfg)
    params = model.init(jax.random.PRNGKey(0))[0]
    rng = np.random.default_rng(0)
    batch = {"left_encoder_input_tokens": jnp.asarray(rng.integers(4, 500, (4, 8)), jnp.int32),
             "right_encoder_input_tokens": jnp.asarray(rng.integers(4, 500, (4, 12)), jnp.int32)}
    closed = jax.make_jaxpr(lambda p: model.value_and_grad(p, batch, None))(params)
    (loss, _), grads = jax.eval_shape(lambda p: model.value_and_grad(p, batch, None), params)
    assert loss.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}
    opt_state = jax.eval_shape(adamw(1e-3).init, params)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(opt_state)} <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}

    eqns = list(_equations(closed.jaxpr))
    dots = [e for e in eqns if e.primitive.name == "dot_general"]
    bf16_dots = [e for e in dots if _dtypes(e.invars) == {"bfloat16"}]
    # Forward and backward matmuls of every layer's projections run in bf16 ...
    assert len(bf16_dots) >= 6 * encoder.num_layers, (len(bf16_dots), len(dots))
    # ... while softmax (max, exp), log-softmax (log), the norms (rsqrt) and the loss stay in float32.
    for name in ("log", "rsqrt", "reduce_max"):
        for e in (e for e in eqns if e.primitive.name == name):
            assert _dtypes(e.invars) <= {"float32"}, (name, _dtypes(e.invars))
    # exp: attention softmax (jax.nn.dot_product_attention's logits, [B, Q, heads, group, K] or [B, H, Q, K])
    # and score softmax [B, C] in float32; only the exact GELU's derivative (exp(-x^2) on [B, L, mlp]
    # activations) may run in bf16.
    exps = [e for e in eqns if e.primitive.name == "exp"]
    assert any(e.invars[0].aval.ndim >= 4 and _dtypes(e.invars) == {"float32"} for e in exps)
    for e in exps:
        assert _dtypes(e.invars) == {"float32"} or e.invars[0].aval.ndim == 3, (e.invars[0].aval,)
    # The scores over the batch: a float32 result from float32 embeddings (dot_scores / MaxSim).
    assert any(_dtypes(e.invars) == {"float32"} and _dtypes(e.outvars) == {"float32"} for e in dots)


def test_bf16_parameter_option_stores_bf16_params():
    model = build_model(towers.DualEncoderConfig(encoder=dataclasses.replace(T5_BF16, param_dtype="bfloat16")))
    shapes, _ = model.abstract_params()
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}
    params = model.init(jax.random.PRNGKey(0))[0]
    tokens = jnp.asarray(np.random.default_rng(0).integers(4, 500, (4, 8)), jnp.int32)
    batch = {"left_encoder_input_tokens": tokens, "right_encoder_input_tokens": tokens[::-1]}
    (loss, _), grads = jax.jit(lambda p: model.value_and_grad(p, batch, None))(params)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.slow
def test_bf16_loss_curve_tracks_float32_over_200_steps(tmp_path, data_dir):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        result = train_from_gin(["runs/tiny/swimx_xor.gin"], [
            f"MODEL_DIR='{tmp_path}/{dtype}'", f"DATA_DIR='{data_dir}'", "TRAIN_STEPS=200",
            "CheckpointConfig.every=1000", f"t5_config.dtype='{dtype}'"], progress=False)
        losses[dtype] = np.array(result.losses)
    f32, bf16 = losses["float32"], losses["bfloat16"]
    assert len(f32) == len(bf16) == 200
    assert f32[-20:].mean() < 0.5 * f32[:5].mean()  # it learned (so tracking is not trivially flat)
    per_step = np.abs(bf16 - f32) / f32
    window = np.ones(10) / 10  # the curve: a 10-step moving average (per-step losses jitter with the batch)
    curve32, curve16 = np.convolve(f32, window, "valid"), np.convolve(bf16, window, "valid")
    print(f"bf16 vs fp32 loss over 200 steps: per-step mean {per_step.mean():.2%} max {per_step.max():.2%}; "
          f"10-step curve max {np.max(np.abs(curve16 - curve32) / curve32):.2%}")
    assert np.max(np.abs(curve16 - curve32) / curve32) <= 0.02
    assert per_step.mean() <= 0.01


@pytest.mark.slow
def test_contrastive_learning_test_passes_in_bf16(tmp_path, data_dir):
    """tests/training/test_learning.py's contrastive test with bf16 activations (and scanned layers)."""
    run_training(tmp_path / "out.npz", ["--gin_file=runs/tiny/swimx_miracl.gin", f"--gin.MODEL_DIR='{tmp_path}/m'",
                                        f"--gin.DATA_DIR='{data_dir}'", "--gin.TRAIN_STEPS=300",
                                        "--gin.BATCH_SIZE=32", "--gin.CheckpointConfig.every=300",
                                        "--gin.t5_config.dtype='bfloat16'", "--gin.t5_config.scan_layers=True"])
    params, config, spm = load_model(tmp_path / "m")
    assert config.encoder.dtype == "bfloat16"
    assert {np.asarray(leaf).dtype for leaf in jax.tree_util.tree_leaves(params)} == {np.dtype(np.float32)}
    untrained = init_params(config, jax.random.PRNGKey(1))[0]
    trained, untrained = TowerEncoder(params, config, Tokenizer(spm)), TowerEncoder(untrained, config, Tokenizer(spm))
    report = {lang: (_recall_at_10(untrained, data_dir, lang), _recall_at_10(trained, data_dir, lang))
              for lang in ("en", "de", "ja", "ar")}
    print("bf16 held-out Recall@10 (untrained, trained):", json.dumps(report))
    for lang, (before, after) in report.items():
        assert after >= before + 0.15, (lang, before, after)
