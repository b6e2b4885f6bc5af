"""Examples per second of the training input pipeline (read -> tokenise -> feature converter -> batch)
with and without seqio's offline cache, for the SWIM-IR pairs mixture of the template data.

  python benchmarks/seqio_cache.py [--entities 3000] [--batch 64] [--num_shards 64] [--batches 2000]

"uncached": tokenised on the fly (training without DatasetConfig.use_cached); "seqio cached": seqio's own
read of the cache (`seqio.get_dataset(use_cached=True)`: parse, cast, trim and convert one example at a
time, then mix and batch); "cached": what the trainer does with use_cached (`dataset.batched_dataset`:
records mixed by rate, then parsed and padded a batch at a time). Each is read as training reads it
(shuffled, repeated), timed over `--batches` batches (a quarter of them for the slower two) after 10 warm-up batches; CPU time (all threads) per
example is printed too, as a figure less sensitive to other load on the machine. The cache is written
first by `caching.cache_tasks` (seqio's Beam pipeline, DirectRunner), timed once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import seqio
from absl import logging as absl_logging

from polyret.seqio_tasks import caching
from polyret.seqio_tasks import dataset as D
from polyret.seqio_tasks import tasks as T
from polyret.seqio_tasks.feature_converters import DualEncoderFeatureConverter
from polyret.seqio_tasks.templates import write_template_dataset
from polyret.seqio_tasks.vocab import train_sentencepiece

LENGTHS = {"inputs": 64, "targets": 256}  # the SWIM-X shapes


def _rate(make, batches: int) -> tuple[float, float]:
    """(examples per second, examples per CPU-second) over `batches` batches after 10 warm-up batches."""
    it = make().as_numpy_iterator()
    for _ in range(10):
        next(it)
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        n += next(it)["left_encoder_input_tokens"].shape[0]
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--num_shards", type=int, default=64)
    ap.add_argument("--batches", type=int, default=2000)
    args = ap.parse_args()
    absl_logging.set_verbosity(absl_logging.ERROR)  # seqio warns per task that uncached reads are not recommended
    tmp = Path(tempfile.mkdtemp())
    data = write_template_dataset(tmp / "data", num_entities=args.entities)
    vocab = seqio.SentencePieceVocabulary(str(train_sentencepiece([data["text"]], tmp / "sp", vocab_size=1000)))
    swim = sorted(data["train"].glob("swim_ir_*.jsonl"))
    names = T.register_swim_ir_tasks({tuple(p.stem[len("swim_ir_"):].rsplit("_", 1)): p for p in swim}, vocab,
                                     prefix="b_swim")

    start = time.perf_counter()
    done = caching.cache_tasks(names, str(tmp / "cache"), num_shards=args.num_shards, report=None)
    cache_seconds = time.perf_counter() - start
    total = sum(d.examples["train"] for d in done)
    seqio.add_global_cache_dirs([str(tmp / "cache")])
    caching.check_cached("b_swim", [])

    print(f"SWIM-IR pairs mixture: {len(names)} tasks, {total} examples, lengths {LENGTHS}, batch {args.batch}")
    print(f"caching (Beam DirectRunner, {args.num_shards} shards a task): {cache_seconds:.1f} s = "
          f"{total / cache_seconds:,.0f} ex/s, once")
    converter = DualEncoderFeatureConverter()
    pipelines = {
        "uncached": lambda: D.batched_dataset("b_swim", LENGTHS, args.batch, converter, seed=0),
        "seqio cached": lambda: seqio.get_dataset("b_swim", LENGTHS, converter, use_cached=True, shuffle=True,
                                                  num_epochs=None, seed=0).batch(args.batch, drop_remainder=True),
        "cached": lambda: D.batched_dataset("b_swim", LENGTHS, args.batch, converter, seed=0, use_cached=True),
    }
    # the slow pipelines over a quarter of the batches (still tens of thousands of examples)
    rates = {name: _rate(make, args.batches // (1 if name == "cached" else 4)) for name, make in pipelines.items()}
    print(f"{'':14s} {'ex/s':>9s} {'ex/CPU-s':>9s} {'ratio ex/s':>11s} {'ratio CPU':>10s}  (vs uncached)")
    for name, (wall, cpu) in rates.items():
        print(f"{name:14s} {wall:9,.0f} {cpu:9,.0f} {wall / rates['uncached'][0]:10.1f}x {cpu / rates['uncached'][1]:9.1f}x")


if __name__ == "__main__":
    main()
