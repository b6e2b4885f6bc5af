"""The collection: passages read once, their languages (the `lang` field, or detected) and their translation
groups (the `group` field: passages that translate one another share it)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Mapping, Sequence

from polyret.io.formats import DataError, iter_records
from polyret.synthesis.filters import _detector
from polyret.synthesis.sampling import sample_key


@dataclasses.dataclass
class Corpus:
    texts: dict[str, str]  # id -> title + text (what the retrievers see)
    records: dict[str, dict[str, str]]  # id -> {title, text} (what the LLM sees)
    languages: dict[str, str]  # id -> language: the `lang` field, else the detected collection language
    has_language_field: bool
    groups: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> `group` (passages that have one)

    @functools.cached_property
    def _members(self) -> dict[str, list[str]]:
        members = collections.defaultdict(list)
        for pid, group in self.groups.items():
            members[group].append(pid)
        return members

    def translations(self, pid: str) -> list[str]:
        """The other passages of pid's group (none when it has no group)."""
        group = self.groups.get(pid)
        return [] if group is None else [p for p in self._members[group] if p != pid]

    def partitions(self) -> dict[str, list[str]]:
        """Passage ids by language; every retrieval stage searches within one partition."""
        out: dict[str, list[str]] = collections.defaultdict(list)
        for pid, lang in self.languages.items():
            out[lang].append(pid)
        return dict(sorted(out.items()))


def read_corpus(path: str | os.PathLike) -> Corpus:
    texts, records, langs, groups = {}, {}, {}, {}
    for line_no, r in iter_records(path, "corpus"):
        if not r["text"].strip():
            raise DataError(path, line_no, f"field 'text' is empty (id {r['id']!r})")
        if r["id"] in texts:
            raise DataError(path, line_no, f"duplicate id {r['id']!r}")
        texts[r["id"]] = f"{r['title']} {r['text']}" if r["title"] else r["text"]
        records[r["id"]] = {"title": r["title"], "text": r["text"]}
        if r["lang"]:
            langs[r["id"]] = r["lang"]
        if r["group"] is not None:
            if not isinstance(r["group"], (str, int)) or isinstance(r["group"], bool):
                raise DataError(path, line_no, f"field 'group' has type {type(r['group']).__name__} (a string or an "
                                               "integer: passages that translate one another share it)")
            groups[r["id"]] = str(r["group"])
    if not texts:
        raise DataError(path, None, "no records")
    has_field = bool(langs)
    if has_field and len(langs) < len(texts):
        missing = next(pid for pid in texts if pid not in langs)
        raise DataError(path, None, f"some passages have a 'lang' field and some do not (e.g. {missing!r})")
    if not has_field:
        langs = detect_languages(texts)
    return Corpus(texts, records, langs, has_field, groups)


SAMPLE, SHARE = 200, 0.1


def _codes(texts: Sequence[str], candidates: tuple[str, ...] | None = None) -> list[str | None]:
    """Each text's language (lingua, offline; among `candidates` when given) as an ISO 639-1 code, or None."""
    found = _detector(candidates).detect_languages_in_parallel_of([t[:1000] for t in texts])
    return [None if lang is None else lang.iso_code_639_1.name.lower() for lang in found]


def detect_languages(texts: Mapping[str, str]) -> dict[str, str]:
    """Passage languages of a collection without a `lang` field: detected on a sample of 200 among all of
    lingua's languages; when one language holds nearly all of it, every passage gets it, otherwise (a mixed
    collection, e.g. a headerless TSV of several languages) each passage's own is detected among the languages
    that hold at least 10% of the sample (the most common where detection fails)."""
    sample = sorted(texts, key=lambda p: sample_key(0, "", p))[:SAMPLE]
    found = collections.Counter(c for c in _codes([texts[p] for p in sample]) if c is not None)
    if not found:
        return dict.fromkeys(texts, "und")
    common = found.most_common(1)[0][0]
    languages = tuple(sorted(c for c, n in found.items() if n >= SHARE * sum(found.values())))
    if len(languages) == 1:
        return dict.fromkeys(texts, common)
    ids = list(texts)
    return {p: code or common for p, code in zip(ids, _codes([texts[p] for p in ids], languages))}


def warn_language_mismatch(corpus: Corpus, languages: Sequence[str]) -> str | None:
    """A warning when the collection's languages and --languages differ (None when they agree)."""
    have = sorted(set(corpus.languages.values()))
    if set(have) == set(languages):
        return None
    source = "its 'lang' field" if corpus.has_language_field else "detected"
    only_corpus = [l for l in have if l not in languages]
    only_queries = [l for l in languages if l not in have]
    parts = []
    if only_queries:
        parts.append(f"queries in {', '.join(only_queries)} will be cross-lingual (no passage is in that language)")
    if only_corpus:
        parts.append(f"passages in {', '.join(only_corpus)} get queries only in {', '.join(languages)}")
    return (f"warning: the corpus is in {', '.join(have)} ({source}) but --languages is {','.join(languages)}: "
            + "; ".join(parts))
