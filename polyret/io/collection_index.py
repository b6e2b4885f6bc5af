"""Passage collections read through a byte-offset index over a memory map, not loaded into memory.

Translate-Distill trains on MS MARCO translated into several languages (8.8M passages x 3 languages
is 10+ GB of text); each training example needs 6 of them. One pass over each file records where every
line starts (8 bytes a passage); a passage is then decoded from the mapped file when it is asked for,
so the process holds the offsets and the ids, and the operating system's page cache holds the text.

Files: TSV (`id<TAB>text`, or DPR's `id text title` with or without a header row, read like
polyret.io.formats) or JSONL (`{"_id"|"docid"|"id"|"pid", "title"?, "text"}`); uncompressed, since a
gzip stream cannot be addressed by offset.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from polyret.io.formats import ID_COLUMNS, DataError, _tsv_header, _unquote


class OffsetIndexedFile:
    """One collection file: ids in file order and the byte offset of each record's line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, None, "file not found")
        if self.path.suffix == ".gz":
            raise DataError(self.path, None, "a gzipped collection cannot be read by offset; decompress it "
                                             "(gunzip -k) and point at the .tsv/.jsonl")
        self.jsonl = ".jsonl" in self.path.suffixes or ".json" in self.path.suffixes
        self.columns: dict[str, int] | None = None  # TSV layout
        ids: list[str] = []
        offsets: list[int] = []
        with open(self.path, "rb") as f:
            position, line_no = 0, 0
            for raw in f:
                line_no += 1
                start = position
                position += len(raw)
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw, start = raw[3:], start + 3
                if not raw.strip():
                    continue
                pid = self._scan_id(raw, line_no)
                if pid is None:  # the header row
                    continue
                ids.append(pid)
                offsets.append(start)
        if not ids:
            raise DataError(self.path, None, "no records")
        self.ids = ids
        self.offsets = np.array(offsets + [position], np.int64)
        self._file = open(self.path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def _decode(self, raw: bytes, line_no: int) -> str:
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise DataError(self.path, line_no, f"not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}") from None

    def _scan_id(self, raw: bytes, line_no: int) -> str | None:
        if self.jsonl:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(self.path, line_no, f"malformed JSON: {e.msg} (column {e.colno})") from None
            field = next((f for f in ID_COLUMNS if f in obj), None) if isinstance(obj, dict) else None
            if field is None:
                raise DataError(self.path, line_no, f"no id field (one of {', '.join(ID_COLUMNS)})")
            if not isinstance(obj.get("text"), str):
                raise DataError(self.path, line_no, f"field 'text' is {'null' if obj.get('text') is None else 'missing'}")
            return str(obj[field])
        fields = self._decode(raw, line_no).split("\t")
        if self.columns is None:
            header = _tsv_header(fields) if line_no == 1 else None
            if header is not None:
                self.columns, self.width = header, len(fields)
                return None
            if len(fields) not in (2, 3):
                raise DataError(self.path, line_no, f"{len(fields)} columns; expected `id text` or `id text title`")
            self.columns = {"id": 0, "text": 1, **({"title": 2} if len(fields) == 3 else {})}
            self.width = len(fields)
        if len(fields) != self.width:
            raise DataError(self.path, line_no, f"{len(fields)} columns, expected {self.width}")
        return fields[self.columns["id"]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def text(self, row: int, with_title: bool = True) -> str:
        """The record at `row` (file order), title joined before the text when there is one."""
        raw = self._map[self.offsets[row]:self.offsets[row + 1]]
        if self.jsonl:
            obj = json.loads(raw)
            title, text = obj.get("title") or "", obj["text"]
        else:
            fields = raw.decode("utf-8").rstrip("\r\n").split("\t")
            if "title" in self.columns:
                fields = [_unquote(f) for f in fields]
            title = fields[self.columns["title"]] if "title" in self.columns else ""
            text = fields[self.columns["text"]]
        return f"{title} {text}" if with_title and title else text

    def close(self) -> None:
        self._map.close()
        self._file.close()


class AlignedCollections:
    """Row-aligned translations of one collection (one file per language), read by offset.

    Ids are checked to be the same, in the same order, in every file; a passage id maps to one row."""

    def __init__(self, paths: Mapping[str, str | os.PathLike]):
        self.languages = sorted(paths)
        self.files = {lang: OffsetIndexedFile(paths[lang]) for lang in self.languages}
        first = self.files[self.languages[0]]
        for lang in self.languages[1:]:
            other = self.files[lang]
            if other.ids != first.ids:
                row = next((i for i, (a, b) in enumerate(zip(first.ids, other.ids)) if a != b),
                           min(len(first.ids), len(other.ids)))
                raise DataError(other.path, None, f"not row-aligned with {first.path}: record {row + 1} has id "
                                                  f"{other.ids[row] if row < len(other.ids) else None!r}, expected "
                                                  f"{first.ids[row] if row < len(first.ids) else None!r}")
            other.ids = first.ids  # one list of ids for every language
        self._rows, self.id_of = _id_lookup(first.ids)
        for lang in self.languages:
            self.files[lang].ids = None  # the lookup replaces the lists
        self.size = len(first.offsets) - 1

    def row(self, pid: str) -> int | None:
        return self._rows(pid)

    def text(self, language: str, row: int) -> str:
        return self.files[language].text(row)

    def __len__(self) -> int:
        return self.size


def _id_lookup(ids: Sequence[str]):
    """(pid -> row, row -> pid). MS MARCO-style integer ids are kept as one int64 array (row = position,
    or a sorted search); other ids in a dict and a list."""
    if all(i.isdigit() and (i == "0" or not i.startswith("0")) for i in ids):
        values = np.array([int(i) for i in ids], np.int64)
        if np.array_equal(values, np.arange(len(values))):
            n = len(values)
            return (lambda pid: int(pid) if pid.isdigit() and int(pid) < n and str(int(pid)) == pid else None,
                    str)
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        if len(sorted_values) > 1 and (np.diff(sorted_values) == 0).any():
            raise DataError("collections", None, f"duplicate passage id {int(sorted_values[np.diff(sorted_values) == 0][0])}")

        def lookup(pid: str) -> int | None:
            if not pid.isdigit() or str(int(pid)) != pid:
                return None
            k = int(np.searchsorted(sorted_values, int(pid)))
            return int(order[k]) if k < len(sorted_values) and sorted_values[k] == int(pid) else None
        return lookup, lambda row: str(int(values[row]))
    ids = list(ids)
    table = {pid: row for row, pid in enumerate(ids)}
    if len(table) != len(ids):
        raise DataError("collections", None, "duplicate passage ids")
    return table.get, ids.__getitem__
