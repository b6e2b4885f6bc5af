"""Few-shot exemplars for summarize-then-ask prompting, read from the SWIM-IR prompt-file layouts.

Two layouts are read as published (github.com/google-research-datasets/swim-ir):
- wide (XOR-Retrieve / XTREME-UP prompts): a header row `Article, Summary, <Language> (<note>), ...`
  (optionally `Title`), one passage per row in `passage_language` (English) and one query column per
  target language; rows before the header and empty or "-" cells are skipped;
- long (MIRACL prompts): `Passage, Summary, Question, Language` (optionally `Title`), one exemplar per
  row with passage and query in that language; blank separator rows are skipped.
Language columns may be names (`German`, `German (MT)`) or codes (`de`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

from polyret.io.formats import DataError
from polyret.io.languages import language_code

DEFAULT_EXEMPLARS = Path(__file__).parent / "data" / "sap_exemplars.csv"
_PASSAGE_COLUMNS = ("article", "passage", "text")
_QUERY_COLUMNS = ("question", "query")


@dataclasses.dataclass(frozen=True)
class Exemplar:
    query_language: str
    passage_language: str
    title: str
    passage: str
    summary: str
    query: str


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def read_exemplars(path: str | os.PathLike = DEFAULT_EXEMPLARS, passage_language: str = "en"
                   ) -> list[Exemplar]:
    """All exemplars in a prompt file (either layout); `passage_language` is the wide layout's passages'."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "exemplar file not found")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    for header_line, header in enumerate(rows, 1):
        if _column(header, _PASSAGE_COLUMNS) is not None and _column(header, ("summary",)) is not None:
            break
    else:
        raise DataError(path, None, "no header row with a passage column (Article or Passage) and Summary")
    passage_col = _column(header, _PASSAGE_COLUMNS)
    summary_col, title_col = _column(header, ("summary",)), _column(header, ("title",))
    language_col, query_col = _column(header, ("language",)), _column(header, _QUERY_COLUMNS)
    if language_col is not None and query_col is not None:
        layout = "long"
        language_columns = {}
    else:
        layout = "wide"
        language_columns = {i: language_code(h) for i, h in enumerate(header)
                            if i not in (passage_col, summary_col, title_col) and h.strip()}
        unknown = [header[i] for i, code in language_columns.items() if code is None]
        if unknown:
            raise DataError(path, header_line, f"columns {unknown} name no known language")
        if not language_columns:
            raise DataError(path, header_line, "no query column per language (e.g. `German (MT)` or `de`)")

    def cell(row: list[str], col: int | None) -> str:
        return row[col].strip() if col is not None and col < len(row) else ""

    exemplars = []
    for line_no, row in enumerate(rows[header_line:], header_line + 1):
        passage = cell(row, passage_col)
        if not passage:
            if any(c.strip() for c in row):
                raise DataError(path, line_no, f"field {header[passage_col]!r} is empty")
            continue  # blank separator row
        title, summary = cell(row, title_col), cell(row, summary_col)
        if layout == "long":
            code = language_code(cell(row, language_col))
            if code is None:
                raise DataError(path, line_no, f"field 'Language': unknown language {cell(row, language_col)!r}")
            query = cell(row, query_col)
            if not query:
                raise DataError(path, line_no, f"field {header[query_col]!r} is empty")
            exemplars.append(Exemplar(code, code, title, passage, summary, query))
            continue
        for col, code in language_columns.items():
            query = cell(row, col)
            if query and query != "-":
                exemplars.append(Exemplar(code, passage_language, title, passage, summary, query))
    if not exemplars:
        raise DataError(path, None, "no exemplars")
    return exemplars


def exemplars_for(exemplars: list[Exemplar], query_language: str, passage_language: str,
                  path: str | os.PathLike = "exemplars") -> list[Exemplar]:
    """The exemplars with passages in `passage_language` and queries in `query_language`.

    Cross-lingual SAP asks for English passages (the wide layout); monolingual for passages in the
    query's language (the long layout, or English in the wide one).
    """
    chosen = [e for e in exemplars if e.query_language == query_language and e.passage_language == passage_language]
    if not chosen:
        have = sorted({e.query_language for e in exemplars if e.passage_language == passage_language})
        raise DataError(path, None, f"no exemplars with {passage_language!r} passages and queries in "
                                    f"{query_language!r}: add a column (or rows) for that language; the file has "
                                    f"queries in {', '.join(have) or 'no language'} for {passage_language!r} "
                                    "passages")
    return chosen
