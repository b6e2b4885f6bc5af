"""Passages to generate queries for: up to N per language, uniformly at random, fixed by a seed.

Bottom-k sampling: every (language, passage id) gets a pseudo-random 64-bit key from a hash of the
seed, and each language keeps the N passages with the smallest keys. That is a uniform sample without
replacement, it needs one streaming pass and O(N) memory, and it is the same sample whichever order
the corpus is read in — so the plain and the Beam pipeline pick exactly the same passages.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import json
import os
from typing import Any, Iterator, Mapping, Sequence

from polyret.io.formats import DataError, open_text


def sample_key(seed: int, language: str, passage_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x1f{language}\x1f{passage_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def corpus_files(pattern: str | os.PathLike) -> list[str]:
    """A corpus path, or a glob pattern over its shards (`corpus-*.jsonl`), as a sorted list of files."""
    pattern = os.fspath(pattern)
    if not any(ch in pattern for ch in "*?["):
        return [pattern]
    files = sorted(glob.glob(pattern))
    if not files:
        raise DataError(pattern, None, "no files match this pattern")
    return files


def parse_passage(path: str, line_no: int, line: str) -> dict[str, str] | None:
    """One corpus line -> `{passage_id, title, text}` (None for a blank line). JSONL
    `{"_id"|"docid"|"id", "title", "text"}` or TSV `id<TAB>text` / `id<TAB>title<TAB>text`.
    A passage without an id or text is an error naming file and line."""
    if not line.strip():
        return None
    if ".jsonl" in path or path.endswith(".json"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, f"malformed JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        pid = next((obj[f] for f in ("_id", "docid", "id", "pid") if f in obj), None)
        if pid is None or not str(pid).strip():
            raise DataError(path, line_no, "no passage id (field '_id', 'docid', 'id' or 'pid')")
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, line_no, f"field 'text' is {'missing' if text is None else 'empty'} "
                                           f"(passage {pid!r})")
        return {"passage_id": str(pid), "title": str(obj.get("title") or ""), "text": text}
    parts = line.rstrip("\n").split("\t")
    if len(parts) not in (2, 3) or not parts[-1].strip():
        raise DataError(path, line_no, "expected `id<TAB>text` or `id<TAB>title<TAB>text` with text")
    return {"passage_id": parts[0], "title": parts[1] if len(parts) == 3 else "", "text": parts[-1]}


def iter_passages(pattern: str | os.PathLike) -> Iterator[dict[str, str]]:
    """Passages of a corpus (a file or a glob over shards), in file and line order."""
    for path in corpus_files(pattern):
        with open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                if (passage := parse_passage(path, line_no, line)) is not None:
                    yield passage


def sample_passages(corpora: Mapping[str, str | os.PathLike], languages: Sequence[str],
                    passages_per_language: int, seed: int) -> list[dict[str, Any]]:
    """Work items `{language, passage_id, title, text, key}`: languages in the given order, each's
    sample ordered by key. `corpora[language]` is the corpus to sample for that language (cross-lingual
    runs map every language to the same English corpus, which is then read once)."""
    missing = [lang for lang in languages if lang not in corpora]
    if missing:
        raise ValueError(f"no corpus for languages {missing}")
    by_path: dict[str, list[str]] = {}
    for lang in languages:
        by_path.setdefault(os.fspath(corpora[lang]), []).append(lang)
    heaps: dict[str, list] = {lang: [] for lang in languages}
    for path, langs in by_path.items():
        for passage in iter_passages(path):
            for lang in langs:
                key = sample_key(seed, lang, passage["passage_id"])
                heap = heaps[lang]
                entry = (-key, passage["passage_id"], passage)
                if len(heap) < passages_per_language:
                    heapq.heappush(heap, entry)
                elif entry[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, entry)
    items = []
    for lang in languages:
        for neg_key, _, passage in sorted(heaps[lang], key=lambda e: (-e[0], e[1])):
            items.append({"language": lang, "key": -neg_key, **passage})
    return items
