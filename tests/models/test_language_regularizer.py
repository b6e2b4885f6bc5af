"""PLAID-X's round-robin language regulariser against PLAID-X's own formula, written here in torch the way
colbert/training/training.py computes it (language-major rows, KLDivLoss(batchmean, log_target=True) per
language pair i <= j, mean over pairs)."""

import jax.numpy as jnp
import numpy as np
import torch

from polyret.models.losses import language_divergence, token_hash


def plaidx_language_loss(scores: np.ndarray, nlang: int, nway: int) -> float:
    """scores: [nlang * b, nway] in PLAID-X's order (all queries in language 0, then language 1, ...)."""
    log_scores = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), dim=-1)
    b = scores.shape[0] // nlang
    lang_scores = log_scores.view(-1, b, nway).permute(1, 2, 0).flatten(start_dim=0, end_dim=1)
    kld = torch.nn.KLDivLoss(reduction="batchmean", log_target=True)
    terms = [0.5 * kld(lang_scores[:, i], lang_scores[:, j]) + 0.5 * kld(lang_scores[:, j], lang_scores[:, i])
             for i in range(nlang) for j in range(i, nlang)]
    return float(torch.stack(terms).mean())


def test_matches_plaidx_on_round_robin_batches():
    rng = np.random.default_rng(0)
    nlang, b, nway = 3, 4, 6
    scores = rng.normal(size=(nlang * b, nway)) * 3
    # polyret keeps a query's copies consecutive: row q * nlang + l holds PLAID-X's row l * b + q.
    ours = np.stack([scores[l * b + q] for q in range(b) for l in range(nlang)])
    queries = np.repeat(rng.integers(1, 1000, size=(b, 8)), nlang, axis=0)
    value = language_divergence(jnp.asarray(ours, jnp.float32), token_hash(jnp.asarray(queries)))
    np.testing.assert_allclose(float(value), plaidx_language_loss(scores, nlang, nway), rtol=1e-5)


def test_zero_without_copies_or_when_copies_agree():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    distinct = token_hash(jnp.asarray(rng.integers(1, 1000, size=(4, 8))))
    assert float(language_divergence(scores, distinct)) == 0.0
    same_scores = jnp.repeat(scores[:2], 2, axis=0)
    copies = jnp.repeat(distinct[:2], 2)
    assert abs(float(language_divergence(same_scores, copies))) < 1e-7
