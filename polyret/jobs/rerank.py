"""Rerank a first-stage run with a cross-encoder checkpoint; metrics when qrels are given.

  polyret rerank --checkpoint CE --corpus corpus.jsonl --queries queries.jsonl --run first_stage.trec \
      --output_dir reranked/ [--top_k 100] [--qrels qrels.txt --metrics nDCG@10,R@100]
The run is a TREC run file (`evaluate` writes one per system: OUTPUT_DIR/<system>.trec). Writes
DIR/reranked.trec: the reranked top k, then the first stage's passages below rank k in their first-stage order
(scored below every reranked one, so R@100 after reranking the top 20 is comparable with the first stage's;
`--only_top_k` writes the top k alone); with `--fuse_first_stage W`, DIR/fused.trec: the top k ordered by
W * z(first-stage score) + (1 - W) * z(reranker score), z standardising each query's k scores; and metrics.json /
metrics.md with --qrels, the first stage's figures beside. Run it again after an interruption: finished parts are kept.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from polyret.jobs import common


def parse_args(argv):
    p = common.parser("polyret rerank", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--checkpoint", required=True, help="cross-encoder checkpoint (import_checkpoint or a training MODEL_DIR)")
    p.add_argument("--corpus", required=True, help="JSONL/parquet {_id|docid, title, text} or TSV (id text [title])")
    p.add_argument("--queries", required=True, help="JSONL {_id, text} or TSV (id text)")
    p.add_argument("--run", required=True, help="first-stage TREC run (qid Q0 docid rank score tag)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--top_k", type=common.at_least(1), default=100, help="passages per query to rerank")
    p.add_argument("--only_top_k", action="store_true",
                   help="write only the reranked top k, not the first stage's passages below it")
    p.add_argument("--fuse_first_stage", type=common.fraction, default=None, metavar="W",
                   help="also write fused.trec: W x the first stage's z-scores + (1 - W) x the reranker's (0..1)")
    p.add_argument("--qrels", help="TREC or BEIR qrels: score the reranked run and the first stage")
    p.add_argument("--metrics", default="nDCG@10,R@100")
    p.add_argument("--batch_size", type=common.at_least(1), default=32)
    p.add_argument("--queries_per_part", type=common.at_least(1), default=64,
                   help="queries per resumable part file (a kill loses at most one part)")
    p.add_argument("--query_max_length", type=common.at_least(2), default=64)
    p.add_argument("--passage_max_length", type=common.at_least(2), default=256)
    common.add_prompt_flags(p)
    args, bindings = common.parse_args_with_gin(p, argv)
    return args, bindings


def main(argv: list[str] | None = None) -> int:
    args, bindings = parse_args(argv)
    common.setup_logging(f"{args.output_dir.rstrip('/')}.log", only_if_warned=True)

    def body() -> None:
        common.parse_gin(args.gin_file, bindings, args.gin_search_paths)
        from polyret.io.formats import read_id_text, read_qrels
        from polyret.io.runs import read_trec_run, write_trec_run
        from polyret.retrieval import metrics as M
        from polyret.retrieval.rerank import PairScorer, check_ids, fuse, rerank

        start = time.time()
        corpus = read_id_text(args.corpus, with_title=True)
        queries = read_id_text(args.queries, with_title=False)
        first_stage = read_trec_run(args.run)
        check_ids(args.run, corpus, queries)
        scorer = PairScorer.from_checkpoint(args.checkpoint, args.query_prompt, args.passage_prompt,
                                            batch_size=args.batch_size, query_max_length=args.query_max_length,
                                            passage_max_length=args.passage_max_length)
        out = rerank(scorer, corpus, queries, first_stage, args.top_k, args.output_dir,
                     fingerprint={"checkpoint": str(Path(args.checkpoint).absolute())},
                     queries_per_part=args.queries_per_part, keep_tail=not args.only_top_k)
        runs = {"reranked": read_trec_run(out)}
        if args.fuse_first_stage is not None:
            fused = fuse(runs["reranked"], first_stage, args.top_k, args.fuse_first_stage)
            write_trec_run(fused, Path(args.output_dir, "fused.trec"), tag="polyret-fused")
            runs[f"fused (first stage {args.fuse_first_stage:g})"] = fused
        seconds = time.time() - start
        print(f"wrote {out} ({sum(min(len(h), args.top_k) for h in first_stage.values())} pairs, {seconds:.1f} s)")
        if args.qrels:
            qrels = read_qrels(args.qrels)
            metrics = [m for m in args.metrics.split(",") if m]
            tables = {"first stage": M.evaluate(qrels, first_stage, metrics),
                      **{name: M.evaluate(qrels, run, metrics) for name, run in runs.items()}}
            Path(args.output_dir, "metrics.json").write_text(json.dumps(
                {"metrics": tables, "top_k": args.top_k, "seconds": round(seconds, 1)}, indent=2))
            table = "\n".join(["| system | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
                              + [f"| {name} | " + " | ".join(f"{t['all'][m]:.4f}" for m in metrics) + " |"
                                 for name, t in tables.items()])
            Path(args.output_dir, "metrics.md").write_text(table + "\n")
            print(table)

    return common.run_main("rerank", body)


if __name__ == "__main__":
    sys.exit(main())
