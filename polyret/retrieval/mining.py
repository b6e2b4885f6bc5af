"""Hard-negative mining: retrieve top-N per training query, drop positives and likely false negatives,
sample M negatives from a rank window; written as the JSONL the hard-negative SeqIO task reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from polyret.io.runs import Run


def mine_hard_negatives(run: Run, qrels: Mapping[str, Mapping[str, int]], queries: Mapping[str, str],
                        corpus: Mapping[str, str], num_negatives: int = 7, rank_start: int = 0,
                        rank_end: int = 100, margin: float | None = None, relative_threshold: float | None = 0.95,
                        positive_scores: Mapping[str, float] | None = None, seed: int = 0) -> tuple[list[dict], dict]:
    """-> (rows `{query, positive, negatives, query_id, positive_id, negative_ids}`, counts of what was dropped).

    Candidates are the run's documents ranked rank_start..rank_end (0-based, end exclusive) that are not
    judged relevant. A candidate is a likely false negative, and dropped, when its score is within `margin`
    of the positive's score or above `relative_threshold` times it. The positive's score comes from
    `positive_scores` or from the run; when neither has it, only the rank window applies.
    """
    dropped = {"positives": 0, "false_negatives": 0, "queries_without_positive": 0, "queries_without_negatives": 0}
    rows = []
    for qid in sorted(qrels):
        positives = [d for d, rel in qrels[qid].items() if rel > 0]
        if not positives or qid not in queries:
            dropped["queries_without_positive"] += 1
            continue
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))[rank_start:rank_end]
        pos_score = (positive_scores or {}).get(qid, max((run.get(qid, {}).get(p, -np.inf) for p in positives)))
        candidates = []
        for doc, score in ranked:
            if doc in qrels[qid] and qrels[qid][doc] > 0:
                dropped["positives"] += 1
                continue
            if np.isfinite(pos_score) and ((margin is not None and score >= pos_score - margin) or
                                           (relative_threshold is not None and pos_score > 0
                                            and score >= relative_threshold * pos_score)):
                dropped["false_negatives"] += 1
                continue
            candidates.append(doc)
        if not candidates:
            dropped["queries_without_negatives"] += 1
            continue
        rng = np.random.default_rng([seed, len(rows)])
        picked = sorted(rng.choice(len(candidates), min(num_negatives, len(candidates)), replace=False))
        negatives = [candidates[i] for i in picked]
        positive = positives[0]
        rows.append({"query": queries[qid], "positive": corpus[positive], "negatives": [corpus[d] for d in negatives],
                     "query_id": qid, "positive_id": positive, "negative_ids": negatives})
    return rows, dropped


def write_jsonl(rows: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
