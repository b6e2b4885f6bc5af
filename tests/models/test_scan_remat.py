"""Scanned and rematerialised encoder layers (polyret/models/layer_stack.py) against the plain Python loop,
which is the reference: same loss and gradients, one parameter layout, interchangeable checkpoints and
identical exports; remat cuts XLA's temporary memory of the train step."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from polyret.models import bert, t5, towers
from polyret.models.model_folder import load_model, save_model
from polyret.models.lora import LoraConfig
from polyret.models.retrieval_model import build_model, export_hf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

T5_4 = dataclasses.replace(t5.PRESETS["mt5_tiny"], num_layers=4, dropout_rate=0.0)
T5_RELU_4 = dataclasses.replace(T5_4, activation="relu")
XLMR_4 = dataclasses.replace(bert.PRESETS["xlm_roberta_tiny"], num_layers=4, hidden_dropout_rate=0.0,
                             attention_dropout_rate=0.0)


def _model(encoder, colbert=False, **stack):
    encoder = dataclasses.replace(encoder, **stack)
    if colbert:
        return build_model(towers.ColBERTConfig(encoder=encoder, projection_dim=8, query_length=8,
                                                query_mask_token_id=3))
    return build_model(towers.DualEncoderConfig(encoder=encoder, projection_dim=8, logit_scale=20.0))


def _batch(length_q=8, length_p=12, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.integers(4, 500, (batch, length_q))
    p = rng.integers(4, 500, (batch, length_p))
    q[:, -2:] = 0  # some padding, so the masks matter
    p[1:, -3:] = 0
    return {"left_encoder_input_tokens": jnp.asarray(q, jnp.int32),
            "right_encoder_input_tokens": jnp.asarray(p, jnp.int32)}


def _flat(tree):
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def _assert_same_grads(got, want, rtol=1e-5):
    """Every leaf within rtol of the reference, measured against the leaf's scale (its largest magnitude):
    the loop and the scanned body are fused differently, so float32 sums are reassociated, and an element
    that cancels to ~0 carries a large *elementwise* relative error (seen: 1e-4 at 5e-3 beside 1.3).
    Leaves whose true gradient is zero (BERT's key bias: softmax ignores it) are float32 noise (~1e-11):
    they are held to 1e-7 of the largest gradient."""
    got, want = _flat(got), _flat(want)
    assert got.keys() == want.keys()
    floor = 1e-7 * max(np.abs(v).max() for v in want.values())
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol,
                                   atol=max(rtol * np.abs(want[name]).max(), floor), err_msg=name)


def _has_scan(fn, *args) -> bool:
    return "scan" in str(jax.make_jaxpr(fn)(*args))


CASES = {  # every family and tower kind, every policy, scanned and looped
    "mt5-dual-scan": (T5_4, False, dict(scan_layers=True)),
    "t5relu-colbert-scan+full": (T5_RELU_4, True, dict(scan_layers=True, remat_policy="full")),
    "mt5-dual-loop+dots": (T5_4, False, dict(remat_policy="dots_saveable")),
    "xlmr-dual-scan+dots": (XLMR_4, False, dict(scan_layers=True, remat_policy="dots_saveable")),
    "xlmr-colbert-scan": (XLMR_4, True, dict(scan_layers=True)),
    "xlmr-colbert-loop+full": (XLMR_4, True, dict(remat_policy="full")),
    "mt5-dual-scan+offload": (T5_4, False, dict(scan_layers=True, remat_policy="offload_dots")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scan_and_remat_match_the_loop(case):
    encoder, colbert, stack = CASES[case]
    loop, other = _model(encoder, colbert), _model(encoder, colbert, **stack)
    params, specs = loop.init(jax.random.PRNGKey(0))
    other_params, other_specs = other.init(jax.random.PRNGKey(0))
    # One layout and one set of logical axes, and the same initial weights for a seed.
    assert jax.tree_util.tree_structure(other_specs) == jax.tree_util.tree_structure(specs)
    assert jax.tree_util.tree_leaves(other_specs) == jax.tree_util.tree_leaves(specs)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(other_params),
                                                   jax.tree_util.tree_leaves(params)))
    abstract = other.abstract_params()[0]
    assert jax.tree_util.tree_map(lambda s: s.shape, abstract) == jax.tree_util.tree_map(jnp.shape, params)

    batch = _batch()
    (loss, _), grads = jax.jit(lambda p: loop.value_and_grad(p, batch, None))(params)
    fn = lambda p: other.value_and_grad(p, batch, None)
    (other_loss, _), other_grads = jax.jit(fn)(params)
    np.testing.assert_allclose(float(other_loss), float(loss), rtol=1e-5)
    _assert_same_grads(other_grads, grads)
    assert _has_scan(fn, params) == bool(stack.get("scan_layers"))


def test_scan_with_lora_and_dropout():
    lora = LoraConfig(rank=2, alpha=4.0)
    encoder = dataclasses.replace(T5_4, lora=lora, dropout_rate=0.1)
    loop, scan = _model(encoder), _model(encoder, scan_layers=True)
    params = loop.init(jax.random.PRNGKey(0))[0]
    assert "lora_a" in params["encoder"]["layers_3"]["attention"]["query"]
    params = jax.tree_util.tree_map(lambda x: x + 0.01, params)  # lora_b starts at zero: make it count
    batch = _batch()
    # Without a dropout key dropout is off: scan equals the loop, adapters included.
    (loss, _), grads = jax.jit(lambda p: loop.value_and_grad(p, batch, None))(params)
    step = jax.jit(lambda p, rng: scan.value_and_grad(p, batch, rng))
    (scan_loss, _), scan_grads = jax.jit(lambda p: scan.value_and_grad(p, batch, None))(params)
    np.testing.assert_allclose(float(scan_loss), float(loss), rtol=1e-5)
    _assert_same_grads(scan_grads, grads)
    # With a key, dropout runs inside the scanned body: a different loss, per-layer masks differ.
    (dropped, _), _ = step(params, jax.random.PRNGKey(3))
    assert np.isfinite(float(dropped)) and abs(float(dropped) - float(loss)) > 1e-4


@pytest.mark.parametrize("encoder", [T5_4, XLMR_4], ids=["mt5", "xlmr"])
def test_checkpoints_and_exports_are_the_same_whichever_way_trained(tmp_path, encoder):
    loop, scan = _model(encoder), _model(encoder, scan_layers=True, remat_policy="full")
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) * 1.5, scan.init(jax.random.PRNGKey(1))[0])
    save_model(tmp_path / "scan_ckpt", params, scan.config)
    save_model(tmp_path / "loop_ckpt", params, loop.config)
    batch = _batch()
    for written_by, read_as in (("scan_ckpt", loop), ("loop_ckpt", scan)):
        restored, config, _ = load_model(tmp_path / written_by)
        assert config.encoder.scan_layers == (written_by == "scan_ckpt")
        _assert_same_grads(restored, params, rtol=0)
        got = read_as.represent(restored, batch["right_encoder_input_tokens"], "document").vectors
        want = build_model(config).represent(restored, batch["right_encoder_input_tokens"], "document").vectors
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    export_hf(params, scan.config, tmp_path / "hf_scan")
    export_hf(params, loop.config, tmp_path / "hf_loop")
    files = sorted(p.relative_to(tmp_path / "hf_loop") for p in (tmp_path / "hf_loop").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "hf_scan") for p in (tmp_path / "hf_scan").rglob("*")
                           if p.is_file())
    for name in files:
        assert (tmp_path / "hf_scan" / name).read_bytes() == (tmp_path / "hf_loop" / name).read_bytes(), name


def test_full_remat_cuts_train_step_temp_memory_3x():
    """12 layers at sequence length 512: without remat the backward pass keeps every layer's attention
    probabilities and MLP activations; full remat keeps only each layer's input."""
    encoder = dataclasses.replace(t5.PRESETS["mt5_tiny"], num_layers=12, dropout_rate=0.0, scan_layers=True)
    plain, remat = _model(encoder), _model(encoder, remat_policy="full")
    params = plain.init(jax.random.PRNGKey(0))[0]
    batch = _batch(length_q=512, length_p=512, batch=2)

    def compiled(model):
        return jax.jit(lambda p, b: model.value_and_grad(p, b, None)).lower(params, batch).compile()

    plain_step, remat_step = compiled(plain), compiled(remat)
    plain_temp = plain_step.memory_analysis().temp_size_in_bytes
    remat_temp = remat_step.memory_analysis().temp_size_in_bytes
    print(f"temp memory: no remat {plain_temp / 2**20:.1f} MiB, full remat {remat_temp / 2**20:.1f} MiB")
    assert plain_temp >= 3 * remat_temp
    (loss, _), grads = plain_step(params, batch)
    (remat_loss, _), remat_grads = remat_step(params, batch)
    np.testing.assert_allclose(float(remat_loss), float(loss), rtol=1e-5)
    _assert_same_grads(remat_grads, grads)


def test_unknown_remat_policy_is_refused():
    with pytest.raises(ValueError, match="remat_policy"):
        t5.t5_config("mt5_tiny", remat_policy="everything")
    with pytest.raises(ValueError, match="BertConfig.scan_layers"):
        bert.bert_config("bert_tiny", scan_layers="yes")
