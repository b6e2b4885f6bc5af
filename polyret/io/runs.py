"""TREC run files (`qid Q0 docid rank score tag`) and the in-memory run: {qid: {docid: score}}."""

from __future__ import annotations

import math
import os
from pathlib import Path

from polyret.io.formats import DataError, iter_columns

Run = dict[str, dict[str, float]]


def write_trec_run(run: Run, path: str | os.PathLike, tag: str = "polyret") -> Path:
    path = Path(path)
    for qid, docs in run.items():
        for name, value in [("query", qid)] + [("document", d) for d in docs]:
            if len(value.split()) != 1:
                raise ValueError(f"{path}: {name} id {value!r} is empty or holds whitespace, which a TREC run line "
                                 "cannot carry")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docid, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)
    return path


def read_trec_run(path: str | os.PathLike) -> Run:
    run: Run = {}
    for line_no, parts in iter_columns(path, 6, "qid Q0 docid rank score tag"):
        try:
            score = float(parts[4])
        except ValueError:
            raise DataError(path, line_no, f"score {parts[4]!r} is not a number") from None
        run.setdefault(parts[0], {})[parts[2]] = score
    return run


def run_from_topk(query_ids: list[str], doc_ids: list[str], rows, scores) -> Run:
    """Search output (row indices and scores per query) -> Run. Slots the index could not fill (row -1, or a
    NaN score when a tree search reaches fewer than k candidates) are dropped; input vectors are checked finite
    before any search, so a non-finite score here can only be such a slot."""
    return {qid: {doc_ids[int(r)]: float(s) for r, s in zip(row, score) if r >= 0 and math.isfinite(float(s))}
            for qid, row, score in zip(query_ids, rows, scores)}
