"""The pre-training pair sampler as Contriever / mContriever publish it (facebookresearch/contriever
src/data.py `randomcrop`: two independent crops of U(0.1, 0.5) of a 256-token chunk, overlap allowed):
crop lengths, start positions and the overlap rate measured against closed-form expectations."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from polyret.seqio_tasks.preprocessors import span_pairs

N = 100            # chunk length in the statistics test (documents of exactly N tokens)
A, B = 0.1, 0.5    # ratio_min, ratio_max
SAMPLES = 3000


def _pairs(docs, lengths=None, seed=0, **kw):
    ds = tf.data.Dataset.from_generator(lambda: ({"text": np.asarray(d, np.int32)} for d in docs),
                                        output_signature={"text": tf.TensorSpec([None], tf.int32)})
    with seqio.utils.map_seed_manager(seed):
        out = span_pairs(ds, lengths or {"inputs": 300, "targets": 300}, **kw)
    return list(out.as_numpy_iterator())


def _length_distribution(n, a=A, b=B):
    """P(L = l) for L = floor(n * R), R ~ U(a, b)."""
    probs = {}
    for l in range(int(np.floor(n * a)), int(np.ceil(n * b)) + 1):
        width = min((l + 1) / n, b) - max(l / n, a)
        if width > 0:
            probs[l] = width / (b - a)
    return probs


def _overlap_probability(n):
    """P(two independent crops overlap): over both lengths, starts uniform on 0..n-L each."""
    probs = _length_distribution(n)
    total = 0.0
    for l1, p1 in probs.items():
        s1 = np.arange(n - l1 + 1)[:, None]
        for l2, p2 in probs.items():
            s2 = np.arange(n - l2 + 1)[None, :]
            overlap = (s1 < s2 + l2) & (s2 < s1 + l1)
            total += p1 * p2 * overlap.mean()
    return total


@pytest.fixture(scope="module")
def crops():
    docs = [np.arange(N, dtype=np.int32) + 3] * SAMPLES  # token = position + 3: a crop's start is visible
    pairs = _pairs(docs, chunk_length=N)  # the stream's chunks are the documents here
    out = []
    for e in pairs:
        spans = []
        for key in ("inputs", "targets"):
            x = e[key].astype(int) - 3
            assert len(x) and np.array_equal(x, np.arange(x[0], x[0] + len(x)))  # a contiguous slice
            spans.append((int(x[0]), len(x)))
        out.append(spans)
    return np.array(out)  # [SAMPLES, 2 crops, (start, length)]


def test_crop_lengths_match_floor_of_uniform_ratio(crops):
    lengths = crops[:, :, 1].ravel()
    probs = _length_distribution(N)
    expected_mean = sum(l * p for l, p in probs.items())
    expected_var = sum(l * l * p for l, p in probs.items()) - expected_mean ** 2
    assert set(lengths) <= set(probs)  # 10 .. 49 for N = 100
    assert abs(lengths.mean() - expected_mean) < 4 * np.sqrt(expected_var / len(lengths))
    # the two crops' lengths are independent draws
    assert abs(np.corrcoef(crops[:, 0, 1], crops[:, 1, 1])[0, 1]) < 4 / np.sqrt(SAMPLES)
    # each length bin's frequency within 4 standard errors of its probability
    counts = np.bincount(lengths, minlength=N)
    for l, p in probs.items():
        assert abs(counts[l] / len(lengths) - p) < 4 * np.sqrt(p * (1 - p) / len(lengths)) + 1e-3


def test_crop_starts_uniform_given_length(crops):
    starts, lengths = crops[:, :, 0].ravel(), crops[:, :, 1].ravel()
    assert (starts >= 0).all() and (starts + lengths <= N).all()
    # E[start | L] = (N - L) / 2; the normalised start start / (N - L) is uniform on [0, 1] (mean 1/2)
    u = starts / (N - lengths)
    assert abs(u.mean() - 0.5) < 4 * np.sqrt((1 / 12 + 1 / (6 * 50)) / len(u))
    assert (starts == 0).any() and (starts + lengths == N).any()  # both ends reachable


def test_overlap_rate_matches_closed_form(crops):
    (s1, l1), (s2, l2) = crops[:, 0].T, crops[:, 1].T
    overlap = (s1 < s2 + l2) & (s2 < s1 + l1)
    p = _overlap_probability(N)
    assert 0.3 < p < 0.9  # overlap is allowed, and common
    assert abs(overlap.mean() - p) < 4 * np.sqrt(p * (1 - p) / SAMPLES)


def test_stream_cut_into_chunks_and_feature_lengths_respected():
    docs = [np.arange(300, dtype=np.int32) + 3, np.arange(300, 600, dtype=np.int32) + 3]  # one stream of 600
    pairs = _pairs(docs, chunk_length=256, lengths={"inputs": 64, "targets": 300})
    assert len(pairs) == 2  # chunks [0, 256) and [256, 512); the last 88 tokens are dropped, as Contriever does
    for e, (lo, hi) in zip(pairs, [(0, 256), (256, 512)]):
        for key in ("inputs", "targets"):
            x = e[key].astype(int) - 3
            assert lo <= x.min() and x.max() < hi and np.array_equal(x, np.arange(x[0], x[0] + len(x)))
        assert len(e["inputs"]) <= 63  # cut to the feature length minus EOS
        assert 25 <= len(e["targets"]) <= 127  # floor(256 x [0.1, 0.5))
    with pytest.raises(ValueError, match="shorter than min_span_length"):
        _pairs(docs, chunk_length=50, min_span_length=8)
