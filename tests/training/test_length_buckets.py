"""Length buckets (polyret/seqio_tasks/length_buckets.py, DatasetConfig.length_buckets): a batch cut to its
bucket gives every example the same loss as the full-length batch (per-example in-batch softmax losses in
closed form from the model's vectors, tiny T5 dual encoder and XLM-R ColBERT); hosts that cut with the
maximum of their longest rows build the batch one host would; and `polyret train` with buckets (resumed
half-way) ends where a run without them ends."""

import dataclasses

import jax
import numpy as np
import pytest

from polyret.models import bert, t5, towers
from polyret.models.retrieval_model import build_model
from polyret.seqio_tasks.length_buckets import bucket_length, check_buckets, cut_to_buckets, longest_rows

from training_helpers import load_result, run_training

FEATURES = ["left_encoder_input_tokens", "right_encoder_input_tokens"]
BUCKETS = (8, 16, 24)


def _batch(batch=8, lq=24, lp=32, seed=0):
    """Right-padded rows of random lengths; the longest query 7 (bucket 8), the longest passage 13 (16)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, length, longest in ((FEATURES[0], lq, 7), (FEATURES[1], lp, 13)):
        lengths = rng.integers(2, longest + 1, batch)
        lengths[0] = longest
        tokens = rng.integers(4, 500, (batch, length))
        out[name] = np.where(np.arange(length)[None, :] < lengths[:, None], tokens, 0).astype(np.int32)
    return out


def _per_example_losses(model, params, batch):
    """Closed form: -log softmax over the batch's passages (and, bidirectionally, queries) of scale * score."""
    q = model.represent(params, batch[FEATURES[0]], "query")
    p = model.represent(params, batch[FEATURES[1]], "document")
    s = np.asarray(model.score(q, p), np.float64) * float(model.logit_scale(params))
    row = s - s.max(1, keepdims=True)
    col = s - s.max(0, keepdims=True)
    q2p = -(np.diag(row) - np.log(np.exp(row).sum(1)))
    p2q = -(np.diag(col) - np.log(np.exp(col).sum(0)))
    return q2p, p2q


MODELS = {
    "mt5-dual": lambda: towers.DualEncoderConfig(
        encoder=dataclasses.replace(t5.PRESETS["mt5_tiny"], dropout_rate=0.0), projection_dim=8, logit_scale=20.0),
    "xlmr-colbert": lambda: towers.ColBERTConfig(
        encoder=dataclasses.replace(bert.PRESETS["xlm_roberta_tiny"], hidden_dropout_rate=0.0,
                                    attention_dropout_rate=0.0), projection_dim=8, query_length=8,
        query_mask_token_id=3),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_bucketed_batch_gives_the_same_per_example_losses(name):
    model = build_model(MODELS[name]())
    params, _ = model.init(jax.random.PRNGKey(0))
    full = _batch()
    cut = cut_to_buckets(full, FEATURES, longest_rows(full, FEATURES), BUCKETS)
    assert cut[FEATURES[0]].shape == (8, 8) and cut[FEATURES[1]].shape == (8, 16)
    for got, want in zip(_per_example_losses(model, params, cut), _per_example_losses(model, params, full)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(model.loss_value(params, cut, deterministic=True)[0]),
                               float(model.loss_value(params, full, deterministic=True)[0]), rtol=1e-5)


def test_hosts_agree_on_the_bucket_of_a_step():
    """Two hosts with different longest rows cut to the bucket of the global longest row (the trainer's
    all-gathered maximum), which is the cut of the whole batch on one host."""
    full = _batch(seed=1)
    halves = [{k: v[:4] for k, v in full.items()}, {k: v[4:] for k, v in full.items()}]
    halves[0][FEATURES[1]][:, 10:] = 0  # host 0's passages are shorter: alone it would pick bucket 16 or less
    full = {k: np.concatenate([h[k] for h in halves]) for k in full}
    longest = np.max([longest_rows(h, FEATURES) for h in halves], axis=0)
    hosts = [cut_to_buckets(h, FEATURES, longest, BUCKETS) for h in halves]
    one = cut_to_buckets(full, FEATURES, longest_rows(full, FEATURES), BUCKETS)
    for k in FEATURES:
        np.testing.assert_array_equal(np.concatenate([h[k] for h in hosts]), one[k])


def test_bucket_rules():
    assert [bucket_length(n, (64, 128, 256), 256) for n in (0, 1, 64, 65, 200, 256)] == [64, 64, 64, 128, 256, 256]
    assert bucket_length(300, (64, 128), 320) == 320  # beyond every bucket: the feature's own length
    assert bucket_length(10, (64, 128), 32) == 32  # never longer than the data
    tokens = np.array([[5, 6, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert longest_rows({"t": tokens}, ["t"]).tolist() == [2]
    for bad in ((128, 64), (0, 8), (8, 8)):
        with pytest.raises(ValueError, match="length_buckets"):
            check_buckets(bad)


@pytest.mark.slow
def test_train_with_buckets_resumes_and_matches_unbucketed(tmp_path, data_dir):
    def flags(model_dir, steps, *extra):
        return ["--gin_file=runs/tiny/swimx_xor.gin", f"--gin.MODEL_DIR='{model_dir}'",
                f"--gin.DATA_DIR='{data_dir}'", f"--gin.TRAIN_STEPS={steps}", "--gin.CheckpointConfig.every=2",
                "--gin.t5_config.dropout_rate=0.0", *extra]

    buckets = "--gin.DatasetConfig.length_buckets=(8, 16)"
    run_training(tmp_path / "plain.npz", flags(tmp_path / "plain", 4))
    run_training(tmp_path / "a.npz", flags(tmp_path / "bucketed", 2, buckets))
    run_training(tmp_path / "b.npz", flags(tmp_path / "bucketed", 4, buckets))
    plain_losses, plain = load_result(tmp_path / "plain.npz")
    losses = np.concatenate([load_result(tmp_path / f"{part}.npz")[0] for part in "ab"])
    _, bucketed = load_result(tmp_path / "b.npz")
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    for key in plain:
        np.testing.assert_allclose(bucketed[key], plain[key], rtol=1e-4, atol=1e-6, err_msg=key)
