"""Readers for the file formats users already have, with errors that name file, line and field.

JSONL / TSV corpora and queries (BEIR, DPR, MS MARCO layouts), TREC and BEIR qrels, gzipped JSONL
teacher-score files. Every reader either returns exactly what the file says or raises `DataError`; with
`skip_bad=True` bad lines are counted in a `SkipCounter` instead (reported by the caller at the end),
never silently turned into wrong examples. Lines are decoded one by one, so a byte that is not UTF-8 is
reported with its line; a UTF-8 byte-order mark at the start of a file is dropped.
"""

from __future__ import annotations

import collections
import gzip
import io
import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from polyret.errors import DataError  # noqa: F401  (re-exported: the readers' error)
from polyret.io.languages import normalize_language


class SkipCounter(collections.Counter):
    """Reasons -> number of skipped lines. `note(error)` counts a skipped record by its reason and, when
    `log_first` > 0, logs that many of them with their `file:line` (then only counts)."""

    log_first = 0

    def note(self, error: Exception, reason: str | None = None) -> None:
        reason = reason or (str(error).split(": ", 1)[1] if ": " in str(error) else str(error))
        self.update([reason])
        total = sum(self.values())
        if total <= self.log_first:
            logging.getLogger("polyret.data").warning("skipped bad record: %s", error)
            if total == self.log_first:
                logging.getLogger("polyret.data").warning("further bad records are counted, not logged")

    def report(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.items())) or "nothing skipped"


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    return path


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """A text file (gzipped when it ends in .gz) as UTF-8; a leading byte-order mark is dropped."""
    path = _check_file(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) of every line, decoded as UTF-8 line by line so a bad
    byte names its line; a UTF-8 byte-order mark at the start is dropped."""
    path = _check_file(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, line_no, f"not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}"
                                ) from None
            yield line_no, line.rstrip("\r\n")


def check_fields(path: str | os.PathLike, line_no: int, obj: dict[str, Any],
                 required: dict[str, type | tuple[type, ...]], nonempty: tuple[str, ...] = ()) -> None:
    """Required fields present, not null and of their types; `nonempty` fields not blank."""
    for field, types in required.items():
        if field not in obj:
            raise DataError(path, line_no, f"field {field!r} is missing")
        if obj[field] is None:
            raise DataError(path, line_no, f"field {field!r} is null")
        if not isinstance(obj[field], types):
            raise DataError(path, line_no, f"field {field!r} has type {type(obj[field]).__name__}")
    for field in nonempty:
        if obj.get(field) is None:
            raise DataError(path, line_no, f"field {field!r} is {'null' if field in obj else 'missing'}")
        if not str(obj[field]).strip():
            raise DataError(path, line_no, f"field {field!r} is empty")


def iter_objects(path: str | os.PathLike, required: dict[str, type | tuple[type, ...]] | None = None,
                 nonempty: tuple[str, ...] = (), skip_bad: bool = False, skipped: SkipCounter | None = None
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a JSONL file, or rows of a parquet file (Hugging Face releases such as SWIM-IR), checked
    as `iter_jsonl` checks them; errors name `file:line` (`file:row` for parquet)."""
    if Path(path).suffix != ".parquet":
        yield from iter_jsonl(path, required, nonempty, skip_bad, skipped)
        return
    for row, obj in iter_parquet(path, columns=None):
        try:
            check_fields(path, row, obj, required or {}, nonempty)
        except DataError as e:
            if not skip_bad:
                raise
            skipped is not None and skipped.note(e)
            continue
        yield row, obj


