"""CPU fine-tuning speed where users start: the real all-MiniLM-L6-v2 fine-tuned on real cross-lingual pairs
(English Debian Reference headings -> the section in German, French, Spanish or Portuguese; the train split of
benchmarks/real_text_set.py), batch 32, queries cut at 32 and passages at 128 tokens, in-batch softmax at scale 20,
AdamW at 2e-5, by `polyret train` (runs/finetune_minilm.gin, its defaults) and by sentence-transformers'
`SentenceTransformerTrainer` with `MultipleNegativesRankingLoss` (its defaults), one after the other.

  nice -n 10 python benchmarks/finetune_vs_sentence_transformers.py [--set ~/.cache/polyret/debian_reference_set]
      [--short 5 --long 25] [--base all-MiniLM-L6-v2] [--gin.NAME=VALUE ...]

Each run is its own subprocess (its own peak RSS). Time per step = (a --long run - a --short run) / (long - short),
so start-up, data set-up and compilation cancel out. Tokens/s counts the pairs' real (non-padding) tokens, cut
at 32/128, as both tools see them. Extra `--gin.NAME=VALUE` bindings go to polyret's run (to compare settings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAIRS = ("en-de", "en-fr", "en-es", "en-pt")
QUERY_LEN, PASSAGE_LEN, BATCH = 32, 128, 32


def training_pairs(set_dir: Path) -> list[dict]:
    rows = []
    for pair in PAIRS:
        path = set_dir / "pairs" / pair / "train_pairs.jsonl"
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def run_polyret(set_dir: Path, work: Path, base: str, steps: int, bindings: list[str]) -> None:
    from polyret.jobs import import_checkpoint as import_job
    from polyret.models.model_names import resolve_model
    from polyret.seqio_tasks import tasks
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    from polyret.training.trainer import train_from_gin

    imported = work / "base"
    if not imported.exists():
        import_job.main(["--hf", str(resolve_model(base)), "--output_dir", str(imported)])
    vocab = HfVocabulary(imported / "tokenizer")
    names = [(tasks.register_swim_ir_task("ft_" + p.replace("-", "_"), set_dir / "pairs" / p / "train_pairs.jsonl",
                                          vocab), 1.0) for p in PAIRS]
    tasks.add_mixture("ft_pairs", names)
    start = time.time()
    train_from_gin(["runs/finetune_minilm.gin"], [
        f"MODEL_DIR='{work / f'run{steps}'}'", "MIXTURE_OR_TASK_NAME='ft_pairs'", f"TRAIN_STEPS={steps}",
        f"INITIAL_CHECKPOINT_PATH='{imported}'", f"BATCH_SIZE={BATCH}", "MODEL_CONFIG=@checkpoint_model_config()",
        f"checkpoint_model_config.path='{imported}'", "checkpoint_model_config.overrides={'logit_scale': 20.0}",
        f"TASK_FEATURE_LENGTHS={{'inputs': {QUERY_LEN}, 'targets': {PASSAGE_LEN}}}", "train.progress=False",
        ] + bindings)
    report(time.time() - start)


def run_sentence_transformers(set_dir: Path, work: Path, base: str, steps: int) -> None:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from polyret.models.model_names import resolve_model

    rows = training_pairs(set_dir)
    data = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["text"] for r in rows]})
    model = SentenceTransformer(str(resolve_model(base)), device="cpu")
    model.max_seq_length = PASSAGE_LEN  # one limit for both sides; queries are shorter than 32 tokens
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / f"st{steps}"), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=2e-5,
        save_strategy="no", report_to=[], logging_steps=10 ** 6, disable_tqdm=True, use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model))
    start = time.time()
    trainer.train()
    report(time.time() - start)


def report(seconds: float) -> None:
    print("RESULT " + json.dumps({"seconds": seconds,
                                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def measure(tool: str, steps: int, args: argparse.Namespace, bindings: list[str], work: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", tool, "--steps", str(steps), "--set", args.set, "--base", args.base,
           "--work", str(work)] + [f"--gin.{b}" for b in bindings]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"{tool} {steps} steps failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def real_tokens_per_step(set_dir: Path, base: str) -> float:
    """Mean non-padding tokens of a batch: query and passage, each with its specials, cut at 32 / 128."""
    from transformers import AutoTokenizer
    from polyret.models.model_names import resolve_model
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(base)))
    rows = training_pairs(set_dir)
    queries = tokenizer([r["query"] for r in rows], truncation=True, max_length=QUERY_LEN)["input_ids"]
    passages = tokenizer([r["text"] for r in rows], truncation=True, max_length=PASSAGE_LEN)["input_ids"]
    return BATCH * (sum(map(len, queries)) + sum(map(len, passages))) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--base", default="all-MiniLM-L6-v2")
    ap.add_argument("--short", type=int, default=5)
    ap.add_argument("--long", type=int, default=25)
    ap.add_argument("--work", default=None)
    ap.add_argument("--tools", default="polyret,sentence-transformers", help="which to run (comma-separated)")
    ap.add_argument("--worker", choices=["polyret", "sentence-transformers"], help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    bindings = [r[len("--gin."):] for r in rest if r.startswith("--gin.")]
    if args.worker:
        work = Path(args.work)
        if args.worker == "polyret":
            run_polyret(Path(args.set), work, args.base, args.steps, bindings)
        else:
            run_sentence_transformers(Path(args.set), work, args.base, args.steps)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="ft_vs_st_"))
    tokens = real_tokens_per_step(Path(args.set), args.base)
    print(f"{len(training_pairs(Path(args.set)))} pairs ({', '.join(PAIRS)}), batch {BATCH}, {QUERY_LEN}/{PASSAGE_LEN} "
          f"tokens, {tokens:.0f} real tokens per step; polyret bindings: {bindings or 'none'}")
    results = {}
    for tool in args.tools.split(","):
        short, long = (measure(tool, n, args, bindings, work) for n in (args.short, args.long))
        per_step = (long["seconds"] - short["seconds"]) / (args.long - args.short)
        results[tool] = {"s_per_step": per_step, "tokens_per_s": tokens / per_step,
                         "peak_rss_mb": max(short["peak_rss_mb"], long["peak_rss_mb"])}
        print(f"{tool}: {per_step:.2f} s/step, {tokens / per_step:.0f} tokens/s, peak RSS "
              f"{results[tool]['peak_rss_mb']:.0f} MB", flush=True)
    if len(results) == 2:
        ratio = results["sentence-transformers"]["s_per_step"] / results["polyret"]["s_per_step"]
        print(f"polyret speed / sentence-transformers speed: {ratio:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
