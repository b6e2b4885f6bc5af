"""CPU training speed of a cross-encoder reranker: multilingual-e5-small with a fresh score head, trained listwise
(each query's positive against its 3 negatives, softmax cross-entropy over the 4 logits) on real cross-lingual
rows (English Debian Reference headings -> the German / French section, 3 other sections of the same language as
negatives; the train split of benchmarks/real_text_set.py), batch 8 queries x 4 passages, the pair cut at 256
tokens (query 32 + passage 224), AdamW 2e-5, by `polyret train` (runs/finetune_cross_encoder.gin, ListwiseLoss)
and by sentence-transformers' `CrossEncoderTrainer` (its MultipleNegativesRankingLoss with the 3 given negatives,
no in-batch ones, no activation, scale 1: the same loss), one after the other.

  nice -n 10 python benchmarks/cross_encoder_vs_sentence_transformers.py [--set ~/.cache/polyret/debian_reference_set]
      [--short 3 --long 13] [--gin.NAME=VALUE ...]

Each run is its own subprocess (its own peak RSS). Time per step = (a --long run - a --short run) / (long - short),
so start-up, data set-up and compilation cancel out. Neither side applies e5's prompts (sentence-transformers'
CrossEncoder has none).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The worker's one result line, as the dual-encoder comparison prints it (this folder is on sys.path when run).
from finetune_vs_sentence_transformers import report  # noqa: E402

PAIRS = ("en-de", "en-fr")
BASE = "multilingual-e5-small"
QUERY_LEN, PASSAGE_LEN, BATCH, NEGATIVES = 32, 224, 8, 3


def training_rows(set_dir: Path, seed: int = 0) -> list[dict]:
    """{query, positive, negatives}: each train pair with 3 other train-split sections of its language."""
    rng, rows = random.Random(seed), []
    for pair in PAIRS:
        pairs = [json.loads(line) for line in (set_dir / "pairs" / pair / "train_pairs.jsonl").read_text().splitlines()]
        texts = [p["text"] for p in pairs]
        for p in pairs:
            others = [t for t in rng.sample(texts, NEGATIVES + 1) if t != p["text"]][:NEGATIVES]
            rows.append({"query": p["query"], "positive": p["text"], "negatives": others})
    return rows


def run_polyret(rows_file: Path, work: Path, steps: int, bindings: list[str]) -> None:
    from polyret.jobs import import_checkpoint as import_job
    from polyret.seqio_tasks import tasks
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    from polyret.training.trainer import train_from_gin

    imported = work / "base_cross_encoder"
    if not imported.exists():
        import_job.main(["--hf", BASE, "--tower", "cross_encoder", "--output_dir", str(imported)])
    name = tasks.register_hard_negative_task("ce_rows", rows_file, HfVocabulary(imported / "tokenizer"), NEGATIVES)
    start = time.time()
    train_from_gin(["runs/finetune_cross_encoder.gin"], [
        f"MODEL_DIR='{work / f'run{steps}'}'", f"MIXTURE_OR_TASK_NAME='{name}'", f"TRAIN_STEPS={steps}",
        f"INITIAL_CHECKPOINT_PATH='{imported}'", f"BATCH_SIZE={BATCH}", "train.progress=False",
        "train.query_prompt=''", "train.passage_prompt=''",
        f"TASK_FEATURE_LENGTHS={{'inputs': {QUERY_LEN}, 'targets': {PASSAGE_LEN}, 'negative_targets': {PASSAGE_LEN}}}",
    ] + bindings)
    report(time.time() - start)


def run_sentence_transformers(rows_file: Path, work: Path, steps: int) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments)
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
    from polyret.models.model_names import resolve_model

    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    columns = {"query": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]}
    for i in range(NEGATIVES):
        columns[f"negative_{i + 1}"] = [r["negatives"][i] for r in rows]
    class GivenNegativesOnly(MultipleNegativesRankingLoss):
        """Its softmax over the positive and the given negatives only: `num_negatives=0` fails in
        sentence-transformers 5 (torch.multinomial draws 0 samples), so no in-batch negatives are drawn here."""

        def get_in_batch_negatives(self, anchors, candidates):
            return iter(())

    model = CrossEncoder(str(resolve_model(BASE)), num_labels=1, max_length=QUERY_LEN + PASSAGE_LEN, device="cpu")
    loss = GivenNegativesOnly(model, scale=1.0, activation_fn=torch.nn.Identity())
    args = CrossEncoderTrainingArguments(
        output_dir=str(work / f"st{steps}"), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=2e-5,
        warmup_steps=min(10, steps), save_strategy="no", report_to=[], logging_steps=10 ** 6, disable_tqdm=True,
        use_cpu=True)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss)
    start = time.time()
    trainer.train()
    report(time.time() - start)


def measure(tool: str, steps: int, rows_file: Path, bindings: list[str], work: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", tool, "--steps", str(steps), "--rows", str(rows_file),
           "--work", str(work)] + [f"--gin.{b}" for b in bindings]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"{tool} {steps} steps failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--short", type=int, default=3)
    ap.add_argument("--long", type=int, default=13)
    ap.add_argument("--work", default=None)
    ap.add_argument("--tools", default="polyret,sentence-transformers", help="which to run (comma-separated)")
    ap.add_argument("--worker", choices=["polyret", "sentence-transformers"], help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    bindings = [r[len("--gin."):] for r in rest if r.startswith("--gin.")]
    if args.worker:
        runner = run_polyret if args.worker == "polyret" else run_sentence_transformers
        runner(Path(args.rows), Path(args.work), args.steps, *([bindings] if args.worker == "polyret" else []))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="ce_vs_st_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = training_rows(Path(args.set))
    rows_file = work / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows ({', '.join(PAIRS)}), batch {BATCH} queries x {NEGATIVES + 1} passages, "
          f"{QUERY_LEN}+{PASSAGE_LEN} tokens; polyret bindings: {bindings or 'none'}", flush=True)
    results = {}
    for tool in args.tools.split(","):
        short, long = (measure(tool, n, rows_file, bindings, work) for n in (args.short, args.long))
        per_step = (long["seconds"] - short["seconds"]) / (args.long - args.short)
        results[tool] = {"s_per_step": per_step, "peak_rss_mb": max(short["peak_rss_mb"], long["peak_rss_mb"])}
        print(f"{tool}: {per_step:.2f} s/step, peak RSS {results[tool]['peak_rss_mb']:.0f} MB", flush=True)
    if len(results) == 2:
        ratio = results["sentence-transformers"]["s_per_step"] / results["polyret"]["s_per_step"]
        print(f"polyret speed / sentence-transformers speed: {ratio:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
