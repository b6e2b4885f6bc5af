"""Stage 3_filter/: duplicates dropped, then round-trip consistency against the base model and BM25 (InPars);
with `--round_trip round1`, stage 5b_round_trip/ instead: round 1, trained on every synthetic query, must rank
each training query's passage in its top k (Promptagator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.corpus import Corpus
from polyret.experiments.adapt.search import bm25_searcher, by_partition, model_searcher
from polyret.experiments.adapt.stage_files import read_jsonl, stage_dir, write_jsonl
from polyret.synthesis.filters import normalize_query


def drop_duplicates(records: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
    """(first of each, the rest): duplicates share query language (`code`), passage language (`lang`) and
    the normalized query; in a collection of translations the same question asked of another language's
    copy is another training pair."""
    first, rest, seen = [], [], set()
    for r in records:
        key = (r["code"], r["lang"], normalize_query(r["query"]))
        (rest if key in seen else first).append(r)
        seen.add(key)
    return first, rest


def rank_of(run: Mapping[str, Mapping[str, float]], query_id: str, passage_id: str) -> int | None:
    """The passage's 1-based rank in the query's run (None when it was not retrieved)."""
    order = sorted(run.get(query_id, {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return next((i + 1 for i, (d, _) in enumerate(order) if d == passage_id), None)


def filter_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, generate_dir: Path,
                 base_dir: Path, vectors: Path) -> dict[str, Any]:
    """Duplicates dropped per (query language, passage language), across rounds; then (`--round_trip base`)
    round-trip consistency against the base model (its passage vectors in `vectors`) and BM25."""
    fingerprint = {"upstream": upstream, "filter_top_k": config.filter_top_k,
                   "query_max_length": config.query_max_length, "passage_max_length": config.passage_max_length,
                   **({"round_trip": config.round_trip} if config.round_trip != "base" else {})}

    def build(tmp: Path) -> None:
        generated = [{**r, "_id": f"{r['_id']}-{round_}", "lang": corpus.languages[r["passage_id"]],
                      **({"group": corpus.groups[r["passage_id"]]} if r["passage_id"] in corpus.groups else {})}
                     for round_ in range(config.queries_per_passage)
                     for r in read_jsonl(generate_dir / f"queries_{round_}.jsonl")]
        records, duplicates = drop_duplicates(generated)
        duplicates = [{**r, "reason": "duplicate"} for r in duplicates]
        if config.round_trip != "base":  # round 1 filters later (round_trip_stage)
            write_jsonl(tmp / "kept.jsonl", records)
            write_jsonl(tmp / "dropped.jsonl", duplicates)
            return
        queries = {r["_id"]: r["query"] for r in records}
        passage_of = {r["_id"]: [r["passage_id"]] for r in records}
        k = config.filter_top_k
        bm25 = by_partition(corpus, queries, passage_of, bm25_searcher(corpus), k)
        dense = by_partition(corpus, queries, passage_of, model_searcher(corpus, config, base_dir, vectors), k)
        kept, dropped = [], []
        for r in records:
            ranks = {name: rank_of(run, r["_id"], r["passage_id"]) for name, run in (("base_rank", dense),
                                                                                     ("bm25_rank", bm25))}
            if any(v is not None and v <= k for v in ranks.values()):
                kept.append({**r, **ranks})
            else:
                dropped.append({**r, **ranks, "reason": "round_trip"})
        write_jsonl(tmp / "kept.jsonl", kept)
        write_jsonl(tmp / "dropped.jsonl", dropped + duplicates)

    stage_dir(folder, "adapt_filter", fingerprint, build)
    return fingerprint


def round_trip_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, split_dir: Path,
                     round1: Path, vectors: Path) -> dict[str, Any]:
    """Promptagator's filter: a training query is kept when round 1 (trained on every synthetic query) ranks
    its passage in the top --filter_top_k of the passage's language; train.jsonl (what round 2 mines from)
    and dropped.jsonl (with round 1's rank)."""
    fingerprint = {"upstream": upstream, "filter_top_k": config.filter_top_k}

    def build(tmp: Path) -> None:
        train = read_jsonl(split_dir / "train.jsonl")
        queries = {r["_id"]: r["query"] for r in train}
        run = by_partition(corpus, queries, {r["_id"]: [r["passage_id"]] for r in train},
                           model_searcher(corpus, config, round1, vectors), config.filter_top_k)
        kept, dropped = [], []
        for r in train:
            rank = rank_of(run, r["_id"], r["passage_id"])
            (kept if rank is not None and rank <= config.filter_top_k else dropped).append(
                {**r, "round1_rank": rank})
        write_jsonl(tmp / "train.jsonl", kept)
        write_jsonl(tmp / "dropped.jsonl", [{**r, "reason": "round_trip"} for r in dropped])

    stage_dir(folder, "adapt_round_trip", fingerprint, build)
    return fingerprint
