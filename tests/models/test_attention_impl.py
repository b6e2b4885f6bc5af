"""The attention core (polyret/models/attention.py) against a float64 numpy closed form, on the T5 family's
real relative-position bias and on BERT's scaled attention, with padded rows: the XLA path, the call cuDNN
gets (key lengths, unbroadcast bias; run through XLA here, on CPU) and the explicit path kept for attention
dropout all equal it within 1e-5 (float32). Whole-model equality with Hugging Face is in test_hf_parity.py /
test_bert_parity.py, which run the same default ('auto' = XLA off GPU)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyret.models import attention as A
from polyret.models import bert, t5

B, L, H, D = 3, 10, 4, 8


def _closed_form(q, k, v, bias, key_mask, scale):
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    logits = np.where(np.asarray(key_mask)[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(B, L, H, D)), jnp.float32) for _ in range(3))
    lengths = np.array([L, 7, 2])  # one full row, two right-padded rows
    key_mask = jnp.asarray(np.arange(L)[None, :] < lengths[:, None])
    return q, k, v, key_mask


def _t5_bias():
    cfg = dataclasses.replace(t5.PRESETS["mt5_tiny"], num_heads=H, relative_attention_num_buckets=8,
                              relative_attention_max_distance=6)
    module = t5.RelativePositionBias(cfg)
    params = module.init(jax.random.PRNGKey(1), L, L)
    return module.apply(params, L, L)  # [1, H, L, L], learned-table lookups by relative distance


CASES = {"t5 (relative bias, scale 1)": (_t5_bias, 1.0), "bert (no bias, 1/sqrt(d))": (lambda: None, D ** -0.5)}


@pytest.mark.parametrize("case", list(CASES))
def test_attention_paths_equal_the_closed_form(case):
    make_bias, scale = CASES[case]
    bias = make_bias()
    q, k, v, key_mask = _inputs()
    want = _closed_form(q, k, v, bias, key_mask, scale)
    paths = {
        "xla": A.attention(q, k, v, bias, key_mask, scale, "xla"),
        "cudnn-call-on-xla": A.padding_as_lengths(q, k, v, bias, key_mask, scale, "xla"),
        "explicit": A.explicit_attention(q, k, v, bias, key_mask, scale, lambda w: w),
    }
    for name, got in paths.items():
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5, err_msg=name)


def test_gradients_of_the_paths_agree():
    """The relative bias is trained: its gradient (and q/k/v's) through the fused call's argument form
    equals the explicit one's."""
    bias = _t5_bias()
    q, k, v, key_mask = _inputs(1)
    cot = jnp.asarray(np.random.default_rng(2).normal(size=(B, L, H, D)), jnp.float32)

    def grads(fn):
        return jax.grad(lambda *a: jnp.sum(fn(*a) * cot), argnums=(0, 1, 2, 3))(q, k, v, bias)

    want = grads(lambda q, k, v, b: A.explicit_attention(q, k, v, b, key_mask, 1.0, lambda w: w))
    for fn in (lambda q, k, v, b: A.attention(q, k, v, b, key_mask, 1.0, "xla"),
               lambda q, k, v, b: A.padding_as_lengths(q, k, v, b, key_mask, 1.0, "xla")):
        for got, ref in zip(grads(fn), want):
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)


def test_choice_of_implementation_off_gpu():
    q = jnp.zeros((B, L, H, D), jnp.bfloat16)
    if jax.devices()[0].platform == "gpu":
        pytest.skip("checks the CPU/TPU choice")
    assert A.choose_impl("auto", q, True, dropout=False) == "xla"
    assert A.choose_impl("xla", q, True, dropout=False) == "xla"
    assert A.choose_impl("auto", q, True, dropout=True) == "explicit"
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        A.choose_impl("cudnn", q, True, dropout=False)
    with pytest.raises(ValueError, match="attention dropout"):
        A.choose_impl("cudnn", q, True, dropout=True)


def test_attention_impl_is_a_validated_config_field():
    assert t5.t5_config("mt5_tiny", attention_impl="cudnn").attention_impl == "cudnn"
    assert bert.bert_config("bert_tiny", attention_impl="xla").attention_impl == "xla"
    with pytest.raises(ValueError, match="attention_impl"):
        t5.t5_config("mt5_tiny", attention_impl="flash")
    with pytest.raises(ValueError, match="attention_impl"):
        bert.bert_config("bert_tiny", attention_impl="flash")
