"""Precomputed vectors on disk (a `.npy` matrix with an ids file, or the shard folder `polyret encode`
writes), checked and read on demand in blocks.

`open_embeddings` checks everything before any search (ids count, dimensions, finite values, unique ids)
while streaming the file once, and returns a `VectorFile`: an array-like of float32 rows whose reads are
plain file reads. Nothing stays in memory between reads, and unlike a memory map the pages read do not
stay in the process's resident set, so the search index holds the only in-memory copy of a corpus (peak
memory of `evaluate` on 1M x 128 vectors: benchmarks/evaluate_memory.py).

Shard layout (DIR): `manifest.json` (`num_shards`, ...), `shard-00000.npy` (float32 [n, dim]) and
`shard-00000.ids` (one id a line); a shard is complete once its ids file exists (written last).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from polyret.io.formats import DataError

MANIFEST = "manifest.json"
BLOCK_ROWS = 65_536  # rows per read when streaming (32 MiB at 128-d float32)


def shard_paths(folder: Path, index: int) -> tuple[Path, Path]:
    """(vectors, ids) of shard `index` in an encode folder."""
    return folder / f"shard-{index:05d}.npy", folder / f"shard-{index:05d}.ids"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """An encode folder's manifest, or None when the folder has none."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise DataError(folder / MANIFEST, None, f"unreadable manifest ({e}); not written by polyret encode, "
                                                 "or damaged") from None


class _Segment(NamedTuple):
    path: Path
    offset: int  # bytes before the first row (the .npy header)
    rows: int
    dtype: np.dtype
    start: int  # first row of this segment in the whole matrix


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, read from its header only."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except ValueError as e:
        raise DataError(path, None, f"not a .npy array ({e})") from None
    if fortran and len(shape) > 1:
        raise DataError(path, None, "a Fortran-ordered array; save it C-ordered (np.save(path, np.ascontiguousarray(x)))")
    if dtype.kind not in "fiu":
        raise DataError(path, None, f"vectors must be numbers, got dtype {dtype}")
    return shape, dtype, offset


