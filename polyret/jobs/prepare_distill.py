"""Make Multilingual Translate-Distill training data: teacher scores and translated collections.

  python -m polyret.jobs.prepare_distill --queries train_queries.tsv --collection collection.tsv \
      --run bm25_top100.trec --top_n 50 --teacher /models/ms-marco-MiniLM-L-6-v2 \
      --languages fa,ru,zh --translator /models/nllb-200-distilled-600M \
      --target_tokens fa=pes_Arab,ru=rus_Cyrl,zh=zho_Hans --source_token eng_Latn --output_dir mtd_data

writes `scores.jsonl.gz` (hltcoe layout) and `collection.<lang>.tsv` (row-aligned translations) and prints
the gin bindings for runs/mtd_colbert.gin. `--teacher_type` picks cross_encoder / bi_encoder (default:
detected from the folder); `--teacher_llm` scores with an LLM instead; `--translator_llm` translates
with an LLM (both through --base_url / --model of an OpenAI-compatible server). Killed runs resume.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from polyret.io.fingerprint import file_fingerprint, folder_fingerprint
from polyret.jobs import common
from polyret.synthesis.distill import TEACHER_KINDS


def _pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret prepare_distill", __doc__)
    p.add_argument("--queries", required=True, help="training queries (TSV id<TAB>text or JSONL)")
    p.add_argument("--collection", required=True, help="English passages (TSV or JSONL)")
    p.add_argument("--run", required=True, help="TREC run with candidate passages per query")
    p.add_argument("--top_n", type=common.at_least(1), default=50, help="candidates per query to score")
    p.add_argument("--output_dir", required=True)
    teacher = p.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--teacher", help="a polyret cross-encoder checkpoint (scored in JAX), a sentence-transformers "
                                          "cross-encoder or bi-encoder folder, or a model name that resolves offline")
    teacher.add_argument("--teacher_llm", action="store_true", help="score with the LLM at --base_url/--model")
    p.add_argument("--teacher_type", choices=TEACHER_KINDS, default="auto")
    p.add_argument("--batch_size", type=common.at_least(1), default=64)
    p.add_argument("--languages", default="",
                   help="comma-separated document languages; all but --source_language are translated into")
    p.add_argument("--source_language", default="en", help="the collection's (and the teacher's) language")
    p.add_argument("--translator", default=None, help="Hugging Face seq2seq translation model folder")
    p.add_argument("--translator_llm", action="store_true", help="translate with the LLM at --base_url/--model")
    p.add_argument("--target_tokens", default="", help="LANG=TOKEN,... forced first decoder token (NLLB, M2M)")
    p.add_argument("--source_token", default=None, help="tokenizer src_lang (NLLB eng_Latn, M2M en)")
    p.add_argument("--prefix", default="", help="input prefix; {language} is replaced by the target's name")
    p.add_argument("--model", default=None, help="LLM name for --teacher_llm / --translator_llm")
    p.add_argument("--base_url", default=None)
    p.add_argument("--api_key_env", default="OPENAI_API_KEY")
    p.add_argument("--concurrency", type=common.at_least(1), default=8)
    p.add_argument("--device", default=None)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    common.setup_logging(Path(args.output_dir) / "prepare_distill.log")
    return common.run_main("prepare_distill", lambda: _prepare(args))


def _prepare(args) -> int:
    from polyret.synthesis.distill import (LLMTeacher, LLMTranslator, Seq2SeqTranslator, SentenceTransformersTeacher,
                                           prepare_distill)
    from polyret.synthesis.llm import BackendConfig

    languages = [lang for lang in args.languages.split(",") if lang]
    if set(languages) - {args.source_language} and not (args.translator or args.translator_llm):
        raise common.UsageError("--languages names languages to translate into; give --translator or "
                                "--translator_llm")
    backend = None
    if args.teacher_llm or args.translator_llm:
        backend = BackendConfig(model=args.model or "", base_url=args.base_url, api_key_env=args.api_key_env,
                                max_concurrency=args.concurrency).build()
    if args.teacher:
        from polyret.models.model_names import resolve_model
        args.teacher = str(resolve_model(args.teacher))
    if args.teacher_llm:
        scorer = LLMTeacher(backend)
    elif (Path(args.teacher) / "model_config.json").is_file():  # a polyret cross-encoder: scored in JAX
        from polyret.retrieval.rerank import PairScorer
        scorer = PairScorer.from_checkpoint(args.teacher, batch_size=args.batch_size)
    else:
        scorer = SentenceTransformersTeacher(args.teacher, args.teacher_type, args.batch_size, args.device)
    translator = None
    if args.translator_llm:
        translator = LLMTranslator(backend)
    elif args.translator:
        translator = Seq2SeqTranslator(args.translator, _pairs(args.target_tokens), args.source_token,
                                       args.prefix, device=args.device or "cpu")
    # What the chunks depend on: the input files' content and the models, not only their names.
    fingerprint = {"teacher": args.teacher or f"llm:{args.model}", "translator": args.translator
                   or (f"llm:{args.model}" if args.translator_llm else None),
                   "inputs": {"queries": file_fingerprint(args.queries), "collection": file_fingerprint(args.collection),
                              "run": file_fingerprint(args.run)},
                   "teacher_files": folder_fingerprint(args.teacher) if args.teacher else None,
                   "translator_files": folder_fingerprint(args.translator) if args.translator else None}
    out = prepare_distill(args.queries, args.collection, args.run, args.output_dir, scorer, args.top_n,
                          languages, translator, args.source_language, fingerprint)
    print("MTD data ready; bind with runs/mtd_colbert.gin:\n"
          f"  --gin.MTD_SCORE_FILE=\"'{out['score_file']}'\" --gin.MTD_QUERIES=\"'{out['queries']}'\" "
          f"--gin.MTD_COLLECTIONS='{json.dumps(out['collections'])}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
