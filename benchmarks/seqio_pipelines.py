"""Examples per second of each SeqIO task pipeline (read, tokenise, convert, batch) on this machine,
printed beside a plain-Python reading of the same files (json/csv parsing only, no tokenisation).

  python benchmarks/seqio_pipelines.py [--entities 400] [--batch 64]

The ratio says what the tf.data + SentencePiece pipeline costs over merely reading the records.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import seqio

from polyret.seqio_tasks import dataset as D
from polyret.seqio_tasks import tasks as T
from polyret.seqio_tasks.feature_converters import (DistillationFeatureConverter, DualEncoderFeatureConverter,
                                                    HardNegativeFeatureConverter)
from polyret.seqio_tasks.templates import write_template_dataset
from polyret.seqio_tasks.vocab import train_sentencepiece


def _rate(fn) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start), n


def _plain_jsonl(paths) -> int:
    n = 0
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                json.loads(line)
                n += 1
    return n


def _pipeline(name, lengths, converter, batch) -> int:
    ds = D.batched_dataset(name, lengths, batch, converter, shuffle=False, num_epochs=1)
    return sum(b[next(iter(b))].shape[0] for b in ds.as_numpy_iterator())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = write_template_dataset(tmp / "data", num_entities=args.entities)
    vocab = seqio.SentencePieceVocabulary(str(train_sentencepiece([data["text"]], tmp / "sp", vocab_size=1000)))
    rows = []

    swim = sorted(data["train"].glob("swim_ir_*.jsonl"))
    T.register_swim_ir_tasks({tuple(p.stem[len("swim_ir_"):].rsplit("_", 1)): p for p in swim}, vocab, prefix="b_swim")
    rows.append(("SWIM-IR pairs (mixture)", _rate(lambda: _pipeline("b_swim", {"inputs": 64, "targets": 256},
                                                                   DualEncoderFeatureConverter(), args.batch)),
                 _rate(lambda: _plain_jsonl(swim))))

    neg = sorted(data["train"].glob("hard_negatives_*.jsonl"))
    T.register_hard_negative_task("b_neg", neg[0], vocab, num_negatives=3)
    rows.append(("hard negatives (1 language, 3 negatives)",
                 _rate(lambda: _pipeline("b_neg", {"inputs": 64, "targets": 256, "negative_targets": 256},
                                         HardNegativeFeatureConverter(), args.batch)),
                 _rate(lambda: _plain_jsonl(neg[:1]))))

    # MTD: queries + passages from the template corpus, random teacher scores, 3 languages.
    langs = ["de", "ru", "zh"]
    corpus = {l: [json.loads(x) for x in (data["corpus"] / f"{l}.jsonl").read_text().splitlines()] for l in langs}
    for l in langs:
        (tmp / f"{l}.tsv").write_text("".join(f"{d['_id'][:-3]}\t{d['text']}\n" for d in corpus[l]))
    pids = [d["_id"][:-3] for d in corpus["de"]]
    rng = np.random.default_rng(0)
    queries = [json.loads(x) for x in (data["queries"] / "train" / "en.jsonl").read_text().splitlines()]
    (tmp / "q.tsv").write_text("".join(f"{q['_id']}\t{q['text']}\n" for q in queries))
    with gzip.open(tmp / "scores.jsonl.gz", "wt") as f:
        for q in queries:
            f.write(json.dumps([q["_id"]] + [[p, float(s)] for p, s in
                                             zip(rng.choice(pids, 50, replace=False), rng.normal(size=50))]) + "\n")
    T.register_distillation_task("b_mtd", tmp / "scores.jsonl.gz", tmp / "q.tsv", {l: tmp / f"{l}.tsv" for l in langs},
                                 vocab, num_passages=6)

    def plain_mtd() -> int:
        texts = {l: dict(line.rstrip("\n").split("\t", 1) for line in open(tmp / f"{l}.tsv", encoding="utf-8"))
                 for l in langs}
        n = 0
        with gzip.open(tmp / "scores.jsonl.gz", "rt") as f:
            for line in f:
                row = json.loads(line)
                _ = [texts[langs[i % 3]][p] for i, (p, _) in enumerate(row[1:7])]
                n += 1
        return n
    rows.append(("MTD distillation (K=6, mix passages)",
                 _rate(lambda: _pipeline("b_mtd", {"inputs": 32, "passages": 180}, DistillationFeatureConverter(),
                                         args.batch)), _rate(plain_mtd)))

    docs = data["corpus"] / "en.jsonl"
    T.register_text_span_task("b_spans", [docs], vocab, min_span_length=4)
    rows.append(("span pairs (local JSONL, mC4 preprocessor)",
                 _rate(lambda: _pipeline("b_spans", {"inputs": 64, "targets": 64}, DualEncoderFeatureConverter(),
                                         args.batch)), _rate(lambda: _plain_jsonl([docs]))))

    print(f"{'pipeline':45s} {'seqio ex/s':>12s} {'plain ex/s':>12s} {'ratio':>8s}  (examples)")
    for name, (ours, n), (plain, m) in rows:
        print(f"{name:45s} {ours:12.0f} {plain:12.0f} {ours / plain:8.3f}  ({n} batched / {m} read)")


if __name__ == "__main__":
    main()
