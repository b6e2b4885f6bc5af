"""Stage 6_mine/: hard negatives mined with round 1, optionally scored by a cross-encoder (GPL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polyret.experiments.adapt.checks import labels_checkpoint
from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.corpus import Corpus
from polyret.experiments.adapt.search import by_partition, model_searcher
from polyret.experiments.adapt.stage_files import read_jsonl, stage_dir, write_jsonl
from polyret.io.outputs import atomic_write_text
from polyret.retrieval.mining import mine_hard_negatives


def label_rows(rows: list[dict[str, Any]], checkpoint: str) -> None:
    """Add `scores` (the reranker's logit for the positive, then each negative) to every mined row, in place."""
    from polyret.retrieval.rerank import PairScorer
    scorer = PairScorer.from_checkpoint(checkpoint)
    pairs = [(r["query"], text) for r in rows for text in [r["positive"], *r["negatives"]]]
    scores = scorer.score(pairs, progress=True).tolist()
    width = 1 + len(rows[0]["negatives"]) if rows else 0
    for i, row in enumerate(rows):
        row["scores"] = scores[i * width:(i + 1) * width]


def mine_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, split_dir: Path,
               round1: Path, vectors: Path) -> dict[str, Any]:
    """Hard negatives for the training queries from round 1's ranking (within each passage's language; its
    passage vectors in `vectors`)."""
    fingerprint = {"upstream": upstream, "num_negatives": config.num_negatives, **(
        {"labels": config.labels} if config.labels else {})}

    def build(tmp: Path) -> None:
        train = read_jsonl(split_dir / "train.jsonl")
        queries = {r["_id"]: r["query"] for r in train}
        run = by_partition(corpus, queries, {r["_id"]: [r["passage_id"]] for r in train},
                           model_searcher(corpus, config, round1, vectors), 30)
        # A positive's translations (its group) are judged relevant too: never mined as its negatives.
        qrels = {r["_id"]: {r["passage_id"]: 1, **dict.fromkeys(corpus.translations(r["passage_id"]), 1)}
                 for r in train}
        rows, counts = mine_hard_negatives(run, qrels, queries, corpus.texts, num_negatives=config.num_negatives,
                                           rank_start=0, rank_end=30, seed=config.seed)
        rows = [r for r in rows if len(r["negatives"]) == config.num_negatives]
        for r in rows:  # the groups ride along so that training masks them across rows too
            r["group"] = corpus.groups.get(r["positive_id"])
            r["negative_groups"] = [corpus.groups.get(n) for n in r["negative_ids"]]
        if config.labels:
            label_rows(rows, labels_checkpoint(config.labels))
        write_jsonl(tmp / "mined.jsonl", rows)
        atomic_write_text(tmp / "counts.json", json.dumps({**counts, "rows": len(rows)}, indent=1))

    stage_dir(folder, "adapt_mine", fingerprint, build)
    return fingerprint
