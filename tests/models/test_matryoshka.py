"""MatryoshkaLoss against its definition (the wrapped loss on each re-normalised prefix, weighted and summed,
written out here in numpy), GradCache around it giving the same gradients, and `--truncate_dim` at encoding
time giving the first dimensions of the full vectors, re-normalised."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyret.models.losses import CachedLoss, ContrastiveLoss, MatryoshkaLoss
from polyret.models.retrieval_model import Embedded, build_model
from polyret.models.t5 import T5Config
from polyret.models.towers import DualEncoderConfig

ENCODER = T5Config(vocab_size=256, d_model=64, num_heads=4, d_kv=16, d_ff=128, num_layers=2, dropout_rate=0.0)
CFG = DualEncoderConfig(encoder=ENCODER, projection_dim=32, logit_scale=20.0)


def _reference(q: np.ndarray, p: np.ndarray, dims, weights, scale: float) -> float:
    total = 0.0
    for dim, weight in zip(dims, weights):
        qd = q[:, :dim] / np.linalg.norm(q[:, :dim], axis=1, keepdims=True)
        pd = p[:, :dim] / np.linalg.norm(p[:, :dim], axis=1, keepdims=True)
        logits = scale * qd @ pd.T
        log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - logits.max(1, keepdims=True)
        total += weight * -np.mean(np.diag(log_p))
    return total


def test_matryoshka_loss_is_the_weighted_sum_over_prefixes():
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(6, 32)).astype(np.float32), rng.normal(size=(6, 32)).astype(np.float32)
    dims, weights = (32, 16, 8), (1.0, 0.5, 0.25)
    loss = MatryoshkaLoss(ContrastiveLoss(bidirectional=False), dims=dims, weights=weights)
    model = build_model(CFG, loss)
    batch = {"right_encoder_input_tokens": jnp.arange(6 * 4).reshape(6, 4) + 3}
    value, metrics = loss.from_representations(model, None, {"queries": Embedded(jnp.asarray(q)),
                                                             "passages": Embedded(jnp.asarray(p))}, batch)
    assert float(value) == pytest.approx(_reference(q, p, dims, weights, 20.0), rel=1e-5)
    assert set(metrics) >= {"loss@32", "loss@16", "loss@8", "accuracy"}


def test_cached_matryoshka_equals_plain_gradients():
    loss = MatryoshkaLoss(ContrastiveLoss(), dims=(32, 8))
    plain, cached = build_model(CFG, loss), build_model(CFG, CachedLoss(loss, num_chunks=4))
    params, _ = plain.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    batch = {k: jnp.asarray(rng.integers(3, 256, size=(16, 24)), jnp.int32)
             for k in ("left_encoder_input_tokens", "right_encoder_input_tokens")}
    (a, _), ga = jax.jit(cached.value_and_grad)(params, batch, None)
    (b, _), gb = jax.jit(plain.value_and_grad)(params, batch, None)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_truncate_dim_is_the_renormalised_prefix():
    from polyret.retrieval.encode import TowerEncoder
    from polyret.retrieval.tokenize import Tokenizer
    params, _ = build_model(CFG).init(jax.random.PRNGKey(2))
    texts = ["a short one", "and a somewhat longer text to encode", "x"]
    full = TowerEncoder(params, CFG, Tokenizer("byte")).encode(texts, "right", 48)
    cut = TowerEncoder(params, CFG, Tokenizer("byte"), truncate_dim=8).encode(texts, "right", 48)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-6)
    unnormalised = dataclasses.replace(CFG, l2_norm=False)
    raw = TowerEncoder(params, unnormalised, Tokenizer("byte"), truncate_dim=8).encode(texts, "right", 48)
    np.testing.assert_allclose(raw, TowerEncoder(params, unnormalised, Tokenizer("byte")).encode(texts, "right", 48)[:, :8],
                               atol=1e-6)


def test_sentence_transformers_export_gives_the_truncated_vectors(tmp_path):
    """`export_hf --truncate_dim`: sentence-transformers, loading the folder with no argument, gives polyret's
    `--truncate_dim` vectors; a model without a projection gets a Dense module that selects the prefix."""
    st = pytest.importorskip("sentence_transformers")
    from polyret.models.retrieval_model import export_hf
    from polyret.retrieval.encode import TowerEncoder
    from polyret.retrieval.tokenize import Tokenizer
    texts = ["a short one", "and a somewhat longer text to encode", "x"]
    for cfg in (CFG, dataclasses.replace(CFG, projection_dim=None)):
        cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(ENCODER, vocab_size=384))  # ByT5's ids
        params, _ = build_model(cfg).init(jax.random.PRNGKey(3))
        ours = TowerEncoder(params, cfg, Tokenizer("byte"), truncate_dim=8).encode(texts, "right", 48)
        folder = export_hf(params, cfg, tmp_path / str(cfg.projection_dim), tokenizer="byte", max_seq_length=48,
                           truncate_dim=8)
        theirs = st.SentenceTransformer(str(folder), device="cpu").encode(texts)
        assert theirs.shape == (3, 8)
        np.testing.assert_allclose(theirs, ours, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim 99: the model.s vectors have 64 dimensions"):
        export_hf(params, cfg, tmp_path / "too_wide", tokenizer="byte", truncate_dim=99)
