"""Mine hard negatives for training queries with a checkpoint (or BM25) and write the hard-negative JSONL.

  python -m polyret.jobs.mine_negatives --checkpoint CKPT --corpus corpus.jsonl --queries train_queries.jsonl \
      --qrels train_qrels.txt --output negatives.jsonl [--num_negatives 7 --rank_start 3 --rank_end 100]
The checkpoint searches with the index named by --gin.SearchConfig.index (default 'scann').
"""

from __future__ import annotations

import sys

from polyret.jobs import common
from polyret.retrieval import pipeline as P
from polyret.retrieval.mining import mine_hard_negatives, write_jsonl


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret mine_negatives", __doc__)
    common.add_gin_flags(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="dual-encoder checkpoint that retrieves the candidates")
    common.add_prompt_flags(p)
    src.add_argument("--bm25", action="store_true", help="retrieve the candidates with BM25")
    p.add_argument("--corpus")
    p.add_argument("--queries")
    p.add_argument("--qrels", help="positives of the training queries")
    p.add_argument("--dataset", help="ir_datasets id (e.g. mmarco/v2/de/train) or a BEIR / MIRACL folder instead of "
                                     "--corpus/--queries/--qrels")
    p.add_argument("--split", help="--dataset folder's split (e.g. train)")
    p.add_argument("--output", required=True, help="hard-negative JSONL to write")
    p.add_argument("--depth", type=common.at_least(1), default=100, help="documents retrieved per query")
    p.add_argument("--num_negatives", type=common.at_least(1), default=7)
    p.add_argument("--rank_start", type=common.at_least(0), default=0)
    p.add_argument("--rank_end", type=common.at_least(1), default=100)
    p.add_argument("--margin", type=float, default=None, help="drop candidates scoring within this of the positive")
    p.add_argument("--relative_threshold", type=lambda v: None if v.lower() == "none" else float(v), default=0.95,
                   help="drop candidates scoring above this fraction of the positive's score ('none': off)")
    p.add_argument("--query_max_length", type=common.at_least(2), default=64)
    p.add_argument("--passage_max_length", type=common.at_least(2), default=256)
    p.add_argument("--seed", type=int, default=0)
    args, bindings = common.parse_args_with_gin(p, argv)
    if args.dataset and (args.corpus or args.queries or args.qrels):
        p.error("give --dataset, or --corpus/--queries/--qrels, not both")
    if not args.dataset and not (args.corpus and args.queries and args.qrels):
        p.error("give --dataset, or --corpus, --queries and --qrels")
    if args.rank_end <= args.rank_start:
        p.error(f"--rank_end ({args.rank_end}) must be above --rank_start ({args.rank_start})")
    if args.rank_end > args.depth:
        p.error(f"--rank_end ({args.rank_end}) is beyond --depth ({args.depth}): those ranks are never retrieved")
    common.setup_logging(f"{args.output}.log", only_if_warned=True)

    def body() -> None:
        common.parse_gin(args.gin_file, bindings, args.gin_search_paths)
        bench = P.load_eval_benchmark(args.dataset, args.split, args.corpus, args.queries, args.qrels)
        corpus, queries, qrels = bench.corpus, bench.queries, bench.qrels
        if not qrels:
            raise common.UsageError(f"--dataset {args.dataset}: no relevance judgements (positives) to mine for")
        positive_scores = None
        if args.bm25:
            from polyret.retrieval.bm25 import bm25_search
            run = bm25_search(corpus, queries, k=args.depth)
        else:
            from polyret.retrieval.encode import TowerEncoder
            encoder = TowerEncoder.from_checkpoint(args.checkpoint, query_prompt=args.query_prompt,
                                                   passage_prompt=args.passage_prompt)
            if encoder.is_colbert:
                raise ValueError(f"{args.checkpoint}: mining needs a dual-encoder checkpoint (this one is ColBERT)")
            judged = {q: queries[q] for q in queries if q in qrels}
            found = P.encode_and_search(encoder, corpus, judged, args.depth, args.query_max_length,
                                        args.passage_max_length, progress=True, measure_recall=False,
                                        index_dir=f"{args.output}.index")  # used only by an on-disk index
            run = found.run
            row = {d: i for i, d in enumerate(found.doc_ids)}
            positive_scores = {q: max(float(v @ found.doc_vectors[row[d]]) for d, r in qrels[q].items() if r > 0)
                               for q, v in zip(found.query_ids, found.query_vectors) if any(r > 0 for r in qrels[q].values())}
        rows, dropped = mine_hard_negatives(run, qrels, queries, corpus, args.num_negatives, args.rank_start,
                                            args.rank_end, args.margin, args.relative_threshold, positive_scores, args.seed)
        write_jsonl(rows, args.output)
        print(f"wrote {len(rows)} queries with hard negatives to {args.output}; dropped: {dropped}")

    return common.run_main("mine_negatives", body)


if __name__ == "__main__":
    sys.exit(main())
