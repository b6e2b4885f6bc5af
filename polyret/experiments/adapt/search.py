"""Search the collection with one model (or BM25) within any subset of its passages: one language's
partition, or the whole collection.

A dual encoder's passage vectors are encoded once per model, into resumable shards under
`<output_dir>/vectors/<model>/` (`encode_corpus_to_shards`: a kill resumes after the last finished shard), and
every stage that searches with that model reuses them: the base model's serve the filter and the evaluation,
round 1's the mining and the evaluation. Memory holds one shard while encoding, and the searched subset's
vectors while searching. ColBERT models are encoded in memory for each search."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from polyret.experiments.adapt.config import AdaptConfig, prompt_overrides
from polyret.experiments.adapt.corpus import Corpus
from polyret.retrieval.bm25 import bm25_search
from polyret.retrieval.encode import TowerEncoder, encode_corpus_to_shards
from polyret.retrieval.pipeline import dense_search, retrieve
from polyret.retrieval.vector_file import open_embeddings

Run = dict[str, dict[str, float]]
Searcher = Callable[[Sequence[str], Mapping[str, str], int], Run]  # (passage ids, queries, k) -> top-k run


def bm25_searcher(corpus: Corpus) -> Searcher:
    return lambda ids, queries, k: bm25_search({p: corpus.texts[p] for p in ids}, queries, k=k)


def model_searcher(corpus: Corpus, config: AdaptConfig, checkpoint: Path, vectors_dir: Path) -> Searcher:
    """Search with a checkpoint; a dual encoder's passage vectors come from (or are first written to)
    vectors_dir."""
    encoder = TowerEncoder.from_checkpoint(checkpoint, **prompt_overrides(config))
    if encoder.is_colbert:
        return lambda ids, queries, k: retrieve(encoder, {p: corpus.texts[p] for p in ids}, queries, k,
                                                config.query_max_length, config.passage_max_length)
    # The shards' own fingerprint (texts, model parameters, prompts, lengths) decides reuse: vectors of
    # anything else (a retrained round, another --shard_size) are encoded again and replace them.
    encode_corpus_to_shards(encoder, corpus.texts, vectors_dir, config.passage_max_length, config.shard_size,
                            overwrite=True)
    doc_ids, vectors = open_embeddings(vectors_dir)
    row_of = {d: i for i, d in enumerate(doc_ids)}

    def search(ids: Sequence[str], queries: Mapping[str, str], k: int) -> Run:
        query_ids = list(queries)
        query_vectors = encoder.encode([queries[q] for q in query_ids], "left", config.query_max_length)
        if len(ids) == len(doc_ids):  # the whole collection: streamed from the shards into the index
            return dense_search(query_ids, query_vectors, doc_ids, vectors, k, measure_recall=False).run
        subset = vectors.take(np.array([row_of[p] for p in ids]))
        return dense_search(query_ids, query_vectors, list(ids), subset, k, measure_recall=False).run

    return search


def by_partition(corpus: Corpus, queries: Mapping[str, str], passage_of: Mapping[str, Sequence[str]],
                 search: Searcher, k: int) -> Run:
    """Search every query within the language partition of its relevant passages (each query's relevant
    passages lie in one partition)."""
    run: Run = {}
    for ids in corpus.partitions().values():
        members = set(ids)
        chosen = {q: t for q, t in queries.items() if any(p in members for p in passage_of[q])}
        if chosen:
            run.update(search(ids, chosen, k))
    return run
