"""A cross-encoder fine-tuned by polyret from multilingual-e5-small reranks the e5 dual encoder's top k on the
real-text set's en-X test pairs (benchmarks/real_text_set.py, Debian Reference sections).

  nice -n 10 python benchmarks/rerank_real_text.py [--set ~/.cache/polyret/debian_reference_set] [--work /tmp/rr]
      [--train_pairs en-de,en-fr,en-ja] [--test_pairs en-de,en-fr,en-ja,en-es] [--steps 150] [--top_k 30]
      [--first_stage CHECKPOINT] [--learning_rate 2e-5] [--relative_threshold 0.95] [--passage_max_length 224]
      [--fuse_first_stage 0.5]

1. The first stage: multilingual-e5-small as a dual encoder (zero-shot, its prompts; `--first_stage` for another
   checkpoint, e.g. the fine-tuned one of finetune_real_text.py), `polyret evaluate` on each test pair.
2. Training rows: each train-split query of the `--train_pairs`, its positive, and 3 negatives mined with the
   first stage from ranks 3-30 (`polyret mine_negatives`, its false-negative guard at `--relative_threshold`:
   'none' keeps every query); never a test query.
3. The reranker: multilingual-e5-small with a fresh score head (`import_checkpoint --tower cross_encoder`),
   `runs/finetune_cross_encoder.gin` (ListwiseLoss), `--steps` steps of 8 queries x 4 passages, passages cut to
   `--passage_max_length` tokens.
4. `polyret rerank` of each test pair's top `--top_k` (passages cut the same); nDCG@10 / R@100 of both, and the
   rerank time. Beside the reranker alone, its fusion with the first stage (`--fuse_first_stage W`: W x the dual
   encoder's z-scores + (1 - W) x the reranker's over each top k); W is fixed before the run (0.5, equal weight),
   never tuned on the test queries. The table gives depth 20 and `--top_k`, both from the one rerank's scores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_queries(pair_dir: Path, out: Path) -> Path:
    """The pair's queries that the test qrels judge (evaluate and rerank only those)."""
    judged = {line.split("\t")[0] for line in (pair_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    rows = [line for line in (pair_dir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
            if json.loads(line)["_id"] in judged]
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def depth_runs(work: Path, pair: str, k: int, weight: float) -> tuple[dict, dict, dict]:
    """The first stage's run, the reranker's order of its top k and their fusion, from the reranker's scores of the
    deepest rerank (the top k of the first stage is a subset of its top `--top_k`): one rerank, every depth."""
    from polyret.io.runs import read_trec_run
    from polyret.retrieval.rerank import append_tail, fuse, top_k
    first = read_trec_run(work / f"first_{pair}" / "dense.trec")
    scores = read_trec_run(work / f"reranked_{pair}" / "reranked.trec")
    reranker = {q: {d: scores[q][d] for d in docs} for q, docs in top_k(first, k).items()}
    return first, append_tail(reranker, first, k), fuse(reranker, first, k, weight)


def per_query_ndcg(pair_dir: Path, runs: list[dict]) -> list[dict]:
    """Per-query nDCG@10 of each run on the pair's test qrels, over the first run's judged queries."""
    from polyret.io.formats import read_qrels
    from polyret.retrieval.metrics import per_query
    qrels = read_qrels(pair_dir / "qrels" / "test.tsv")
    scores = [per_query(qrels, run, ["nDCG@10"])["nDCG@10"] for run in runs]
    return [{q: s[q] for q in scores[0]} for s in scores]


def paired(a: list[float], b: list[float]) -> str:
    """b - a: mean difference, its 95% t interval, and the paired t-test's p (scipy)."""
    import numpy as np
    from scipy import stats
    d = np.asarray(b) - np.asarray(a)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    return f"{d.mean():+.3f} [{low:+.3f}, {high:+.3f}], p={stats.ttest_rel(b, a).pvalue:.2g}"


def table(work: Path, pairs_dir: Path, pairs: list[str], deepest: int, w: float) -> list[str]:
    """The markdown table: per pair and depth (20 and the deepest), e5 against the reranker alone and the fusion."""
    rows = [(pair, json.loads((work / f"reranked_{pair}" / "metrics.json").read_text())) for pair in pairs]
    lines = [f"| pair | depth | queries | e5 nDCG@10 | reranked | reranked - e5 [95% CI], paired t p | fused ({w:g}) | "
             "fused - e5 [95% CI], paired t p | e5 R@100 | rerank s |", "|---|---:|---:|---:|---:|---|---:|---|---:|---:|"]
    for k in sorted({min(20, deepest), deepest}):
        per_topic: dict[str, list[tuple[float, float, float]]] = {}
        for pair, m in rows:
            first, reranked, fused = per_query_ndcg(pairs_dir / pair, list(depth_runs(work, pair, k, w)))
            for q in first:
                per_topic.setdefault(q, []).append((first[q], reranked[q], fused[q]))
            a, b, c = list(first.values()), list(reranked.values()), list(fused.values())
            seconds = f"{m['seconds']:.0f}" if k == deepest else ""
            lines.append(f"| {pair} | {k} | {len(a)} | {sum(a) / len(a):.3f} | {sum(b) / len(b):.3f} | {paired(a, b)} | "
                         f"{sum(c) / len(c):.3f} | {paired(a, c)} | "
                         f"{m['metrics']['first stage']['all']['R@100']:.3f} | {seconds} |")
        # An English heading asked of several collections is one topic: its scores averaged over them.
        a, b, c = ([sum(v[i] for v in scores) / len(scores) for scores in per_topic.values()] for i in range(3))
        lines.append(f"| all (distinct topics) | {k} | {len(per_topic)} | {sum(a) / len(a):.3f} | "
                     f"{sum(b) / len(b):.3f} | {paired(a, b)} | {sum(c) / len(c):.3f} | {paired(a, c)} | | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--work", default="/tmp/rr")
    ap.add_argument("--train_pairs", default="en-de,en-fr,en-ja")
    ap.add_argument("--test_pairs", default="en-de,en-fr,en-ja,en-es")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--top_k", type=int, default=30)
    ap.add_argument("--learning_rate", type=float, default=2e-5)
    ap.add_argument("--first_stage", default=None)
    ap.add_argument("--relative_threshold", default="0.95")
    ap.add_argument("--passage_max_length", type=int, default=224)
    ap.add_argument("--fuse_first_stage", type=float, default=0.5)
    args = ap.parse_args()
    pairs_dir, work = Path(args.set) / "pairs", Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()

    from polyret.jobs import evaluate as evaluate_job
    from polyret.jobs import import_checkpoint as import_job
    from polyret.jobs import mine_negatives as mine_job
    from polyret.jobs import rerank as rerank_job
    from polyret.seqio_tasks import tasks
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    from polyret.training.trainer import train_from_gin

    first_stage = Path(args.first_stage) if args.first_stage else work / "e5_dual_encoder"
    if not first_stage.exists():
        import_job.main(["--hf", "multilingual-e5-small", "--output_dir", str(first_stage)])
    reranker_base = work / "e5_cross_encoder"
    if not reranker_base.exists():
        import_job.main(["--hf", "multilingual-e5-small", "--tower", "cross_encoder", "--output_dir",
                         str(reranker_base)])

    vocab = HfVocabulary(reranker_base / "tokenizer")
    names = []
    for pair in args.train_pairs.split(","):
        negatives = work / f"negatives_{pair}.jsonl"
        if not negatives.exists():
            mine_job.main(["--checkpoint", str(first_stage), "--corpus", str(pairs_dir / pair / "corpus.jsonl"),
                           "--queries", str(pairs_dir / pair / "queries.jsonl"), "--qrels",
                           str(pairs_dir / pair / "qrels" / "train.tsv"), "--output", str(negatives),
                           "--num_negatives", "3", "--rank_start", "3", "--rank_end", "30",
                           "--relative_threshold", args.relative_threshold])
        names.append((tasks.register_hard_negative_task(f"rr_{pair.replace('-', '_')}", negatives, vocab,
                                                        num_negatives=3), 1.0))
    tasks.add_mixture("rr_train", names)
    reranker = work / "reranker"
    length = args.passage_max_length
    buckets = tuple(b for b in (16, 32, 64, 128) if b < length) + (length,)
    t0 = time.time()
    train_from_gin(["runs/finetune_cross_encoder.gin"], [
        f"MODEL_DIR='{reranker}'", "MIXTURE_OR_TASK_NAME='rr_train'", f"TRAIN_STEPS={args.steps}",
        f"INITIAL_CHECKPOINT_PATH='{reranker_base}'", f"learning_rate_schedule.base_learning_rate={args.learning_rate}",
        f"TASK_FEATURE_LENGTHS={{'inputs': 32, 'targets': {length}, 'negative_targets': {length}}}",
        f"DatasetConfig.length_buckets={buckets}"])
    train_seconds = time.time() - t0

    for pair in args.test_pairs.split(","):
        folder = pairs_dir / pair
        queries = test_queries(folder, work / f"test_queries_{pair}.jsonl")
        files = ["--corpus", str(folder / "corpus.jsonl"), "--queries", str(queries), "--qrels",
                 str(folder / "qrels" / "test.tsv")]
        evaluate_job.main(["--checkpoint", str(first_stage), "--output_dir", str(work / f"first_{pair}"),
                           "--metrics", "nDCG@10,R@100", "--recall_target", "0"] + files)
        rerank_job.main(["--checkpoint", str(reranker), "--run", str(work / f"first_{pair}" / "dense.trec"),
                         "--output_dir", str(work / f"reranked_{pair}"), "--top_k", str(args.top_k),
                         "--metrics", "nDCG@10,R@100", "--query_max_length", "32", "--passage_max_length", str(length),
                         "--fuse_first_stage", str(args.fuse_first_stage)] + files)
    lines = table(work, pairs_dir, args.test_pairs.split(","), args.top_k, args.fuse_first_stage)
    print("\n".join(lines))
    (work / "table.md").write_text("\n".join(lines) + "\n")
    print(f"reranker training {train_seconds:.0f} s ({args.steps} steps); total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
