"""Python readers that turn users' files into examples (dicts of strings / numbers) for SeqIO sources.

Each reader validates as it goes (errors name file, line and field) and is deterministic given a seed:
any per-example randomness comes from a generator seeded with (seed, line number), so the same example
is the same whatever the sharding or the order of reading.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from polyret.io.formats import DataError, SkipCounter, iter_jsonl, iter_teacher_scores, open_text, read_id_text
from polyret.seqio_tasks.languages import check_language

MIXING_STRATEGIES = ("mix_passages", "mix_entries", "round_robin")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def join_title(title: str | None, text: str) -> str:
    return f"{title} {text}" if title else text


# ------------------------------------------------------------------------------------------------ SWIM-IR

def swim_ir_examples(path: str | os.PathLike, skip_bad: bool = False,
                     skipped: SkipCounter | None = None) -> Iterator[dict[str, Any]]:
    """SWIM-IR JSONL (`_id, lang, code, query, title, text`) -> inputs (query), targets (title + text)."""
    fields = {"_id": (str, int), "lang": str, "code": str, "query": str, "title": str, "text": str}
    for line_no, obj in iter_jsonl(path, fields, nonempty=("query", "text"), skip_bad=skip_bad, skipped=skipped):
        try:
            language = check_language(obj["code"], path, line_no, "code")
        except DataError:
            if not skip_bad:
                raise
            skipped is not None and skipped.update(["unknown language code"])
            continue
        example = {"inputs": obj["query"], "targets": join_title(obj["title"], obj["text"]),
                   "query_id": str(obj["_id"]), "language": language}
        if "negatives" in obj:  # mined negatives carried in the same file
            example["negative_targets"] = [n if isinstance(n, str) else join_title(n.get("title"), n["text"])
                                           for n in obj["negatives"]]
        yield example


# ----------------------------------------------------------------------------------------- hard negatives

def _passage_text(item: Any, path, line_no: int, field: str) -> str:
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict) and "text" in item:
        text = join_title(item.get("title"), str(item["text"]))
    else:
        raise DataError(path, line_no, f"field {field!r}: expected a string or {{'title', 'text'}} object")
    if not text.strip():
        raise DataError(path, line_no, f"field {field!r} has an empty passage")
    return text


def hard_negative_examples(path: str | os.PathLike, num_negatives: int, seed: int = 0
                           ) -> Iterator[dict[str, Any]]:
    """JSONL `{query, positive, negatives: [...]}` or Tevatron `{query, positive_passages, negative_passages}`.

    Emits exactly `num_negatives` negatives: sampled without replacement when more are given, padded
    with empty strings (which tokenise to all-padding rows the loss masks) when fewer.
    """
    for line_no, obj in iter_jsonl(path, {"query": str}, nonempty=("query",)):
        if "positive_passages" in obj:
            if not obj["positive_passages"]:
                raise DataError(path, line_no, "field 'positive_passages' is empty")
            positive = _passage_text(obj["positive_passages"][0], path, line_no, "positive_passages")
            negatives = obj.get("negative_passages", [])
            neg_field = "negative_passages"
        elif "positive" in obj:
            positive = _passage_text(obj["positive"], path, line_no, "positive")
            negatives, neg_field = obj.get("negatives", []), "negatives"
        else:
            raise DataError(path, line_no, "field 'positive' (or 'positive_passages') is missing")
        negatives = [_passage_text(n, path, line_no, neg_field) for n in negatives]
        if len(negatives) > num_negatives:
            keep = sorted(_rng(seed, line_no).choice(len(negatives), num_negatives, replace=False))
            negatives = [negatives[i] for i in keep]
        negatives += [""] * (num_negatives - len(negatives))
        yield {"inputs": obj["query"], "targets": positive, "negative_targets": negatives}


# -------------------------------------------------------------------------------- translated distillation

def distillation_examples(score_file: str | os.PathLike, queries_file: str | os.PathLike,
                          collections: dict[str, str | os.PathLike], num_passages: int = 6, top_n: int = 50,
                          sampling: str = "random", strategy: str = "mix_passages", seed: int = 0
                          ) -> Iterator[dict[str, Any]]:
    """Multilingual Translate-Distill examples.

    Joins the teacher score file with the queries and one row-aligned passage collection per language.
    Per query: keep the teacher's top `top_n` passages, take `num_passages` of them (`sampling`:
    "random" without replacement, or "top"), ordered by teacher score; then choose languages by
    `strategy`: mix_passages (a random language per passage), mix_entries (one random language for the
    set) or round_robin (the query repeated once per language). Teacher scores are on English pairs
    and apply to every translation of a passage.
    """
    if strategy not in MIXING_STRATEGIES:
        raise ValueError(f"strategy must be one of {MIXING_STRATEGIES}, got {strategy!r}")
    if sampling not in ("random", "top"):
        raise ValueError(f"sampling must be 'random' or 'top', got {sampling!r}")
    languages = sorted(collections)
    for lang in languages:
        check_language(lang, "collections", None, "language")
    queries = read_id_text(queries_file)
    texts = {lang: read_id_text(path) for lang, path in collections.items()}
    first = texts[languages[0]]
    for lang in languages[1:]:
        if texts[lang].keys() != first.keys():
            missing = next(iter(first.keys() - texts[lang].keys() or texts[lang].keys() - first.keys()))
            raise DataError(collections[lang], None, f"not row-aligned with {collections[languages[0]]}: "
                                                     f"passage id {missing!r} is in one and not the other")
    for line_no, qid, pairs in iter_teacher_scores(score_file):
        if qid not in queries:
            raise DataError(score_file, line_no, f"query id {qid!r} is not in {queries_file}")
        for pid, _ in pairs:
            if pid not in first:
                raise DataError(score_file, line_no, f"passage id {pid!r} is not in the collections")
        ranked = sorted(pairs, key=lambda p: -p[1])[:top_n]
        if len(ranked) < num_passages:
            raise DataError(score_file, line_no, f"query {qid!r} has {len(ranked)} scored passages, "
                                                 f"fewer than num_passages={num_passages}")
        rng = _rng(seed, line_no)
        chosen = (sorted(rng.choice(len(ranked), num_passages, replace=False)) if sampling == "random"
                  else range(num_passages))
        picked = [ranked[i] for i in chosen]
        if strategy == "round_robin":
            language_sets = [[lang] * num_passages for lang in languages]
        elif strategy == "mix_entries":
            language_sets = [[languages[rng.integers(len(languages))]] * num_passages]
        else:
            language_sets = [[languages[i] for i in rng.integers(len(languages), size=num_passages)]]
        for langs in language_sets:
            yield {"inputs": queries[qid], "query_id": qid,
                   "passages": [texts[lang][pid] for (pid, _), lang in zip(picked, langs)],
                   "passage_ids": [pid for pid, _ in picked],
                   "teacher_scores": np.array([s for _, s in picked], np.float32),
                   "passage_languages": np.array([languages.index(lang) for lang in langs], np.int32)}


def text_documents(paths: Sequence[str | os.PathLike], text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Local documents for span-pair pre-training: JSONL (`text` field) or plain text (one document a line)."""
    for path in paths:
        if ".jsonl" in str(path):
            for _, obj in iter_jsonl(path, {text_field: str}):
                if obj[text_field].strip():
                    yield {"text": obj[text_field]}
        else:
            with open_text(path) as f:
                for line in f:
                    if line.strip():
                        yield {"text": line.rstrip("\n")}
