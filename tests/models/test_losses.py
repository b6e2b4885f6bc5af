"""Losses against closed forms, a plain numpy reference, and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyret.models.losses import (contrastive_loss, duplicate_positive_mask, kl_distillation_loss,
                                   margin_mse_loss)
from polyret.models.towers import maxsim_paired, maxsim_scores

jax.config.update("jax_enable_x64", False)


def _np_ce(scores, labels, valid):
    out = []
    for row, lab, val in zip(scores, labels, valid):
        s = row[val]
        lse = np.log(np.sum(np.exp(s - s.max()))) + s.max()
        out.append(-np.sum(lab[val] * (s - lse)))
    return np.mean(out)


def test_uniform_scores_give_log_of_candidates():
    b, m = 4, 6
    loss, metrics = contrastive_loss(jnp.zeros((b, b)), jnp.zeros((b, m)), bidirectional=True)
    np.testing.assert_allclose(metrics["loss_q2p"], np.log(b + m), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_p2q"], np.log(b), rtol=1e-6)
    np.testing.assert_allclose(loss, 0.5 * (np.log(b + m) + np.log(b)), rtol=1e-6)
    only_q2p, _ = contrastive_loss(jnp.zeros((b, b)), bidirectional=False)
    np.testing.assert_allclose(only_q2p, np.log(b), rtol=1e-6)


def test_contrastive_matches_numpy_with_masks_and_smoothing():
    rng = np.random.default_rng(0)
    b, m, eps = 5, 7, 0.1
    pos, neg = rng.normal(size=(b, b)) * 3, rng.normal(size=(b, m)) * 3
    ids = np.array([0, 1, 0, 2, 3])  # queries 0 and 2 share a positive passage
    neg_valid = np.array([True] * 5 + [False] * 2)
    loss, metrics = contrastive_loss(jnp.array(pos), jnp.array(neg), jnp.array(neg_valid), bidirectional=True,
                                     label_smoothing=eps, duplicate_mask=duplicate_positive_mask(jnp.array(ids)))
    scores = np.concatenate([pos, neg], 1)
    valid = np.ones_like(scores, bool)
    valid[:, b:] = neg_valid
    for i in range(b):
        for j in range(b):
            if i != j and ids[i] == ids[j]:
                valid[i, j] = False
    labels = np.zeros_like(scores)
    for i in range(b):
        labels[i] = eps * valid[i] / valid[i].sum()
        labels[i, i] += 1 - eps
    q2p = _np_ce(scores, labels, valid)
    valid_t = valid[:, :b].T
    labels_t = np.stack([eps * valid_t[i] / valid_t[i].sum() + (1 - eps) * np.eye(b)[i] for i in range(b)])
    p2q = _np_ce(pos.T, labels_t, valid_t)
    np.testing.assert_allclose(metrics["loss_q2p"], q2p, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_p2q"], p2q, rtol=1e-5)
    np.testing.assert_allclose(loss, (q2p + p2q) / 2, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(np.where(valid, scores, -np.inf), 1) ==
                                                            np.arange(b)))


def test_kl_matches_numpy_and_is_zero_when_equal():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)) * 4
    temp = 2.0
    pt = np.exp(t / temp) / np.exp(t / temp).sum(1, keepdims=True)
    ps = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    expected = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), 1))
    np.testing.assert_allclose(kl_distillation_loss(jnp.array(s), jnp.array(t), temp), expected, rtol=1e-5)
    np.testing.assert_allclose(kl_distillation_loss(jnp.array(t), jnp.array(t)), 0.0, atol=1e-6)


def test_margin_mse_matches_numpy():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    expected = np.mean(((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])) ** 2)
    np.testing.assert_allclose(margin_mse_loss(jnp.array(s), jnp.array(t)), expected, rtol=1e-5)


@pytest.mark.parametrize("which", ["contrastive", "kl", "margin"])
def test_gradients_match_finite_differences(which):
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=(3, 3)).astype(np.float64)
    teacher = jnp.array(rng.normal(size=(3, 3)))
    fn = {"contrastive": lambda x: contrastive_loss(x, label_smoothing=0.1)[0],
          "kl": lambda x: kl_distillation_loss(x, teacher, 1.5),
          "margin": lambda x: margin_mse_loss(x, teacher)}[which]
    grad = np.asarray(jax.grad(fn)(jnp.array(x0, jnp.float32)))
    h = 1e-2
    numeric = np.zeros_like(x0)
    for idx in np.ndindex(x0.shape):
        up, down = x0.copy(), x0.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (float(fn(jnp.array(up, jnp.float32))) - float(fn(jnp.array(down, jnp.float32)))) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=2e-3)


def test_maxsim_matches_loops():
    rng = np.random.default_rng(4)
    q, d = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 5, 4))
    qm = np.array([[1, 1, 0], [1, 1, 1]], bool)
    dm = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    expected = np.zeros((2, 3))
    for i in range(2):
        for j in range(3):
            expected[i, j] = sum(max(q[i, a] @ d[j, b] for b in range(5) if dm[j, b]) for a in range(3) if qm[i, a])
    got = maxsim_scores(jnp.array(q), jnp.array(qm), jnp.array(d), jnp.array(dm))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    paired = maxsim_paired(jnp.array(q), jnp.array(qm), jnp.array(np.stack([d, d])), jnp.array(np.stack([dm, dm])))
    np.testing.assert_allclose(paired, expected, rtol=1e-5)


class _TableModel:
    """Each row's vector is a table row picked by its first token; scores are dot products (a closed form)."""

    def represent(self, params, tokens, side, rng=None, deterministic=True):
        return params["table"][tokens[..., 0]]

    def score(self, queries, documents):
        return queries @ documents.T

    def logit_scale(self, params):
        return jnp.asarray(1.0)