def iter_jsonl(path: str | os.PathLike, required: dict[str, type | tuple[type, ...]] | None = None,
               nonempty: tuple[str, ...] = (), skip_bad: bool = False,
               skipped: SkipCounter | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line, checking required fields and their types."""
    required = required or {}
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise DataError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
            check_fields(path, line_no, obj, required, nonempty)
        except json.JSONDecodeError as e:
            err = DataError(path, line_no, f"malformed JSON: {e.msg} (column {e.colno})")
            if not skip_bad:
                raise err from e
            skipped is not None and skipped.note(err, "malformed JSON")
            continue
        except DataError as e:
            if not skip_bad:
                raise
            skipped is not None and skipped.note(e)
            continue
        yield line_no, obj


def iter_parquet(path: str | os.PathLike, columns: list[str] | None = None, batch_size: int = 4096
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, row as a dict) of a parquet file (Hugging Face releases), streamed in batches;
    errors about a row name `file:row`."""
    import pyarrow.parquet as pq

    path = _check_file(path)
    try:
        reader = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a file that is not parquet
        raise DataError(path, None, f"not a parquet file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if columns is not None:
        missing = [c for c in columns if c not in reader.schema_arrow.names]
        if missing:
            raise DataError(path, None, f"column {missing[0]!r} is missing (columns: {', '.join(reader.schema_arrow.names)})")
    row = 0
    for batch in reader.iter_batches(batch_size=batch_size, columns=columns):
        for obj in batch.to_pylist():
            row += 1
            yield row, obj


ID_COLUMNS = ("_id", "id", "docid", "doc_id", "pid", "qid", "query_id", "query-id")
TEXT_COLUMNS = ("text", "query", "question", "contents", "passage")
TITLE_COLUMNS = ("title",)
LANGUAGE_COLUMNS = ("lang", "language")


def _column(names: list[str], choices: tuple[str, ...]) -> int | None:
    return next((names.index(c) for c in choices if c in names), None)


def _tsv_header(fields: list[str]) -> dict[str, int] | None:
    """Column positions when `fields` is a header row (an id column and a text column by name), else None."""
    names = [f.strip().lower() for f in fields]
    positions = {"id": _column(names, ID_COLUMNS), "text": _column(names, TEXT_COLUMNS),
                 "title": _column(names, TITLE_COLUMNS), "lang": _column(names, LANGUAGE_COLUMNS),
                 "group": _column(names, ("group",))}
    if positions["id"] is None or positions["text"] is None:
        return None
    return {k: v for k, v in positions.items() if v is not None}


# Column layouts of TSV files without a header row, by number of columns.
HEADERLESS_LAYOUTS = {
    "corpus": {2: ("id", "text"), 3: ("id", "text", "title")},    # MS MARCO collection; DPR psgs_w100.tsv
    "queries": {2: ("id", "text"), 3: ("id", "text", "lang")},    # MS MARCO queries; polyret's queries + language
}


def iter_records(path: str | os.PathLike, kind: str = "corpus", id_fields: tuple[str, ...] = ID_COLUMNS,
                 text_field: str = "text") -> Iterator[tuple[int, dict[str, str | None]]]:
    """(line number, {"id", "text", "title", "lang", "group"}) of a corpus or queries file.

    JSONL (BEIR style; `title`, `lang` and `group` optional; `group`: passages that translate one another
    share it) or TSV. A TSV whose first row names its columns (an id column such as `id`/`_id`/`qid` and a
    text column such as `text`/`query`/`question`; `title`, `lang` and `group` optional) is read by those
    names and every row must have as many columns as the header; without a header the layout follows the
    column count (`kind` "corpus": `id text [title]` as MS MARCO and DPR; "queries": `id text [lang]`).
    Null or missing text is an error naming file:line:field.
    """
    if kind not in HEADERLESS_LAYOUTS:
        raise ValueError(f"kind must be 'corpus' or 'queries', got {kind!r}")
    path = Path(path)
    if path.suffix == ".parquet":
        rows = iter_parquet(path)
    elif ".jsonl" in path.suffixes or ".json" in path.suffixes:
        rows = iter_jsonl(path)
    else:
        yield from _iter_tsv_records(path, kind)
        return
    text_fields = (text_field,) if text_field != "text" else TEXT_COLUMNS
    for line_no, obj in rows:
        id_field = next((f for f in id_fields if f in obj), None)
        if id_field is None:
            raise DataError(path, line_no, f"no id field (one of {', '.join(id_fields)})")
        if obj[id_field] is None or isinstance(obj[id_field], (dict, list, bool)):
            raise DataError(path, line_no, f"field {id_field!r} is {'null' if obj[id_field] is None else 'not an id'}")
        text_field = next((f for f in text_fields if f in obj), text_fields[0])
        if text_field not in obj:
            raise DataError(path, line_no, f"field {text_field!r} is missing")
        if not isinstance(obj[text_field], str):
            raise DataError(path, line_no, f"field {text_field!r} is "
                                           f"{'null' if obj[text_field] is None else type(obj[text_field]).__name__}")
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise DataError(path, line_no, f"field 'title' has type {type(title).__name__}")
        lang = next((obj[f] for f in LANGUAGE_COLUMNS if f in obj), None)
        if lang is not None and not isinstance(lang, str):
            raise DataError(path, line_no, f"field 'lang' has type {type(lang).__name__}")
        # `group` as given: only the readers that use it check it (polyret adapt)
        yield line_no, {"id": str(obj[id_field]), "text": obj[text_field], "title": title or "", "lang": lang,
                        "group": obj.get("group")}


_CSV_QUOTED = re.compile(r'^"((?:[^"]|"")*)"$')


def _unquote(field: str) -> str:
    """DPR's psgs_w100.tsv was written with Python's csv module: a field holding a quote is wrapped in
    quotes with inner quotes doubled (DPR reads it back with csv.reader)."""
    m = _CSV_QUOTED.match(field)
    return m.group(1).replace('""', '"') if m else field


def _iter_tsv_records(path: Path, kind: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    header: dict[str, int] | None = None
    width = None
    first = True
    rows = header_line = 0
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if first:
            first = False
            header = _tsv_header(fields)
            if header is not None:
                width, header_line = len(fields), line_no
                continue
        if header is not None:
            if len(fields) != width:
                raise DataError(path, line_no, f"{len(fields)} columns, but the header (line {header_line}) "
                                               f"names {width}")
            positions = header
        else:
            layout = HEADERLESS_LAYOUTS[kind].get(len(fields))
            if layout is None:
                raise DataError(path, line_no, f"{len(fields)} columns; a {kind} TSV without a header row has "
                                               + " or ".join(f"`{' '.join(l)}`" for l in HEADERLESS_LAYOUTS[kind].values())
                                               + " (or name the columns in a header row)")
            if width is not None and len(fields) != width:
                raise DataError(path, line_no, f"{len(fields)} columns, but earlier lines have {width}")
            width = len(fields)
            positions = {name: i for i, name in enumerate(layout)}
        if "title" in positions:  # the DPR layout (id text title) is csv-quoted
            fields = [_unquote(f) for f in fields]
        record = {"id": fields[positions["id"]], "text": fields[positions["text"]],
                  "title": fields[positions["title"]] if "title" in positions else "",
                  "lang": fields[positions["lang"]] if "lang" in positions else None,
                  "group": fields[positions["group"]] if "group" in positions else None}
        rows += 1
        yield line_no, record
    if header is not None and not rows:
        raise DataError(path, header_line, "only a header row, no records")


def read_id_text(path: str | os.PathLike, id_fields: tuple[str, ...] = ID_COLUMNS,
                 text_field: str = "text", with_title: bool = True, kind: str | None = None) -> dict[str, str]:
    """A collection or query file -> {id: text} (see `iter_records` for the layouts); the title is
    joined before the text when `with_title`. `kind` defaults to "corpus" with titles, else "queries".

    Duplicate ids, empty texts and a file with no records (e.g. a header only) are errors.
    """
    path = Path(path)
    out: dict[str, str] = {}
    kind = kind or ("corpus" if with_title else "queries")
    for line_no, r in iter_records(path, kind, id_fields, text_field):
        pid, text = r["id"], r["text"]
        if not text.strip():
            raise DataError(path, line_no, f"field {text_field!r} is empty (id {pid!r})")
        if pid in out:
            raise DataError(path, line_no, f"duplicate id {pid!r}")
        out[pid] = f"{r['title']} {text}" if with_title and r["title"] else text
    if not out:
        raise DataError(path, None, "no records")
    return out


def read_languages(path: str | os.PathLike, kind: str = "queries") -> dict[str, str]:
    """{id: language code} from the file's language column or field (empty when it has none); codes are
    normalised (`hn` -> `hi`, see polyret.io.languages) and unknown codes are errors."""

    out = {}
    for line_no, r in iter_records(path, kind):
        if r["lang"] is not None:
            out[r["id"]] = normalize_language(r["lang"], path, line_no, "lang")
    return out


def iter_columns(path: str | os.PathLike, columns: int, layout: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a whitespace-separated file whose lines all have `columns` fields."""
    for line_no, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != columns:
            raise DataError(path, line_no, f"expected {columns} columns `{layout}`, got {len(parts)}")
        yield line_no, parts


BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


def iter_qrels(path: str | os.PathLike) -> Iterator[tuple[int, str, str, int]]:
    """(line number, qid, docid, relevance) of TREC qrels `qid 0 docid relevance` (whitespace-separated;
    MIRACL, NeuCLIR, HC4, MS MARCO) or BEIR `qrels/*.tsv` (header `query-id corpus-id score`, tabs)."""
    lines = iter_lines(path)
    beir = False
    for line_no, line in lines:
        parts = line.split()
        if not parts:
            continue
        beir = tuple(p.lower() for p in parts) == BEIR_QRELS_HEADER
        if not beir:
            lines = itertools.chain([(line_no, line)], lines)
        break
    columns, layout = (3, "query-id corpus-id score") if beir else (4, "qid 0 docid relevance")
    seen_data = False
    for line_no, line in lines:
        parts = line.split("\t") if beir else line.split()
        if not line.strip():
            continue
        if len(parts) != columns:
            raise DataError(path, line_no, f"expected {columns} columns `{layout}`, got {len(parts)}")
        qid, docid, grade = (parts[0], parts[1], parts[2]) if beir else (parts[0], parts[2], parts[3])
        try:
            rel = int(grade)
        except ValueError:
            raise DataError(path, line_no, f"relevance {grade!r} is not an integer") from None
        seen_data = True
        yield line_no, qid, docid, rel
    if beir and not seen_data:
        raise DataError(path, 1, "only a header row, no judgements")


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Qrels (TREC or BEIR layout, see `iter_qrels`) -> {qid: {docid: relevance}}.

    A pair judged twice with different grades is an error naming both lines (the same grade twice is
    accepted: some releases repeat lines)."""
    qrels: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], int] = {}
    for line_no, qid, docid, rel in iter_qrels(path):
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != rel:
            raise DataError(path, line_no, f"query {qid!r} document {docid!r} judged {rel} here and "
                                           f"{docs[docid]} on line {where[qid, docid]}")
        docs.setdefault(docid, rel)
        where.setdefault((qid, docid), line_no)
    return qrels


def iter_teacher_scores(path: str | os.PathLike) -> Iterator[tuple[int, str, list[tuple[str, float]]]]:
    """hltcoe Translate-Distill score file: gzipped JSONL lines `["qid", ["pid", score], ...]`."""
    for line_no, line in iter_lines(path):
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
