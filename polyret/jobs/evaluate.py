"""Evaluate a checkpoint (or precomputed embeddings) on a corpus: index search, metrics, run files.

  python -m polyret.jobs.evaluate --checkpoint CKPT --corpus corpus.jsonl --queries queries.jsonl \
      --qrels qrels.txt --output_dir eval/ [--bm25] [--metrics nDCG@10,RR@10,R@100]
  python -m polyret.jobs.evaluate --query_embeddings q.npy --query_ids q.ids \
      --corpus_embeddings c.npy --corpus_ids c.ids --corpus ... --queries ... --qrels ... --output_dir ...
  python -m polyret.jobs.evaluate --checkpoint CKPT --dataset neuclir/1/fa/trec-2022 --output_dir eval/
  XOR-Retrieve: --answers answers.jsonl ({"id", "lang", "answers": [...]}) adds R@2kt and R@5kt.
--dataset takes an ir_datasets id or a BEIR / MIRACL / XOR-Retrieve folder (polyret.io.benchmarks).
--k defaults to what the metrics need: 1000 for R@1000 or AP, else the largest cutoff (at least 100).
The index is chosen by name: --gin.SearchConfig.index='scann' (default for one vector per text), 'maxsim'
(exact late interaction in memory) or 'compressed' (out of core); ColBERT's default picks by corpus size.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from polyret.jobs import common
from polyret.retrieval import metrics as M
from polyret.retrieval import pipeline as P


def parse_args(argv):
    p = common.parser("polyret evaluate", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--checkpoint", help="polyret checkpoint folder (dual encoder or ColBERT)")
    p.add_argument("--query_embeddings", help="precomputed query vectors (.npy) instead of --checkpoint")
    p.add_argument("--query_ids", help="ids of --query_embeddings, one a line")
    p.add_argument("--corpus_embeddings", help="precomputed corpus vectors (.npy, or a folder of encode shards)")
    p.add_argument("--corpus_ids", help="ids of --corpus_embeddings (.npy), one a line")
    p.add_argument("--dataset", help="ir_datasets id, or a BEIR / MIRACL / XOR-Retrieve folder (instead of "
                                     "--corpus/--queries/--qrels)")
    p.add_argument("--split", help="--dataset folder's split (BEIR: test, MIRACL/XOR: dev, XTREME-UP: validation)")
    p.add_argument("--query_field", choices=("title", "description", "title+description"), default=None,
                   help="--dataset with TREC-style topics (NeuCLIR, HC4, CLEF): the topic field(s) used as the "
                        "query (default: title)")
    p.add_argument("--score_convention", choices=M.SCORE_CONVENTIONS, default="judged",
                   help="judged: every judged query counts, 0 when the run has nothing for it (trec_eval -c); "
                        "run: the mean over the judged queries the run answers (ir_measures.calc_aggregate, "
                        "as PLAID-X/MTD report)")
    p.add_argument("--corpus", help="JSONL/parquet {_id|docid, title, text} or TSV (id text [title], header optional)")
    p.add_argument("--queries", help="JSONL {_id, text[, lang]} or TSV (id text [lang], header optional)")
    p.add_argument("--qrels", help="TREC qrels")
    p.add_argument("--answers", help="XOR-Retrieve answers JSONL {id, lang, answers}")
    p.add_argument("--metrics", default=",".join(M.DEFAULT_METRICS))
    p.add_argument("--output_dir", required=True)
    p.add_argument("--k", type=common.at_least(1), default=None,
                   help="documents retrieved per query (default: what the metrics need, see above)")
    p.add_argument("--bm25", action="store_true", help="also run the BM25 baseline (bm25s)")
    p.add_argument("--query_max_length", type=common.at_least(2), default=64)
    p.add_argument("--passage_max_length", type=common.at_least(2), default=256,
                   help="dual encoder; ColBERT documents are split into 180-token windows (stride 90) instead")
    p.add_argument("--batch_size", type=common.at_least(1), default=64)
    common.add_prompt_flags(p)
    common.add_truncate_dim_flag(p)
    p.add_argument("--save_index", action="store_true", help="save the index under output_dir/index")
    p.add_argument("--recall_target", type=float, default=None,
                   help="ScaNN auto-tuning: recall@10 against brute force the index must reach (default 0.95, "
                        "ScannConfig.recall_target); 0 turns tuning off")
    p.add_argument("--threads", type=common.at_least(0), default=None,
                   help="ScaNN search/training threads (default every core, ScannConfig.threads)")
    args, args.gin_bindings = common.parse_args_with_gin(p, argv)
    if not args.checkpoint and not (args.query_embeddings and args.corpus_embeddings):
        p.error("give --checkpoint, or --query_embeddings and --corpus_embeddings")
    if args.dataset and (args.corpus or args.queries or args.qrels):
        p.error("give --dataset, or --corpus/--queries/--qrels, not both")
    if not args.dataset and not (args.corpus and args.queries):
        p.error("give --dataset, or --corpus and --queries")
    if not args.dataset and not args.qrels and not args.answers:
        p.error("give --qrels or --answers")
    if args.k is not None and args.k < 1:
        p.error(f"--k must be at least 1, got {args.k}")
    if args.recall_target is not None and not 0 <= args.recall_target <= 1:
        p.error(f"--recall_target must be between 0 and 1, got {args.recall_target}")
    # The ScaNN flags are gin bindings, applied after --gin_file and --gin.* (the flags win).
    if args.recall_target is not None:
        args.gin_bindings.append(f"ScannConfig.recall_target = {args.recall_target or None}")
    if args.threads is not None:
        args.gin_bindings.append(f"ScannConfig.threads = {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.setup_logging(f"{args.output_dir.rstrip('/')}/evaluate.log", only_if_warned=True)
    return common.run_main("evaluate", lambda: evaluate(args))


# What evaluate on precomputed vectors may bind in gin: the search indexes (the pipeline imports them all).
# Registering only these keeps the model code, JAX and TensorFlow out of the process (~800 MiB resident,
# more than 1M x 128 vectors).
SEARCH_CONFIGURABLES = ("polyret.retrieval.pipeline",)


def evaluate(args) -> int:
    if args.checkpoint:
        import polyret.retrieval.encode  # noqa: F401  (its gin configurables must exist before gin is locked)
        common.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
    else:
        common.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths, modules=SEARCH_CONFIGURABLES)
    start = time.time()
    # Judged@10 beside nDCG@20 (MTD reports both): how much of the top 10 the judgements cover.
    metrics = M.with_judged([m.strip() for m in args.metrics.split(",") if m.strip()])
    M.parse_metrics(metrics)  # fail on a bad name before any work
    # Precomputed vectors need the corpus texts only for BM25 and XOR-Retrieve's R@kt: else only its ids.
    corpus_texts = bool(args.checkpoint or args.bm25 or args.answers)
    bench = P.load_eval_benchmark(args.dataset, args.split, args.corpus, args.queries, args.qrels, args.answers,
                                  query_field=args.query_field,
                                  corpus_texts=corpus_texts)
    corpus, queries, qrels, languages = bench.corpus, bench.queries, bench.qrels, bench.query_languages
    if not qrels and not bench.answers:
        raise common.UsageError(f"--dataset {args.dataset}: no relevance judgements or answers to score against")
    if args.k is None:
        args.k, why = M.default_depth(metrics)
        print(f"retrieving k={args.k} documents per query ({why}; set --k to change)")
    else:
        print(f"retrieving k={args.k} documents per query (--k)")
    runs, extra = {}, {"k": args.k}
    if args.checkpoint:
        from polyret.retrieval.encode import TowerEncoder
        encoder = TowerEncoder.from_checkpoint(args.checkpoint, args.batch_size, args.query_prompt,
                                               args.passage_prompt, args.truncate_dim)
        name = "colbert" if encoder.is_colbert else "dense"
        # An index that lives on disk (and ColBERT's token shards) goes to output_dir/<name>_index: a rerun
        # resumes and reuses it.
        found = P.search_with_checkpoint(encoder, corpus, queries, args.k, args.query_max_length,
                                         args.passage_max_length, index_dir=f"{args.output_dir}/{name}_index",
                                         progress=True)
    else:
        from polyret.retrieval.vector_file import open_embeddings
        query_ids, query_vectors = open_embeddings(args.query_embeddings, args.query_ids)
        query_vectors = np.asarray(query_vectors)
        # Corpus vectors stay on disk, read in blocks: the index holds the one in-memory copy.
        doc_ids, doc_vectors = open_embeddings(args.corpus_embeddings, args.corpus_ids)
        # Before any search: vectors for exactly the corpus and queries evaluated (else metrics are silently 0).
        P.check_embedding_coverage(doc_ids, corpus, args.corpus_ids or args.corpus_embeddings,
                                   args.corpus or args.dataset, "documents")
        P.check_embedding_coverage(query_ids, queries, args.query_ids or args.query_embeddings,
                                   args.queries or args.dataset, "queries",
                                   required=[q for q in queries if q in qrels] if qrels else None)
        if not (args.bm25 or bench.answers):  # the corpus was for the checks above; the index needs the memory now
            bench.corpus = corpus = None
        name = "dense"
        found = P.dense_search(query_ids, query_vectors, doc_ids, doc_vectors, args.k,
                               index_dir=f"{args.output_dir}/dense_index")
    runs[name] = found.run
    extra["index"] = found.index.name
    extra[found.index.name] = {**found.index.info(), "recall@10_vs_brute_force": found.recall}
    if args.save_index:
        found.index.save(f"{args.output_dir}/index")
    if args.bm25:
        from polyret.retrieval.bm25 import bm25_search
        runs["bm25"] = bm25_search(corpus, queries, k=args.k)
    tables = {}
    for name, run in runs.items():
        if qrels:
            tables[name] = M.evaluate(qrels, run, metrics, languages or None, convention=args.score_convention)
        if bench.answers:
            answers, langs = bench.answers, languages
            # The official script reads the passages' text without their titles.
            ranked = {q: [bench.passage_texts[d] for d, _ in sorted(docs.items(), key=lambda kv: -kv[1])]
                      for q, docs in run.items()}
            for kt in (2000, 5000):
                tables[f"{name} XOR R@{kt // 1000}kt"] = {
                    g: {f"R@{kt // 1000}kt": v} for g, v in M.xor_recall_at_k_tokens(ranked, answers, langs, kt).items()}
    # Which files were read (e.g. XOR-Retrieve's 2019 Wikipedia or DPR's 2018 one) and how queries were scored.
    extra.update(source=bench.source, score_convention=args.score_convention)
    extra["seconds"] = round(time.time() - start, 1)
    print(P.write_outputs(args.output_dir, runs, tables, extra))
    print(f"\nwrote run files, metrics.json and metrics.md to {args.output_dir} ({extra['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
