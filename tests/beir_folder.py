"""Tests' writer of a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) from id -> text maps and qrels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping


def write_beir(out: Path, corpus: Mapping[str, str], queries: Mapping[str, str],
               qrels_by_split: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Path:
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in corpus.items()))
    (out / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    for split, qrels in qrels_by_split.items():
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{r}\n" for q, docs in qrels.items() for d, r in docs.items()))
    return out
