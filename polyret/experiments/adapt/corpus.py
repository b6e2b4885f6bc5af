"""The collection: passages read once, their languages (the `lang` field, or detected) and their translation
groups (the `group` field: passages that translate one another share it)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Sequence

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
        detected = detect_language([texts[p] for p in sorted(texts, key=lambda p: sample_key(0, "", p))[:200]])
        langs = dict.fromkeys(texts, detected or "und")
    return Corpus(texts, records, langs, has_field, groups)


def detect_language(texts: Sequence[str]) -> str | None:
    """The most common language of the texts (lingua, offline), as an ISO 639-1 code."""
    detector = _detector(None)
    found = collections.Counter(detector.detect_language_of(t[:1000]) for t in texts)
    found.pop(None, None)
    if not found:
        return None
    return found.most_common(1)[0][0].iso_code_639_1.name.lower()


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
