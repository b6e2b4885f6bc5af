"""Evaluation pipeline: check inputs, encode (or take precomputed vectors), search, score, write outputs.

The index is chosen by its registered name (`SearchConfig.index`, gin); every index answers the same
`search`, so nothing here depends on which one it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import gin
import numpy as np

from polyret.errors import DataError
from polyret.io.benchmarks import load_benchmark, load_files
from polyret.io.runs import Run, write_trec_run
from polyret.retrieval import metrics as M
from polyret.retrieval.compressed_index import TokenShards, write_token_shards
from polyret.retrieval.late_interaction import maxp, split_windows
from polyret.retrieval.scann_index import measure_recall as measure_recall_vs_brute_force
from polyret.retrieval.search_index import Index, get_index
from polyret.retrieval.vector_file import VectorFile

if TYPE_CHECKING:  # the encoder brings JAX and the model code: imported where a checkpoint is used
    from polyret.retrieval.encode import TowerEncoder


@gin.configurable
@dataclass(frozen=True)
class SearchConfig:
    """The index `evaluate`, `mine_negatives`, the demo and evaluation during training search with, by its
    registered name (`--gin.SearchConfig.index='maxsim'`; names: search_index.index_names()). None: 'scann'
    for one vector per text; for token vectors 'maxsim' (exact, in memory) below `exact_below_tokens`
    tokens or without an index folder, else 'compressed' (out of core, in the index folder)."""
    index: str | None = None
    exact_below_tokens: int = 500_000


def index_class(multi_vector: bool, num_tokens: int = 0, folder: str | os.PathLike | None = None) -> type[Index]:
    """The registered index SearchConfig names (or its default) for one-vector or token-vector documents."""
    config = SearchConfig()
    name = config.index
    if name is None:
        if not multi_vector:
            name = "scann"
        else:
            name = "maxsim" if num_tokens < config.exact_below_tokens or folder is None else "compressed"
    cls = get_index(name)
    if cls.multi_vector != multi_vector:
        have, takes = ("token vectors", "one vector per text") if multi_vector else ("one vector per text",
                                                                                     "token vectors")
        raise ValueError(f"SearchConfig.index = {name!r} indexes {takes}, but this model gives {have}")
    if cls.on_disk and folder is None:
        raise ValueError(f"SearchConfig.index = {name!r} is written to disk; this search has no index folder")
    return cls


class Found(NamedTuple):
    run: Run
    index: Index
    recall: float | None  # recall@10 against brute force (approximate dense indexes, when measured)


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


def dense_search(query_ids: Sequence[str], query_vectors: np.ndarray, doc_ids: Sequence[str],
                 doc_vectors: np.ndarray | VectorFile, k: int, measure_recall: bool = True,
                 index_dir: str | os.PathLike | None = None) -> Found:
    """Search with the chosen dense index -> (run, index, recall@10 of an approximate index against brute
    force on these queries). doc_vectors may be a VectorFile (read from disk in blocks): the index then
    holds the only in-memory copy, and the recall check streams the file."""
    if query_vectors.shape[1] != doc_vectors.shape[1]:
        raise ValueError(f"embedding dimension mismatch: queries {query_vectors.shape[1]}, "
                         f"corpus {doc_vectors.shape[1]}")
    for what, ids, vectors in (("query", query_ids, query_vectors), ("document", doc_ids, doc_vectors)):
        row = first_non_finite(vectors)
        if row is not None:  # NaN scores would rank arbitrarily and be written as `nan` into the run
            raise ValueError(f"the vector of {what} {ids[row]!r} is not finite (NaN or inf); a diverged checkpoint?")
    cls = index_class(multi_vector=False, folder=index_dir)
    # ScaNN's auto-tuner (ScannConfig.recall_target) tunes on half of a sample of these queries and holds
    # out the other half; the recall reported is on (up to 1000 of) all of them, streamed (bounded memory).
    index = cls.build(list(doc_ids), doc_vectors, k, folder=_index_folder(index_dir, cls), queries=query_vectors)
    found = index.search(query_vectors, k)
    recall = None
    if measure_recall and not index.exact:
        recall = measure_recall_vs_brute_force(index, query_vectors, doc_vectors, 10)
    return Found(found.to_run(query_ids, index.ids), index, recall)


def _index_folder(index_dir: str | os.PathLike | None, cls: type[Index]) -> Path | None:
    """Where an on-disk index writes itself: index_dir/<its name>."""
    return None if index_dir is None else Path(index_dir) / cls.name


class DenseResult(NamedTuple):
    run: Run
    index: Index
    recall: float | None
    doc_ids: list[str]
    doc_vectors: np.ndarray
    query_ids: list[str]
    query_vectors: np.ndarray


def encode_and_search(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
                      query_max_length: int, passage_max_length: int, progress: bool = False,
                      measure_recall: bool = True, index_dir: str | os.PathLike | None = None) -> DenseResult:
    """Encode a corpus and queries with a dual encoder, then search them with the chosen index."""
    doc_ids, query_ids = list(corpus), list(queries)
    doc_vectors = encoder.encode([corpus[d] for d in doc_ids], "right", passage_max_length, progress,
                                 "encoding passages")
    query_vectors = encoder.encode([queries[q] for q in query_ids], "left", query_max_length, progress,
                                   "encoding queries")
    run, index, recall = dense_search(query_ids, query_vectors, doc_ids, doc_vectors, k,
                                      measure_recall=measure_recall, index_dir=index_dir)
    return DenseResult(run, index, recall, doc_ids, doc_vectors, query_ids, query_vectors)


def colbert_search(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
                   query_max_length: int, window: int = 180, stride: int = 90,
                   index_dir: str | os.PathLike | None = None, progress: bool = True) -> Found:
    """ColBERT: documents split into `window`-token windows with `stride` (MaxP), searched with the chosen
    token-vector index. An index that lives on disk (`on_disk`, e.g. 'compressed') gets the window vectors
    as shards encoded under index_dir/tokens (out of core, resumable, reused by a rerun) and writes itself
    to index_dir/<its name>; any other gets them in memory."""
    doc_ids = list(corpus)
    token_ids = encoder.tokenize([corpus[d] for d in doc_ids], "right", max_length=10 ** 9)
    window_ids, window_doc = [], []
    for doc, ids in zip(doc_ids, token_ids):
        # Windows of the text; each window gets the vocabulary's own start ([CLS] / <s>, if any) and end ids.
        start, end = encoder.tokenizer.start_ids, [encoder.tokenizer.eos_id]
        body = ids[len(start):-1]
        for w in split_windows(body, window - len(start) - 1, stride):
            window_ids.append(start + w + end)
            window_doc.append(doc)
    max_len = max(len(w) for w in window_ids)
    cls = index_class(multi_vector=True, num_tokens=sum(len(w) for w in window_ids), folder=index_dir)
    query_ids = list(queries)
    query_vectors = encoder.encode([queries[q] for q in query_ids], "left", query_max_length)
    names = [str(i) for i in range(len(window_ids))]
    vectors: Any
    if cls.on_disk:
        # What produced the shards: a rerun with another corpus or checkpoint must not reuse them.
        digest = hashlib.sha256()
        for w in window_ids:
            digest.update(np.asarray(w, np.int32).tobytes() + b"|")
        fingerprint = {"windows_sha256": digest.hexdigest(), "model": repr(encoder.config),
                       "params_sha256": _params_digest(encoder.params)}
        vectors = TokenShards(write_token_shards(
            Path(index_dir) / "tokens", names,
            lambda a, b: encoder.encode_ids(window_ids[a:b], "right", max_len), fingerprint=fingerprint,
            progress=progress))
    else:
        vectors = encoder.encode_ids(window_ids, "right", max_len, progress=progress, desc="encoding passages")
    index = cls.build(names, vectors, k * 4, folder=_index_folder(index_dir, cls), queries=query_vectors)
    run: Run = {}
    for qid, hits in zip(query_ids, index.search(query_vectors, k * 4).hits(names)):
        best = maxp(np.array([s for _, s in hits]), [window_doc[int(i)] for i, _ in hits])
        run[qid] = dict(sorted(best.items(), key=lambda kv: -kv[1])[:k])
    return Found(run, index, None)


def search_with_checkpoint(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
                           query_max_length: int, passage_max_length: int,
                           index_dir: str | os.PathLike | None = None, progress: bool = False,
                           measure_recall: bool = True) -> Found:
    """Top-k of a checkpoint on a corpus: single vectors or token vectors (late interaction), by the model."""
    if encoder.is_colbert:
        return colbert_search(encoder, corpus, queries, k, query_max_length, index_dir=index_dir, progress=progress)
    return Found(*encode_and_search(encoder, corpus, queries, k, query_max_length, passage_max_length, progress,
                                    measure_recall, index_dir)[:3])


def _params_digest(params) -> str:
    """sha256 of a parameter tree's leaves (identifies the checkpoint that encoded a shard folder)."""
    import jax  # heavy and optional here: evaluate on precomputed vectors never loads JAX

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def retrieve(encoder: TowerEncoder, corpus: Mapping[str, str], queries: Mapping[str, str], k: int,
             query_max_length: int, passage_max_length: int) -> Run:
    """Top-k run of a checkpoint on a corpus (evaluation during training: in memory, no recall check)."""
    return search_with_checkpoint(encoder, corpus, queries, k, query_max_length, passage_max_length,
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
    bench = load_files(corpus_path, queries_path, qrels_path)
    return bench.corpus, bench.queries, bench.qrels


def load_eval_benchmark(dataset: str | None, split: str | None = None, corpus_path=None, queries_path=None,
                        qrels_path=None, answers_path=None, corpus_texts: bool = True, query_field: str | None = None):
    """A `polyret.io.benchmarks.Benchmark` from `--dataset` (ir_datasets id or a benchmark folder; `query_field`
    picks TREC-style topics' field) or from separate files (`corpus_texts=False`: only the corpus ids are kept)."""
    if dataset:
        return load_benchmark(dataset, split, query_field)
    return load_files(corpus_path, queries_path, qrels_path, answers_path, corpus_texts=corpus_texts)