class VectorFile:
    """Float32 rows [n, dim] stored in one or more .npy files (segments, in order), read on demand.

    Supports what search and recall code needs of an array: `shape`, `len`, `vf[a:b]` (one read),
    `vf[rows]` with an integer array (rows read one by one when few, else gathered while streaming blocks),
    `blocks()`, and `np.asarray(vf)` (the whole matrix, read once into one array)."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.segments: list[_Segment] = []
        dim, start = None, 0
        for path in map(Path, paths):
            shape, dtype, offset = _npy_header(path)
            if len(shape) != 2:
                raise DataError(path, None, f"expected a 2-d array [n, dim], got shape {shape}")
            if dim is not None and shape[1] != dim:
                raise DataError(path, None, f"{shape[1]}-d vectors, but earlier files hold {dim}-d vectors")
            dim = shape[1]
            expected = offset + shape[0] * shape[1] * dtype.itemsize
            if path.stat().st_size < expected:
                raise DataError(path, None, f"truncated: {path.stat().st_size} bytes, the header promises {expected}")
            self.segments.append(_Segment(path, offset, shape[0], dtype, start))
            start += shape[0]
        if dim is None:
            raise ValueError("no vector files given")
        self.shape = (start, dim)
        self._starts = np.array([s.start for s in self.segments], np.int64)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"VectorFile({self.shape[0]} x {self.shape[1]}, {len(self.segments)} file(s))"

    def _read_into(self, out: np.ndarray, start: int, stop: int) -> None:
        """Rows [start, stop) into out (float32 [stop - start, dim])."""
        dim = self.shape[1]
        for seg in self.segments:
            a, b = max(start, seg.start), min(stop, seg.start + seg.rows)
            if a >= b:
                continue
            with open(seg.path, "rb") as f:
                f.seek(seg.offset + (a - seg.start) * dim * seg.dtype.itemsize)
                raw = np.fromfile(f, seg.dtype, (b - a) * dim)
            if raw.size != (b - a) * dim:
                raise DataError(seg.path, None, "shorter than its header says (changed while being read?)")
            out[a - start:b - start] = raw.reshape(b - a, dim)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new float32 array."""
        start, stop = max(0, start), min(stop, self.shape[0])
        out = np.empty((max(0, stop - start), self.shape[1]), np.float32)
        if stop > start:
            self._read_into(out, start, stop)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by index (any order, repeats allowed) -> float32 [len(rows), dim]."""
        rows = np.asarray(rows, np.int64).ravel()
        n, dim = self.shape
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty((len(rows), dim), np.float32)
        unique, inverse = np.unique(rows, return_inverse=True)
        if len(unique) * 64 < n:  # few rows: one small read each
            got = np.empty((len(unique), dim), np.float32)
            for i, r in enumerate(unique):
                self._read_into(got[i:i + 1], int(r), int(r) + 1)
        else:  # many: stream the file once and pick them out of each block
            got = np.empty((len(unique), dim), np.float32)
            for start, block in self.blocks():
                lo, hi = np.searchsorted(unique, [start, start + len(block)])
                got[lo:hi] = block[unique[lo:hi] - start]
        out[:] = got[inverse]
        return out

    def blocks(self, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 [<= rows, dim]) over the whole matrix, in order."""
        for start in range(0, self.shape[0], rows):
            yield start, self.read(start, start + rows)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([key]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self.read(start, stop)
            return self.take(np.arange(start, stop, step))
        if isinstance(key, tuple):
            raise TypeError("VectorFile takes row indices only (vf[rows], vf[a:b])")
        return self.take(np.asarray(key))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read(0, self.shape[0])
        return out if dtype is None else out.astype(dtype, copy=False)


def _check_finite(vectors: VectorFile, ids: Sequence[str], ids_paths: Sequence[tuple[int, Path]]) -> None:
    """A NaN/inf vector is a DataError naming its ids file and line (streamed: one block in memory)."""
    for start, block in vectors.blocks():
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            first, ids_path = max((s, p) for s, p in ids_paths if s <= row)
            raise DataError(ids_path, row - first + 1, f"the vector of id {ids[row]!r} is not finite (NaN or inf)")


def _check_unique(ids: Sequence[str], where: Path) -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise DataError(where, None, f"duplicate id {dup!r}")


def open_embeddings(path: str | os.PathLike, ids_file: str | os.PathLike | None = None
                    ) -> tuple[list[str], VectorFile]:
    """Shards written by `polyret encode` (a folder), or a precomputed `.npy` with an ids file (one id a
    line, same order) -> (ids, VectorFile). Counts, dimensions, finite values and unique ids are checked
    here (the file is streamed once); a NaN/inf vector is a DataError naming the ids file and line."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is None:
            raise FileNotFoundError(f"{path / MANIFEST}: missing; not an embeddings folder")
        ids: list[str] = []
        files, ids_paths = [], []
        for s in range(manifest["num_shards"]):
            vec_path, ids_path = shard_paths(path, s)
            if not ids_path.exists():
                raise FileNotFoundError(f"{ids_path}: shard {s} of {manifest['num_shards']} is not written yet; "
                                        "run encode again to finish it")
            shard_ids = ids_path.read_text(encoding="utf-8").splitlines()
            shape, _, _ = _npy_header(vec_path)
            if len(shape) != 2 or shape[0] != len(shard_ids):
                raise DataError(vec_path, None, f"{shape} vectors but {len(shard_ids)} ids in {ids_path}")
            files.append(vec_path)
            ids_paths.append((len(ids), ids_path))
            ids += shard_ids
        try:
            vectors = VectorFile(files)
        except DataError as e:
            if "earlier files" in str(e):
                raise DataError(path, None, f"shards of different dimensions ({e})") from None
            raise
        where = path
    else:
        if ids_file is None:
            raise ValueError(f"{path}: a precomputed .npy needs its ids file")
        vectors = VectorFile([path])
        ids = Path(ids_file).read_text(encoding="utf-8").splitlines()
        if len(ids) != vectors.shape[0]:
            raise DataError(path, None, f"{vectors.shape} vectors but {len(ids)} ids in {ids_file}")
        ids_paths = [(0, Path(ids_file))]
        where = Path(ids_file)
    _check_finite(vectors, ids, ids_paths)
    _check_unique(ids, where)
    return ids, vectors
