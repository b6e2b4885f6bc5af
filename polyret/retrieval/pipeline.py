"""Evaluation pipeline: check inputs, encode (or take precomputed vectors), search, score, write outputs."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from polyret.io.formats import DataError
from polyret.retrieval import metrics as M
from polyret.retrieval.index import ScannConfig, ScannIndex
from polyret.retrieval.index import measure_recall as measure_recall_vs_brute_force
from polyret.retrieval.vector_file import VectorFile
from polyret.io.runs import Run, run_from_topk, write_trec_run

if TYPE_CHECKING:  # the encoder brings JAX and the model code: imported where a checkpoint is used
    from polyret.retrieval.encode import TowerEncoder


def check_judgements(qrels: Mapping[str, Mapping[str, int]], queries: Mapping[str, str], corpus_ids,
                     qrels_path: str | os.PathLike) -> None:
    """Every judged query and document must exist; otherwise metrics would silently be wrong."""
    corpus_ids = set(corpus_ids)
    for qid, docs in qrels.items():
        if qid not in queries:
            raise DataError(qrels_path, None, f"query id {qid!r} is not in the queries file")
        for doc in docs:
            if doc not in corpus_ids:
                raise DataError(qrels_path, None, f"document id {doc!r} (query {qid!r}) is not in the corpus")


def check_embedding_coverage(ids: Sequence[str], expected: Mapping[str, str], ids_source: str | os.PathLike,
                             expected_source: str | os.PathLike, what: str,
                             required: Sequence[str] | None = None) -> None:
    """Precomputed vectors must be those of the corpus (or queries) being evaluated: a missing vector would
    silently score zero, a foreign one would be retrieved. `required`: the ids that must have one (default:
    every expected id; for queries, the judged ones — a queries file often holds train and test queries)."""
    have = set(ids)
    required = list(expected) if required is None else required
    missing = [i for i in required if i not in have]
    if missing:
        judged = "" if len(required) == len(expected) else "judged "
        raise DataError(ids_source, None, f"{len(missing)} of the {len(required)} {judged}{what} in {expected_source} "
                                          f"have no vector (first: {missing[0]!r}); the embeddings do not match the "
                                          f"{what}")
    unknown = sorted(have - set(expected))
    if unknown:
        raise DataError(ids_source, None, f"{len(unknown)} ids are not {what} in {expected_source} "
                                          f"(first: {unknown[0]!r}); the embeddings do not match the {what}")


def first_non_finite(vectors: np.ndarray, block: int = 65536) -> int | None:
    """Row of the first vector holding NaN or inf (checked in blocks: no full-size temporary), or None."""
    for start in range(0, len(vectors), block):
        finite = np.isfinite(vectors[start:start + block]).all(axis=1)
        if not finite.all():
            return start + int(np.flatnonzero(~finite)[0])
    return None


def read_query_languages(path: str | os.PathLike) -> dict[str, str]:
    """{qid: language} from a queries file's language field or column (empty when it has none)."""
    from polyret.io.formats import read_languages
    return read_languages(path)


def dense_search(query_ids: Sequence[str], query_vectors: np.ndarray, doc_ids: Sequence[str],
                 doc_vectors: np.ndarray | VectorFile, k: int, config: ScannConfig | None = None,
                 measure_recall: bool = True) -> tuple[Run, ScannIndex, float | None]:
    """ScaNN search -> (run, index, recall@10 of the index against brute force on these queries).
    doc_vectors may be a VectorFile (read from disk in blocks): the index then holds the only in-memory
    copy, and the recall check streams the file."""
    if query_vectors.shape[1] != doc_vectors.shape[1]:
        raise ValueError(f"embedding dimension mismatch: queries {query_vectors.shape[1]}, "
                         f"corpus {doc_vectors.shape[1]}")
    for what, ids, vectors in (("query", query_ids, query_vectors), ("document", doc_ids, doc_vectors)):
        row = first_non_finite(vectors)
        if row is not None:  # NaN scores would rank arbitrarily and be written as `nan` into the run
            raise ValueError(f"the vector of {what} {ids[row]!r} is not finite (NaN or inf); a diverged checkpoint?")
    # The auto-tuner (ScannConfig.recall_target) tunes on half of a sample of these queries and holds
    # out the other half; the recall reported is on (up to 1000 of) all of them, streamed (bounded memory).
    index = ScannIndex.build(list(doc_ids), doc_vectors, k=k, config=config, tuning_queries=query_vectors)
    rows, scores = index.search(query_vectors, k)
    recall = None
    if measure_recall and not index.brute_force:
        recall = measure_recall_vs_brute_force(index, query_vectors, doc_vectors, 10)
    return run_from_topk(list(query_ids), list(doc_ids), rows, scores), index, recall


