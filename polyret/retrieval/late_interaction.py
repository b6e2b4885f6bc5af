"""ColBERT retrieval: token-level ScaNN candidate generation, then exact MaxSim re-ranking; and MaxP over
windows for documents longer than a passage.

Candidate generation takes, for every query token, the `candidates_per_token` nearest document tokens;
their documents are re-scored exactly. A document that was not a candidate scores at most
sum_i theta_i, where theta_i is query token i's last candidate score; when the k-th exact score is below
that bound the search widens (doubling candidates_per_token) until it is not. With brute-force token
search the returned top-k is therefore exactly the brute-force MaxSim top-k.
"""

from __future__ import annotations

import dataclasses

from typing import Sequence

import numpy as np

from polyret.retrieval.index import ScannConfig, ScannIndex


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Sum over query tokens of the best dot product with any document token ([Lq, D], [Ld, D])."""
    if len(doc) == 0:
        return 0.0
    return float((query @ doc.T).max(axis=1).sum())


class LateInteractionIndex:
    def __init__(self, doc_ids: Sequence[str], doc_vectors: Sequence[np.ndarray], config: ScannConfig | None = None):
        if len(doc_ids) != len(doc_vectors):
            raise ValueError(f"{len(doc_ids)} ids but {len(doc_vectors)} documents")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        self.doc_ids = list(doc_ids)
        self.doc_vectors = [np.asarray(v, np.float32) for v in doc_vectors]
        lengths = np.array([len(v) for v in self.doc_vectors])
        self.token_doc = np.repeat(np.arange(len(doc_ids)), lengths)
        tokens = np.concatenate(self.doc_vectors)
        self.num_tokens = len(tokens)
        # No recall auto-tuning here: the bound below widens the search, so a fast build is what matters.
        config = dataclasses.replace(config or ScannConfig(), recall_target=None)
        self.token_index = ScannIndex.build([str(i) for i in range(len(tokens))], tokens,
                                            k=min(1024, len(tokens)), config=config)

    def search(self, query: np.ndarray, k: int = 10, candidates_per_token: int = 32) -> list[tuple[str, float]]:
        """-> [(doc id, exact MaxSim score)] best first, ties broken by doc id."""
        k = min(k, len(self.doc_ids))
        per_token = min(candidates_per_token, self.num_tokens)
        while True:
            rows, scores = self.token_index.search(query, per_token)
            candidates = np.unique(self.token_doc[rows[rows >= 0]])
            exact = sorted(((self.doc_ids[d], maxsim(query, self.doc_vectors[d])) for d in candidates),
                           key=lambda x: (-x[1], x[0]))
            bound = float(scores[:, -1].sum())  # best score any non-candidate document could reach
            complete = per_token >= self.num_tokens or len(candidates) == len(self.doc_ids)
            if complete or (len(exact) >= k and exact[k - 1][1] >= bound):
                return exact[:k]
            per_token = min(per_token * 2, self.num_tokens)


def split_windows(ids: Sequence[int], window: int = 180, stride: int = 90) -> list[list[int]]:
    """Token windows of `window` with `stride` covering the whole sequence (the last one may be shorter)."""
    ids = list(ids)
    if len(ids) <= window:
        return [ids]
    starts = list(range(0, len(ids) - window + 1, stride))
    if starts[-1] + window < len(ids):
        starts.append(starts[-1] + stride)
    return [ids[s:s + window] for s in starts]


def maxp(window_scores: np.ndarray, window_doc: Sequence[str]) -> dict[str, float]:
    """Best window score per document (MaxP)."""
    best: dict[str, float] = {}
    for score, doc in zip(window_scores, window_doc):
        if doc not in best or score > best[doc]:
            best[doc] = float(score)
    return best
