"""ColBERT retrieval: exact MaxSim over token vectors held in memory (the index registered as 'maxsim'):
token-level ScaNN candidate generation, then exact MaxSim re-ranking; and MaxP over windows for documents
longer than a passage.

Candidate generation takes, for every query token, the `candidates_per_token` nearest document tokens;
their documents are re-scored exactly. A document that was not a candidate scores at most
sum_i theta_i, where theta_i is query token i's last candidate score; when the k-th exact score is below
that bound the search widens (doubling candidates_per_token) until it is not. With brute-force token
search the returned top-k is therefore exactly the brute-force MaxSim top-k.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from polyret.retrieval.compressed_index import TokenShards, write_token_shards
from polyret.retrieval.scann_index import ScannConfig, ScannIndex
from polyret.retrieval.search_index import Index, SearchResult, pad_hits, register_index


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Sum over query tokens of the best dot product with any document token ([Lq, D], [Ld, D])."""
    if len(doc) == 0:
        return 0.0
    return float((query @ doc.T).max(axis=1).sum())


@register_index("maxsim")
class LateInteractionIndex(Index):
    multi_vector = True

    def __init__(self, doc_ids: Sequence[str], doc_vectors: Sequence[np.ndarray], config: ScannConfig | None = None):
        if len(doc_ids) != len(doc_vectors):
            raise ValueError(f"{len(doc_ids)} ids but {len(doc_vectors)} documents")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        self.ids = list(doc_ids)
        self.doc_vectors = [np.asarray(v, np.float32) for v in doc_vectors]
        lengths = np.array([len(v) for v in self.doc_vectors])
        self.token_doc = np.repeat(np.arange(len(doc_ids)), lengths)
        tokens = np.concatenate(self.doc_vectors)
        self.num_tokens = len(tokens)
        # No recall auto-tuning here: the bound below widens the search, so a fast build is what matters.
        config = dataclasses.replace(config or ScannConfig(), recall_target=None)
        self.token_index = ScannIndex.build([str(i) for i in range(len(tokens))], tokens,
                                            k=min(1024, len(tokens)), config=config)

    @classmethod
    def build(cls, ids: Sequence[str], vectors: Sequence[np.ndarray] | TokenShards, k: int = 100, folder=None,
              queries=None) -> "LateInteractionIndex":
        """Token vectors of each document, in memory or a TokenShards folder (read into memory)."""
        if isinstance(vectors, TokenShards):
            vectors = _read_documents(vectors)
        return cls(ids, vectors)

    @property
    def exact(self) -> bool:
        return True

    def search(self, queries: Sequence[np.ndarray], k: int = 10, candidates_per_token: int = 32) -> SearchResult:
        """Exact MaxSim top-k of each [Lq, dim] query, ties broken by doc id."""
        k = min(k, len(self.ids))
        return pad_hits([self._search_one(np.asarray(q, np.float32), k, candidates_per_token) for q in queries], k)

    def _search_one(self, query: np.ndarray, k: int, candidates_per_token: int) -> list[tuple[int, float]]:
        per_token = min(candidates_per_token, self.num_tokens)
        while True:
            rows, scores = self.token_index.search(query, per_token)
            candidates = np.unique(self.token_doc[rows[rows >= 0]])
            exact = sorted(((int(d), maxsim(query, self.doc_vectors[d])) for d in candidates),
                           key=lambda x: (-x[1], self.ids[x[0]]))
            bound = float(scores[:, -1].sum())  # best score any non-candidate document could reach
            complete = per_token >= self.num_tokens or len(candidates) == len(self.ids)
            if complete or (len(exact) >= k and exact[k - 1][1] >= bound):
                return exact[:k]
            per_token = min(per_token * 2, self.num_tokens)

    def write(self, folder: Path) -> dict:
        write_token_shards(folder, self.ids, lambda a, b: self.doc_vectors[a:b], progress=False)
        return {}

    @classmethod
    def read(cls, folder: Path, settings: dict) -> "LateInteractionIndex":
        shards = TokenShards(folder)
        return cls([i for s in range(shards.num_shards) for i in shards.ids(s)], _read_documents(shards))


def _read_documents(shards: TokenShards) -> list[np.ndarray]:
    """Every document's [len, dim] token vectors from a token-shard folder."""
    docs = []
    for s in range(shards.num_shards):
        vectors, lens = np.asarray(shards.vectors(s), np.float32), shards.lens(s)
        docs += np.split(vectors, np.cumsum(lens)[:-1])
    return docs


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