def scann_config(recall_target: float | None = None, threads: int | None = None) -> ScannConfig:
    """ScannConfig as gin binds it, with the evaluate flags on top (recall_target 0: no tuning)."""
    changes: dict = {}
    if recall_target is not None:
        changes["recall_target"] = recall_target or None
    if threads is not None:
        changes["threads"] = threads
    return dataclasses.replace(ScannConfig(), **changes)


class DenseResult(NamedTuple):
    run: Run
    index: ScannIndex
    recall: float | None
    doc_ids: list[str]
    doc_vectors: np.ndarray
    query_ids: list[str]
    query_vectors: np.ndarray


def encode_and_search(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
                      query_max_length: int, passage_max_length: int, progress: bool = False,
                      measure_recall: bool = True, config: ScannConfig | None = None) -> DenseResult:
    """Encode a corpus and queries with a dual encoder, then search them with ScaNN."""
    doc_ids, query_ids = list(corpus), list(queries)
    doc_vectors = encoder.encode([corpus[d] for d in doc_ids], "right", passage_max_length, progress,
                                 "encoding passages")
    query_vectors = encoder.encode([queries[q] for q in query_ids], "left", query_max_length, progress,
                                   "encoding queries")
    run, index, recall = dense_search(query_ids, query_vectors, doc_ids, doc_vectors, k, config=config,
                                      measure_recall=measure_recall)
    return DenseResult(run, index, recall, doc_ids, doc_vectors, query_ids, query_vectors)


def colbert_search(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
                   query_max_length: int, window: int = 180, stride: int = 90,
                   index_dir: str | os.PathLike | None = None, mode: str = "auto",
                   exact_below_tokens: int = 500_000) -> Run:
    """ColBERT: documents split into `window`-token windows with `stride` (MaxP). mode "exact": every token
    vector in memory, token-level candidates and exact MaxSim (small corpora); "compressed": token vectors
    encoded in shards under index_dir/tokens and indexed PLAID-style under index_dir/compressed (out of
    core, resumable, reused by a rerun), final candidates re-scored with their exact vectors; "auto":
    exact below `exact_below_tokens` tokens, else compressed."""
    import hashlib

    from polyret.retrieval.compressed_index import (CompressedLateInteractionIndex, build_compressed_index,
                                                    write_token_shards)
    from polyret.retrieval.late_interaction import LateInteractionIndex, maxp, split_windows

    if mode not in ("auto", "exact", "compressed"):
        raise ValueError(f"ColBERT index mode must be auto, exact or compressed, got {mode!r}")
    doc_ids = list(corpus)
    token_ids = encoder.tokenizer.encode([corpus[d] for d in doc_ids], max_length=10 ** 9)
    window_ids, window_doc = [], []
    for doc, ids in zip(doc_ids, token_ids):
        # Windows of the text; each window gets the vocabulary's own start ([CLS] / <s>, if any) and end ids.
        start, end = encoder.tokenizer.start_ids, [encoder.tokenizer.eos_id]
        body = ids[len(start):-1]
        for w in split_windows(body, window - len(start) - 1, stride):
            window_ids.append(start + w + end)
            window_doc.append(doc)
    max_len = max(len(w) for w in window_ids)
    if mode == "auto":
        mode = "exact" if sum(len(w) for w in window_ids) < exact_below_tokens or index_dir is None else "compressed"
    if mode == "compressed" and index_dir is None:
        raise ValueError("the compressed ColBERT index needs an index folder")
    query_ids = list(queries)
    query_vectors = encoder.encode([queries[q] for q in query_ids], "left", query_max_length)
    if mode == "exact":
        window_vectors = encoder.encode_ids(window_ids, "right", max_len, progress=True, desc="encoding passages")
        index = LateInteractionIndex([str(i) for i in range(len(window_ids))], window_vectors)
        hits_per_query = [index.search(qv, k=k * 4) for qv in tqdm(query_vectors, desc="MaxSim search", unit="query")]
    else:
        # What produced the shards: a rerun with another corpus or checkpoint must not reuse them.
        digest = hashlib.sha256()
        for w in window_ids:
            digest.update(np.asarray(w, np.int32).tobytes() + b"|")
        fingerprint = {"windows_sha256": digest.hexdigest(), "model": repr(encoder.config),
                       "params_sha256": _params_digest(encoder.params)}
        tokens_dir = write_token_shards(
            Path(index_dir) / "tokens", [str(i) for i in range(len(window_ids))],
            lambda a, b: encoder.encode_ids(window_ids[a:b], "right", max_len), fingerprint=fingerprint)
        compressed = build_compressed_index(tokens_dir, Path(index_dir) / "compressed")
        index = CompressedLateInteractionIndex(compressed, exact_shards=tokens_dir)
        hits_per_query = index.search_many(list(query_vectors), k=k * 4)
    run: Run = {}
    for qid, hits in zip(query_ids, hits_per_query):
        best = maxp(np.array([s for _, s in hits]), [window_doc[int(i)] for i, _ in hits])
        run[qid] = dict(sorted(best.items(), key=lambda kv: -kv[1])[:k])
    return run


