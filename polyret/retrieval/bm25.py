"""BM25 baseline through bm25s, for comparison with the neural systems."""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from polyret.io.runs import Run

# Words, or single CJK / kana characters (those scripts have no spaces between words).
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def bm25_search(corpus: Mapping[str, str], queries: Mapping[str, str], k: int = 100, k1: float = 1.5,
                b: float = 0.75) -> Run:
    import bm25s

    doc_ids = list(corpus)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index([tokenize(corpus[d]) for d in doc_ids], show_progress=False)
    k = min(k, len(doc_ids))
    run: Run = {}
    qids = list(queries)
    tokens = [tokenize(queries[q]) or ["<empty>"] for q in qids]
    rows, scores = retriever.retrieve(tokens, k=k, show_progress=False)
    for qid, row, score in zip(qids, np.asarray(rows), np.asarray(scores)):
        run[qid] = {doc_ids[int(r)]: float(s) for r, s in zip(row, score) if s > 0}
    return run
