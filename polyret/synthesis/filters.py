"""Quality filters for generated queries; every rejection has a reason that the pipelines count.

Checks, in order: empty or refused output, length bounds, the query copying a long span of the
passage, the query's language (lingua, offline), an optional content-safety hook, and duplicates
within a language (checked last, so only kept queries count as seen; `drop_duplicates=False` leaves them
to a caller that knows a wider key, e.g. `polyret adapt`'s (query language, passage language)).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import unicodedata
from typing import Callable, Iterable

REFUSALS = (r"\bI(?:'m| am) sorry\b", r"\bI (?:cannot|can't|can not|am unable to)\b", r"\bas an AI\b",
            r"\blanguage model\b", r"^\s*(?:n/?a|none)\s*[.!]?\s*$")


@dataclasses.dataclass
class FilterConfig:
    min_query_chars: int = 4
    max_query_chars: int = 300
    # Drop a query when it shares a verbatim span with the passage covering this much of the query...
    max_copied_fraction: float = 0.75
    # ...and at least this many characters (short queries naturally repeat an entity name).
    min_copied_chars: int = 30
    check_language: bool = True
    drop_duplicates: bool = True
    # Languages lingua chooses among (ISO 639-1 codes); None = all 75 it knows (slower to load).
    langid_candidates: tuple[str, ...] | None = None
    refusal_patterns: tuple[str, ...] = REFUSALS


def filter_fingerprint(config: FilterConfig | None) -> dict:
    """The settings a resumed run must share; `drop_duplicates` only when off, so runs written before it
    existed resume."""
    settings = dataclasses.asdict(config or FilterConfig())
    if settings["drop_duplicates"]:
        del settings["drop_duplicates"]
    return settings


@functools.lru_cache(maxsize=4)
def _detector(candidates: tuple[str, ...] | None):
    import lingua

    if candidates is None:
        return lingua.LanguageDetectorBuilder.from_all_languages().build()
    languages = [lang for code in candidates if (lang := lingua_language(code)) is not None]
    return lingua.LanguageDetectorBuilder.from_languages(*languages).build()


def lingua_language(code: str):
    """lingua's Language for an ISO 639-1 code, or None when lingua does not know the language."""
    import lingua

    try:
        return lingua.Language.from_iso_code_639_1(lingua.IsoCode639_1.from_str(code))
    except (ValueError, AttributeError):
        return None


def normalize_query(query: str) -> str:
    """Duplicate key: case-folded, punctuation and spacing removed."""
    text = unicodedata.normalize("NFKC", query).casefold()
    return "".join(ch for ch in text if ch.isalnum())


class QueryFilter:
    """Applies the checks to (query, passage, language); `safety` returns True for unsafe text."""

    def __init__(self, config: FilterConfig | None = None, safety: Callable[[str], bool] | None = None):
        self.config = config or FilterConfig()
        self.safety = safety
        self._refusal = re.compile("|".join(self.config.refusal_patterns), re.IGNORECASE)
        self._seen: dict[str, set[str]] = {}

    def reject_reason(self, query: str, passage: str, language: str) -> str | None:
        """Why the query must be dropped, or None; duplicates are checked separately (`is_duplicate`)."""
        cfg = self.config
        if not query.strip():
            return "empty_query"
        if self._refusal.search(query):
            return "refusal"
        if len(query) < cfg.min_query_chars:
            return "too_short"
        if len(query) > cfg.max_query_chars:
            return "too_long"
        if self._copied(query, passage):
            return "copies_passage"
        if cfg.check_language and (target := lingua_language(language)) is not None:
            candidates = cfg.langid_candidates and tuple(sorted({*cfg.langid_candidates, language}))
            if _detector(candidates).detect_language_of(query) != target:
                return "wrong_language"
        if self.safety is not None and self.safety(query):
            return "unsafe"
        return None

    def _copied(self, query: str, passage: str) -> bool:
        matcher = difflib.SequenceMatcher(None, query.casefold(), passage.casefold(), autojunk=False)
        span = matcher.find_longest_match(0, len(query), 0, len(passage)).size
        return span >= self.config.min_copied_chars and span >= self.config.max_copied_fraction * len(query)

    def is_duplicate(self, query: str, language: str) -> bool:
        """True when `language` already has this query; otherwise records it as seen."""
        seen = self._seen.setdefault(language, set())
        key = normalize_query(query)
        if key in seen:
            return True
        seen.add(key)
        return False

    def mark_seen(self, queries: Iterable[tuple[str, str]]) -> None:
        """Record (query, language) pairs kept by an earlier, interrupted run."""
        for query, language in queries:
            self._seen.setdefault(language, set()).add(normalize_query(query))
