"""`polyret adapt`: a retriever for your own documents in one run. One module per stage, named after it; the
chain that runs them in order is `chain.run_adapt`.

The chain, each stage an ordinary polyret output inside the output folder, skipped when already there,
refused (one line) when it was written with other inputs or settings:
  base/          the base model imported as a polyret checkpoint (a polyret checkpoint is used in place)
  1_sample/      passages sampled uniformly (`sampling.sample_key`), --max_passages of each passage language for
                 each query language, one JSONL per query language
  2_generate/    SAP queries from the LLM server (`synthesis.generate`: resumable, usage counted)
  3_filter/      duplicates dropped per (query language, passage language), then round-trip consistency:
                 a query is kept when the base model or BM25 ranks its passage in the top k (Promptagator /
                 InPars); kept.jsonl, dropped.jsonl (with the reason)
  4_split/       held-out synthetic queries (whole passages held out, their query texts kept out of training)
                 and the SWIM-IR training file
  5_round1/      training from the base (gin_configs/runs/adapt_dual_encoder.gin)
  5b_round_trip/ with --round_trip round1 only: the round-trip filter asks round 1 (trained on every synthetic
                 query; Promptagator) instead of the base model or BM25, and round 2 mines from what it keeps
  6_mine/        hard negatives mined with round 1
  7_round2/      training from round 1 on the mined negatives
  8_evaluate/    base, BM25, round 1 and round 2 on the held-out synthetic queries (and real ones if given),
                 per language pair and over the whole collection at once
  vectors/       each model's passage vectors, encoded once into resumable shards and reused by filter, mining
                 and evaluation
  model/         the best round exported to sentence-transformers (PyLate for ColBERT)
  report.md / report.json

Passages with a language field are searched within their own language in filter, mining and the per-pair
evaluation: in a collection of translations the same section in another language is not a negative. In
training, rows that ask the same query (the same question asked of each language's copy) are not each other's
in-batch negatives (`ContrastiveLoss.mask_duplicate_queries`, set in runs/adapt_dual_encoder.gin), and passages
that share a `group` field (translations of one another) are never each other's negatives, in the batch or mined
(`ContrastiveLoss.mask_passage_groups`).
"""

from polyret.experiments.adapt.chain import run_adapt
from polyret.experiments.adapt.config import AdaptConfig

__all__ = ["AdaptConfig", "run_adapt"]