def test_translations_of_a_positive_are_no_negatives_in_the_batch():
    """A batch built to hold two copies of one section (rows 0 and 1: its German and French text, different
    queries, one passage group) and, as row 2's hard negative, a third language's copy: each copy is removed
    from the other row's softmax, the third copy from both rows' (numpy reference, both directions)."""
    from polyret.models.losses import FEATURES, ContrastiveLoss
    rng = np.random.default_rng(2)
    table = rng.normal(size=(10, 4)).astype(np.float32)
    batch = {FEATURES["queries"]: jnp.array([[5, 0], [6, 0], [7, 0]]),
             FEATURES["passages"]: jnp.array([[1, 0], [2, 0], [3, 0]]),
             FEATURES["negatives"]: jnp.array([[[4, 0]], [[8, 0]], [[9, 0]]]),
             "passage_group": jnp.array([11, 11, 22]), "negative_groups": jnp.array([[33], [44], [11]])}
    model, params = _TableModel(), {"table": jnp.asarray(table)}
    masked, _ = ContrastiveLoss()(model, params, batch, None)
    queries, passages = table[[5, 6, 7]], table[[1, 2, 3, 4, 8, 9]]
    scores = queries @ passages.T                      # 3 positives, then the 3 hard negatives
    labels = np.eye(3, 6)
    valid = np.ones((3, 6), bool)
    valid[0, 1] = valid[1, 0] = False                  # the other copy
    valid[0, 5] = valid[1, 5] = False                  # row 2's negative: a copy of rows 0 and 1's section
    p2q_valid = valid[:, :3].T
    expected = (_np_ce(scores, labels, valid) + _np_ce(scores[:, :3].T, np.eye(3), p2q_valid)) / 2
    np.testing.assert_allclose(masked, expected, rtol=1e-5)
    plain, _ = ContrastiveLoss(mask_passage_groups=False)(model, params, batch, None)
    everything = (_np_ce(scores, labels, np.ones((3, 6), bool)) + _np_ce(scores[:, :3].T, np.eye(3),
                                                                          np.ones((3, 3), bool))) / 2
    np.testing.assert_allclose(plain, everything, rtol=1e-5)


def test_rows_asking_the_same_query_are_not_each_others_negatives():
    """A batch holding two copies of one section (the same query asked of its German and its French text): with
    mask_duplicate_queries the copy is removed from each row's softmax, both directions (numpy reference)."""
    from polyret.models.losses import FEATURES, ContrastiveLoss
    rng = np.random.default_rng(1)
    table = rng.normal(size=(8, 4)).astype(np.float32)
    table[2] = table[1] + 0.01  # the French copy embeds next to the German one
    batch = {FEATURES["queries"]: jnp.array([[5, 0], [5, 0], [6, 0]]),     # rows 0 and 1: the same query
             FEATURES["passages"]: jnp.array([[1, 0], [2, 0], [3, 0]])}    # de copy, fr copy, another section
    model, params = _TableModel(), {"table": jnp.asarray(table)}
    masked, _ = ContrastiveLoss(mask_duplicate_queries=True)(model, params, batch, None)
    plain, _ = ContrastiveLoss()(model, params, batch, None)
    scores = table[[5, 5, 6]] @ table[[1, 2, 3]].T
    valid = ~np.array([[False, True, False], [True, False, False], [False, False, False]])
    q2p = _np_ce(scores, np.eye(3), valid)
    p2q = _np_ce(scores.T, np.eye(3), valid.T)
    np.testing.assert_allclose(masked, (q2p + p2q) / 2, rtol=1e-5)
    everything = np.ones((3, 3), bool)
    np.testing.assert_allclose(plain, (_np_ce(scores, np.eye(3), everything) + _np_ce(scores.T, np.eye(3), everything)) / 2,
                               rtol=1e-5)
