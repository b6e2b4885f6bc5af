"""Generate synthetic queries with summarize-then-ask prompting (SAP) and write SWIM-IR JSONL.

Cross-lingual (English passages, queries in each language), against any OpenAI-compatible server:

  export OPENAI_API_KEY=...     # not needed by most local servers
  python -m polyret.jobs.generate_sap --corpus enwiki.jsonl --languages de,fr,ja \
      --base_url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct \
      --passages_per_language 100000 --output swim_ir_de_fr_ja.jsonl

Monolingual: one corpus per language (`--corpus de=dewiki.jsonl --corpus ja=jawiki.jsonl`) and
exemplars in those languages (the MIRACL prompt file layout). A local model: `--backend transformers
--model /path/to/model`. Killed runs resume when restarted with the same flags. At scale, `--runner beam`
runs the same steps on Apache Beam (`--beam_args="--runner=DataflowRunner --project=..."`), writing
`<output>-SSSSS-of-NNNNN.jsonl` shards.
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys

from polyret.io.fingerprint import file_fingerprint
from polyret.jobs import common
from polyret.synthesis.exemplars import DEFAULT_EXEMPLARS, read_exemplars
from polyret.synthesis.filters import FilterConfig
from polyret.synthesis.generate import MODES, SapConfig, generate_sap, summary_line
from polyret.synthesis.llm import BackendConfig


def _corpora(values: list[str], languages: list[str], mode: str) -> dict[str, str]:
    named = dict(v.split("=", 1) for v in values if "=" in v)
    plain = [v for v in values if "=" not in v]
    if len(plain) > 1:
        raise ValueError("give one --corpus PATH for all languages, or --corpus LANG=PATH per language")
    if mode == "monolingual" and plain:
        raise ValueError("monolingual SAP needs a corpus per language: --corpus LANG=PATH")
    return {lang: named.get(lang) or plain[0] for lang in languages if named.get(lang) or plain}


def _import(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret generate_sap", __doc__)
    p.add_argument("--corpus", action="append", required=True,
                   help="passages (JSONL _id/title/text or TSV; a glob over shards is fine); LANG=PATH per language")
    p.add_argument("--languages", required=True, help="comma-separated query languages, e.g. de,fr,ja")
    p.add_argument("--mode", choices=MODES, default="cross_lingual")
    p.add_argument("--output", required=True, help="SWIM-IR JSONL to write (with --runner beam: a prefix)")
    p.add_argument("--exemplars", default=str(DEFAULT_EXEMPLARS),
                   help="few-shot CSV in a SWIM-IR prompt-file layout (default: ours, 8 languages)")
    p.add_argument("--passages_per_language", type=common.at_least(1), default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source_language", default="en", help="language of the passages in cross-lingual mode")
    p.add_argument("--backend", choices=("openai", "transformers"), default="openai")
    p.add_argument("--model", required=True, help="served model name, or a local model folder (transformers)")
    p.add_argument("--base_url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--concurrency", type=common.at_least(1), default=8, help="requests in flight at once")
    p.add_argument("--max_retries", type=common.at_least(0), default=5)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--initial_backoff", type=float, default=1.0, help="seconds before the first retry (doubles)")
    p.add_argument("--max_tokens", type=common.at_least(1), default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--chunk_size", type=common.at_least(1), default=64, help="passages between two checkpoints of the output")
    p.add_argument("--no_langid", action="store_true", help="skip the query language check")
    p.add_argument("--langid_languages", default=None,
                   help="comma-separated languages the language check chooses among (default: all lingua knows)")
    p.add_argument("--keep_duplicates", action="store_true",
                   help="keep a query already kept for another passage in its language (dedupe downstream, e.g. "
                        "per passage language)")
    p.add_argument("--min_query_chars", type=int, default=4)
    p.add_argument("--max_query_chars", type=int, default=300)
    p.add_argument("--safety_classifier", default=None,
                   help="module:function taking a query and returning True if it must be dropped")
    p.add_argument("--prompt_mode", choices=("summarize_then_ask", "direct"), default="summarize_then_ask",
                   help="SWIM-X's ablation: summarize then ask (default), or ask for the query directly")
    p.add_argument("--num_shots", type=common.at_least(0), default=None,
                   help="exemplars per prompt (default: every exemplar of the language)")
    p.add_argument("--runner", choices=("plain", "beam"), default="plain")
    p.add_argument("--beam_args", default="", help="Beam pipeline options, e.g. '--runner=DataflowRunner ...'")
    p.add_argument("--num_shards", type=common.at_least(0), default=0, help="Beam output shards (0: the runner decides)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    common.setup_logging(f"{args.output}.log", only_if_warned=True)
    return common.run_main("generate_sap", lambda: _generate(args))


def _generate(args) -> int:
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    config = SapConfig(tuple(languages), args.mode, args.passages_per_language, args.seed,
                       args.source_language, args.chunk_size, args.prompt_mode, args.num_shots)
    corpora = _corpora(args.corpus, languages, args.mode)
    missing = [lang for lang in languages if lang not in corpora]
    if missing:
        raise common.UsageError(f"--corpus: none given for languages {missing}")
    exemplars = read_exemplars(args.exemplars, args.source_language)
    filters = FilterConfig(min_query_chars=args.min_query_chars, max_query_chars=args.max_query_chars,
                           check_language=not args.no_langid, drop_duplicates=not args.keep_duplicates,
                           langid_candidates=tuple(args.langid_languages.split(",")) if args.langid_languages
                           else None)
    safety = _import(args.safety_classifier) if args.safety_classifier else None
    backend_config = BackendConfig(kind=args.backend, model=args.model, base_url=args.base_url,
                                   api_key_env=args.api_key_env, max_concurrency=args.concurrency,
                                   max_retries=args.max_retries, timeout_s=args.timeout,
                                   initial_backoff_s=args.initial_backoff,
                                   max_tokens=args.max_tokens, temperature=args.temperature)
    if args.runner == "beam":
        from polyret.synthesis.beam_sap import run_beam_sap
        counts = run_beam_sap(corpora, exemplars, backend_config, config, args.output, filters, safety,
                              shlex.split(args.beam_args), args.num_shards, args.exemplars)
        print(f"SAP (beam): {json.dumps(counts, sort_keys=True)}")
        return 0
    fingerprint = {"exemplars": args.exemplars, "exemplars_file": file_fingerprint(args.exemplars),
                   "backend": args.backend, "model": args.model, "max_tokens": args.max_tokens,
                   "temperature": args.temperature}
    progress = generate_sap(corpora, exemplars, backend_config.build(), config, args.output, filters,
                            safety, fingerprint, args.exemplars)
    print(f"SAP: {summary_line(progress)} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
