"""ScaNN against brute force, save/reload, late interaction against brute-force MaxSim, MaxP."""

import numpy as np
import pytest

from polyret.retrieval.index import ScannIndex, brute_force_topk, recall_against_brute_force
from polyret.retrieval.late_interaction import LateInteractionIndex, maxp, maxsim, split_windows


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    d, n, c = 64, 100_000, 2000
    centers = rng.normal(size=(c, d))
    x = centers[rng.integers(c, size=n)] + 0.5 * rng.normal(size=(n, d))
    q = centers[rng.integers(c, size=300)] + 0.5 * rng.normal(size=(300, d))
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    return norm(x), norm(q)


def test_scann_default_recall_and_reload(clustered, tmp_path):
    x, q = clustered
    index = ScannIndex.build([f"d{i}" for i in range(len(x))], x, k=10)
    assert not index.brute_force  # 100K is above the brute-force threshold: tree + AH + reorder
    rows, scores = index.search(q, 10)
    exact, _ = brute_force_topk(q, x, 10)
    recall = recall_against_brute_force(rows, exact, 10)
    assert recall >= 0.95, recall
    index.save(tmp_path / "idx")
    again = ScannIndex.load(tmp_path / "idx")
    rows2, scores2 = again.search(q, 10)
    np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_array_equal(scores, scores2)
    assert again.ids == index.ids


def test_small_corpus_is_exact(clustered):
    x, q = clustered
    index = ScannIndex.build([str(i) for i in range(5000)], x[:5000], k=10)
    assert index.brute_force
    rows, _ = index.search(q, 10)
    exact, _ = brute_force_topk(q, x[:5000], 10)
    assert recall_against_brute_force(rows, exact, 10) == 1.0


def test_late_interaction_returns_brute_force_maxsim_topk():
    rng = np.random.default_rng(1)
    docs = []
    for _ in range(300):
        v = rng.normal(size=(rng.integers(3, 30), 16))
        docs.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    ids = [f"d{i}" for i in range(len(docs))]
    index = LateInteractionIndex(ids, docs)
    for _ in range(10):
        qv = rng.normal(size=(8, 16))
        qv = (qv / np.linalg.norm(qv, axis=1, keepdims=True)).astype(np.float32)
        brute = sorted(((i, float(np.sum(np.max(qv @ d.T, axis=1)))) for i, d in zip(ids, docs)),
                       key=lambda x: (-x[1], x[0]))[:10]
        got = index.search(qv, k=10, candidates_per_token=4)  # small on purpose: the bound must widen it
        assert [g[0] for g in got] == [b[0] for b in brute]
        np.testing.assert_allclose([g[1] for g in got], [b[1] for b in brute], rtol=1e-5)


def test_windows_and_maxp_match_direct_computation():
    ids = list(range(1, 401))
    windows = split_windows(ids, 180, 90)
    assert [w[0] for w in windows] == [1, 91, 181, 271] and windows[-1][-1] == 400
    assert all(len(w) <= 180 for w in windows)
    rng = np.random.default_rng(2)
    q = rng.normal(size=(5, 8))
    doc_tokens = rng.normal(size=(400, 8))
    window_scores = [maxsim(q, doc_tokens[w[0] - 1:w[-1]]) for w in windows]
    direct = max(float(np.sum(np.max(q @ doc_tokens[s:s + 180].T, axis=1))) for s in (0, 90, 180, 270))
    assert maxp(np.array(window_scores), ["doc"] * len(windows)) == {"doc": pytest.approx(direct)}