def _params_digest(params) -> str:
    """sha256 of a parameter tree's leaves (identifies the checkpoint that encoded a shard folder)."""
    import hashlib

    import jax

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def retrieve(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
             query_max_length: int, passage_max_length: int) -> Run:
    """Top-k run of a checkpoint on a corpus: ScaNN over single vectors, late interaction over token vectors."""
    if encoder.is_colbert:
        return colbert_search(encoder, corpus, queries, k, query_max_length)
    return encode_and_search(encoder, corpus, queries, k, query_max_length, passage_max_length,
                             measure_recall=False).run


def write_outputs(output_dir: str | os.PathLike, runs: Mapping[str, Run], tables: Mapping[str, dict],
                  extra: dict | None = None) -> str:
    """Run files, metrics.json and metrics.md under output_dir; returns the markdown."""
    for name, run in runs.items():  # checked before anything is written: a TREC run never holds `nan`
        bad = next(((q, d) for q, docs in run.items() for d, score in docs.items() if not np.isfinite(score)), None)
        if bad is not None:
            raise ValueError(f"{name} run: the score of document {bad[1]!r} for query {bad[0]!r} is not finite")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        write_trec_run(run, out / f"{name}.trec", tag=name)
    (out / "metrics.json").write_text(json.dumps({"metrics": tables, **(extra or {})}, indent=2))
    markdown = "\n\n".join(M.format_table(table, name) for name, table in tables.items())
    (out / "metrics.md").write_text(markdown + "\n")
    return markdown


def load_eval_inputs(corpus_path, queries_path, qrels_path):
    """(corpus {id: title + text}, queries, qrels) from separate files, judgements checked."""
    from polyret.io.benchmarks import load_files
    bench = load_files(corpus_path, queries_path, qrels_path)
    return bench.corpus, bench.queries, bench.qrels


def load_eval_benchmark(dataset: str | None, split: str | None = None, corpus_path=None, queries_path=None,
                        qrels_path=None, answers_path=None, corpus_texts: bool = True):
    """A `polyret.io.benchmarks.Benchmark` from `--dataset` (ir_datasets id or a benchmark folder) or
    from separate files (`corpus_texts=False`: only the corpus ids are kept)."""
    from polyret.io.benchmarks import load_benchmark, load_files
    if dataset:
        return load_benchmark(dataset, split)
    return load_files(corpus_path, queries_path, qrels_path, answers_path, corpus_texts=corpus_texts)
