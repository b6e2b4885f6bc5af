"""Readers for the file formats users already have, with errors that name file, line and field.

JSONL / TSV corpora and queries, TREC qrels, gzipped JSONL teacher-score files. Every reader either
returns exactly what the file says or raises `DataError`; with `skip_bad=True` bad lines are counted in
a `SkipCounter` instead (reported by the caller at the end), never silently turned into wrong examples.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator


class DataError(ValueError):
    """Bad input data; the message starts with `file:line:` and names the field."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


class SkipCounter(collections.Counter):
    """Reasons -> number of skipped lines."""

    def report(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.items())) or "nothing skipped"


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: str | os.PathLike, required: dict[str, type | tuple[type, ...]] | None = None,
               nonempty: tuple[str, ...] = (), skip_bad: bool = False,
               skipped: SkipCounter | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line, checking required fields and their types."""
    required = required or {}
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise DataError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
                for field, types in required.items():
                    if field not in obj:
                        raise DataError(path, line_no, f"field {field!r} is missing")
                    if not isinstance(obj[field], types):
                        raise DataError(path, line_no, f"field {field!r} has type {type(obj[field]).__name__}")
                for field in nonempty:
                    if not str(obj.get(field, "")).strip():
                        raise DataError(path, line_no, f"field {field!r} is empty")
            except json.JSONDecodeError as e:
                err = DataError(path, line_no, f"malformed JSON: {e.msg} (column {e.colno})")
                if not skip_bad:
                    raise err from e
                skipped is not None and skipped.update(["malformed JSON"])
                continue
            except DataError as e:
                if not skip_bad:
                    raise
                skipped is not None and skipped.update([str(e).split(": ", 1)[1]])
                continue
            yield line_no, obj


def read_id_text(path: str | os.PathLike, id_fields: tuple[str, ...] = ("_id", "docid", "id", "qid", "pid"),
                 text_field: str = "text", with_title: bool = True) -> dict[str, str]:
    """A collection or query file -> {id: text}. JSONL (BEIR style; title joined to text) or TSV `id<TAB>text`.

    Duplicate ids and empty texts are errors.
    """
    path = Path(path)
    out: dict[str, str] = {}

    def add(pid: str, text: str, line_no: int) -> None:
        if not text.strip():
            raise DataError(path, line_no, f"field {text_field!r} is empty (id {pid!r})")
        if pid in out:
            raise DataError(path, line_no, f"duplicate id {pid!r}")
        out[pid] = text

    if ".jsonl" in path.suffixes or ".json" in path.suffixes:
        for line_no, obj in iter_jsonl(path):
            id_field = next((f for f in id_fields if f in obj), None)
            if id_field is None:
                raise DataError(path, line_no, f"no id field (one of {', '.join(id_fields)})")
            if text_field not in obj:
                raise DataError(path, line_no, f"field {text_field!r} is missing")
            title = obj.get("title") or ""
            text = f"{title} {obj[text_field]}" if with_title and title else str(obj[text_field])
            add(str(obj[id_field]), text, line_no)
    else:
        with open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) < 2:
                    raise DataError(path, line_no, "expected `id<TAB>text` (TSV)")
                add(parts[0], " ".join(parts[1:]) if len(parts) > 2 and with_title else parts[-1], line_no)
    if not out:
        raise DataError(path, None, "no records")
    return out


def iter_columns(path: str | os.PathLike, columns: int, layout: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a whitespace-separated file whose lines all have `columns` fields."""
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != columns:
                raise DataError(path, line_no, f"expected {columns} columns `{layout}`, got {len(parts)}")
            yield line_no, parts


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """TREC qrels `qid 0 docid relevance` -> {qid: {docid: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    for line_no, parts in iter_columns(path, 4, "qid 0 docid relevance"):
        try:
            rel = int(parts[3])
        except ValueError:
            raise DataError(path, line_no, f"relevance {parts[3]!r} is not an integer") from None
        qrels.setdefault(parts[0], {})[parts[2]] = rel
    return qrels


def iter_teacher_scores(path: str | os.PathLike) -> Iterator[tuple[int, str, list[tuple[str, float]]]]:
    """hltcoe Translate-Distill score file: gzipped JSONL lines `["qid", ["pid", score], ...]`."""
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, line_no, f"malformed JSON: {e.msg}") from e
            if not isinstance(row, list) or not row or not isinstance(row[0], (str, int)):
                raise DataError(path, line_no, 'expected ["qid", ["pid", score], ...]')
            pairs = []
            for item in row[1:]:
                if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], (int, float))
                        or isinstance(item[1], bool)):
                    raise DataError(path, line_no, f"entry {item!r} is not [\"pid\", score]")
                pairs.append((str(item[0]), float(item[1])))
            if not pairs:
                raise DataError(path, line_no, f"query {row[0]!r} has no scored passages")
            yield line_no, str(row[0]), pairs
