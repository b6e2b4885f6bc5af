"""ScaNN maximum-inner-product index: brute force for small corpora, tree + asymmetric hashing + exact
reorder above a size threshold; parameters from gin with defaults derived from the corpus size."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import gin
import numpy as np
from scann import scann_ops_pybind


@gin.configurable
@dataclass(frozen=True)
class ScannConfig:
    brute_force_below: int = 20_000
    num_leaves: int | None = None  # default ~ sqrt(n)
    num_leaves_to_search: int | None = None  # default: 1/10 of the leaves, at least 1
    training_sample_size: int = 250_000
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    reorder: int = 200  # candidates re-scored exactly
    leaf_search_fraction: float = 0.1


class ScannIndex:
    def __init__(self, searcher, ids: list[str], brute_force: bool, params: dict):
        self.searcher, self.ids, self.brute_force, self.params = searcher, ids, brute_force, params

    @classmethod
    def build(cls, ids: list[str], vectors: np.ndarray, k: int = 100, config: ScannConfig | None = None
              ) -> "ScannIndex":
        config = config or ScannConfig()
        vectors = np.ascontiguousarray(vectors, np.float32)
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"{len(ids)} ids but {vectors.shape[0]} vectors")
        if vectors.shape[0] == 0:
            raise ValueError("cannot index an empty corpus")
        n = vectors.shape[0]
        k = min(k, n)
        builder = scann_ops_pybind.builder(vectors, k, "dot_product")
        if n < config.brute_force_below:
            searcher = builder.score_brute_force().build()
            return cls(searcher, list(ids), True, {"brute_force": True})
        leaves = config.num_leaves or max(2, int(math.sqrt(n)))
        to_search = config.num_leaves_to_search or max(1, int(leaves * config.leaf_search_fraction))
        params = {"num_leaves": leaves, "num_leaves_to_search": to_search, "reorder": max(config.reorder, k),
                  "training_sample_size": min(n, config.training_sample_size)}
        searcher = (builder.tree(num_leaves=leaves, num_leaves_to_search=to_search,
                                 training_sample_size=params["training_sample_size"])
                    .score_ah(config.dimensions_per_block,
                              anisotropic_quantization_threshold=config.anisotropic_quantization_threshold)
                    .reorder(params["reorder"]).build())
        return cls(searcher, list(ids), False, params)

    def search(self, queries: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """-> (row indices [q, k], scores [q, k]), best first."""
        queries = np.ascontiguousarray(queries, np.float32)
        k = min(k, len(self.ids))
        rows, scores = [], []
        for start in range(0, len(queries), batch_size):
            idx, dist = self.searcher.search_batched(queries[start:start + batch_size], final_num_neighbors=k)
            rows.append(np.asarray(idx, np.int64))
            scores.append(np.asarray(dist, np.float32))
        if not rows:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(rows), np.concatenate(scores)

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.searcher.serialize(str(directory))
        (directory / "ids.txt").write_text("\n".join(self.ids) + "\n", encoding="utf-8")
        (directory / "polyret_index.json").write_text(json.dumps({"brute_force": self.brute_force,
                                                                  "params": self.params}))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ScannIndex":
        directory = Path(directory)
        meta_file = directory / "polyret_index.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file}: missing; not a saved polyret ScaNN index")
        meta = json.loads(meta_file.read_text())
        ids = (directory / "ids.txt").read_text(encoding="utf-8").splitlines()
        return cls(scann_ops_pybind.load_searcher(str(directory)), ids, meta["brute_force"], meta["params"])


def brute_force_topk(queries: np.ndarray, vectors: np.ndarray, k: int, batch_size: int = 1024
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum inner product with numpy (the reference for recall)."""
    k = min(k, vectors.shape[0])
    rows, scores = [], []
    for start in range(0, len(queries), batch_size):
        s = queries[start:start + batch_size] @ vectors.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(s, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        rows.append(np.take_along_axis(top, order, 1))
        scores.append(np.take_along_axis(top_scores, order, 1))
    return np.concatenate(rows), np.concatenate(scores)


def recall_against_brute_force(approx_rows: np.ndarray, exact_rows: np.ndarray, k: int = 10) -> float:
    hits = [len(set(a[:k]) & set(e[:k])) for a, e in zip(approx_rows, exact_rows)]
    return float(np.sum(hits) / (len(hits) * min(k, exact_rows.shape[1])))
