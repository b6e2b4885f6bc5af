"""Compressed late-interaction (ColBERT) index that scales out of core, PLAID-style.

Every token vector is stored as the id of its nearest centroid plus its residual quantised to `nbits`
per dimension (2 bits: four buckets per dimension whose cut-offs and values are quantiles of the
residuals), i.e. dim * nbits / 8 + 2 bytes a token instead of dim * 4. An inverted file maps each
centroid to the documents with a token assigned to it.

Build (`build_compressed_index`), from token shards on disk (`write_token_shards`), never holding all
vectors at once: (1) a sample of tokens trains the centroids (spherical k-means) and the residual buckets
-> `codec.npz`; (2) each input shard is compressed block by block -> `part-NNNNN.*` (ids written last
marks it done); (3) the inverted file and document tables -> `meta.json` (written last). Each step's
outputs are written to temporary names and renamed, and every step is deterministic, so a build that
is killed and run again skips what is finished and ends byte-identical to an uninterrupted one.
`plan.json` records the inputs and settings; a rerun with other inputs or settings is refused.

Search (`CompressedLateInteractionIndex`, the index registered as 'compressed'), memory-mapped: (A) each query token probes its `nprobe`
closest centroids and every document listed there gets, per query token, the best probed centroid score
(a cheap lower estimate of MaxSim); (B) the best `ndocs` documents are scored with their full centroid
codes (centroid MaxSim); (C) the best `rerank` of those are decompressed (centroid + residual) and scored
with MaxSim; with `exact_shards` the original float vectors are read instead, so the final scores are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import gin
import numpy as np
from tqdm.auto import tqdm

from polyret.retrieval.search_index import Index, SearchResult, pad_hits, register_index

BLOCK = 65_536  # tokens per compression block: bounds memory during the build


# ---------------------------------------------------------------------------------------------------------
# Token shards (the input): DIR/manifest.json, shard-NNNNN.npy (float [tokens, dim], every document's
# tokens in order), shard-NNNNN.lens.npy (int32 tokens per document), shard-NNNNN.ids (written last).

def _token_shard_paths(directory: Path, s: int) -> tuple[Path, Path, Path]:
    return (directory / f"shard-{s:05d}.npy", directory / f"shard-{s:05d}.lens.npy",
            directory / f"shard-{s:05d}.ids")


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_token_shards(out_dir: str | os.PathLike, doc_ids: Sequence[str],
                       encode: Callable[[int, int], Sequence[np.ndarray]], shard_size: int = 10_000,
                       fingerprint: dict | None = None, dtype=np.float32, progress: bool = True) -> Path:
    """Write the token vectors of `doc_ids` in shards of `shard_size` documents; `encode(start, stop)`
    returns the [len_i, dim] arrays of documents start..stop-1. Finished shards are kept (resume); a
    folder written for other documents or another `fingerprint` (e.g. the checkpoint) is refused."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_shards = -(-len(doc_ids) // shard_size)
    ids_hash = hashlib.sha256("\n".join(doc_ids).encode()).hexdigest()
    manifest = {"num_docs": len(doc_ids), "shard_size": shard_size, "num_shards": num_shards,
                "doc_ids_sha256": ids_hash, "dtype": np.dtype(dtype).name, "fingerprint": fingerprint or {}}
    manifest_file = out / "manifest.json"
    if manifest_file.exists():
        previous = json.loads(manifest_file.read_text())
        if previous != manifest:
            differs = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise ValueError(f"{manifest_file}: written for other inputs ({', '.join(differs)} differ); "
                             "use a new folder")
    else:
        _atomic_text(manifest_file, json.dumps(manifest, indent=1))
    todo = [s for s in range(num_shards) if not _token_shard_paths(out, s)[2].exists()]
    for s in tqdm(todo, desc="encoding token shards", unit="shard", disable=not progress):
        start, stop = s * shard_size, min(len(doc_ids), (s + 1) * shard_size)
        docs = list(encode(start, stop))
        if len(docs) != stop - start:
            raise ValueError(f"encode({start}, {stop}) returned {len(docs)} documents")
        vec_path, lens_path, ids_path = _token_shard_paths(out, s)
        _atomic_save(vec_path, np.concatenate(docs).astype(dtype))
        _atomic_save(lens_path, np.array([len(d) for d in docs], np.int32))
        _atomic_text(ids_path, "\n".join(doc_ids[start:stop]) + "\n")  # last: marks the shard complete
    return out


class TokenShards:
    """Read access (memory-mapped) to a token-shard folder."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        manifest_file = self.dir / "manifest.json"
        if not manifest_file.exists():
            raise FileNotFoundError(f"{manifest_file}: missing; not a token-shard folder")
        self.manifest = json.loads(manifest_file.read_text())
        self.num_shards = self.manifest["num_shards"]
        for s in range(self.num_shards):
            ids_path = _token_shard_paths(self.dir, s)[2]
            if not ids_path.exists():
                raise FileNotFoundError(f"{ids_path}: shard {s} of {self.num_shards} is not written yet")

    def vectors(self, s: int) -> np.ndarray:
        return np.load(_token_shard_paths(self.dir, s)[0], mmap_mode="r")

    def lens(self, s: int) -> np.ndarray:
        return np.load(_token_shard_paths(self.dir, s)[1])

    def ids(self, s: int) -> list[str]:
        return _token_shard_paths(self.dir, s)[2].read_text(encoding="utf-8").splitlines()

    def num_tokens(self) -> int:
        return int(sum(self.vectors(s).shape[0] for s in range(self.num_shards)))

    def dim(self) -> int:
        return int(self.vectors(0).shape[1])


# ---------------------------------------------------------------------------------------------------------
# Build

@gin.configurable
@dataclass(frozen=True)
class CompressedIndexConfig:
    nbits: int = 2  # residual bits per dimension (1, 2, 4 or 8)
    num_centroids: int | None = None  # None: power of two near centroid_factor * sqrt(tokens)
    centroid_factor: float = 4.0
    sample_per_centroid: int = 32  # k-means sample size = this * num_centroids (at most all tokens)
    kmeans_iterations: int = 8
    seed: int = 0


def _num_centroids(config: CompressedIndexConfig, num_tokens: int) -> int:
    if config.num_centroids:
        return int(min(config.num_centroids, num_tokens))
    c = 2 ** int(round(np.log2(max(2.0, config.centroid_factor * np.sqrt(num_tokens)))))
    return int(min(c, num_tokens))


def _assign(x: np.ndarray, centroids: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Nearest centroid by inner product (unit vectors), in batches (bounded memory)."""
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), batch):
        out[s:s + batch] = np.argmax(np.asarray(x[s:s + batch], np.float32) @ centroids.T, axis=1)
    return out


def _kmeans(sample: np.ndarray, k: int, iterations: int, seed: int, progress: bool) -> np.ndarray:
    """Spherical k-means (unit-norm centroids), deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    centroids = sample[np.sort(rng.choice(len(sample), k, replace=False))].copy()
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    for _ in tqdm(range(iterations), desc="k-means", disable=not progress):
        codes = _assign(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, codes, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / norms[filled]
    return centroids.astype(np.float32)


def _pack(bits: np.ndarray, nbits: int) -> np.ndarray:
    """[T, dim] bucket ids (< 2**nbits) -> [T, dim * nbits / 8] uint8, first dimension in the high bits."""
    per_byte = 8 // nbits
    b = bits.reshape(len(bits), -1, per_byte).astype(np.uint8)
    shifts = (nbits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)
    return np.bitwise_or.reduce(b << shifts, axis=2)


def _unpack(packed: np.ndarray, nbits: int) -> np.ndarray:
    per_byte = 8 // nbits
    shifts = (nbits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)
    mask = np.uint8(2 ** nbits - 1)
    return ((packed[:, :, None] >> shifts) & mask).reshape(len(packed), -1)


def _fingerprint(shards: TokenShards, config: CompressedIndexConfig) -> dict:
    sizes = []
    for s in range(shards.num_shards):
        for p in _token_shard_paths(shards.dir, s):
            sizes.append(p.stat().st_size)
    return {"shards": str(shards.dir.resolve()), "manifest": shards.manifest, "file_sizes": sizes,
            "config": asdict(config)}


def build_compressed_index(shards_dir: str | os.PathLike, index_dir: str | os.PathLike,
                           config: CompressedIndexConfig | None = None, progress: bool = True) -> Path:
    """Build (or finish building) the compressed index of a token-shard folder; see the module docstring."""
    config = config or CompressedIndexConfig()
    if config.nbits not in (1, 2, 4, 8):
        raise ValueError(f"CompressedIndexConfig.nbits must be 1, 2, 4 or 8, got {config.nbits}")
    shards = TokenShards(shards_dir)
    out = Path(index_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = _fingerprint(shards, config)
    plan_file = out / "plan.json"
    if plan_file.exists():
        previous = json.loads(plan_file.read_text())
        if previous != plan:
            differs = sorted(k for k in plan if previous.get(k) != plan[k])
            raise ValueError(f"{plan_file}: this folder holds an index of other inputs or settings "
                             f"({', '.join(differs)} differ); use a new folder")
    else:
        _atomic_text(plan_file, json.dumps(plan, indent=1))
    if (out / "meta.json").exists():
        return out
    dim, num_tokens = shards.dim(), shards.num_tokens()
    if dim * config.nbits % 8:
        raise ValueError(f"dim {dim} x nbits {config.nbits} is not a whole number of bytes")
    codec_file = out / "codec.npz"
    if not codec_file.exists():
        _train_codec(shards, config, num_tokens, codec_file, progress)
    codec = np.load(codec_file)
    centroids, cutoffs = codec["centroids"], codec["cutoffs"]
    code_dtype = np.uint16 if len(centroids) <= 2 ** 16 else np.int32
    todo = [s for s in range(shards.num_shards) if not (out / f"part-{s:05d}.ids").exists()]
    with tqdm(total=len(todo), desc="compressing shards", unit="shard", disable=not progress) as bar:
        for s in todo:
            vectors = shards.vectors(s)
            codes = np.empty(len(vectors), code_dtype)
            packed = np.empty((len(vectors), dim * config.nbits // 8), np.uint8)
            for b in range(0, len(vectors), BLOCK):
                block = np.asarray(vectors[b:b + BLOCK], np.float32)
                c = _assign(block, centroids)
                codes[b:b + BLOCK] = c
                residual_buckets = np.searchsorted(cutoffs, block - centroids[c], side="right")
                packed[b:b + BLOCK] = _pack(residual_buckets, config.nbits)
            _atomic_save(out / f"part-{s:05d}.codes.npy", codes)
            _atomic_save(out / f"part-{s:05d}.residuals.npy", packed)
            _atomic_save(out / f"part-{s:05d}.lens.npy", shards.lens(s))
            _atomic_text(out / f"part-{s:05d}.ids", "\n".join(shards.ids(s)) + "\n")  # last: shard done
            bar.update(1)
    _finalize(out, shards.num_shards, len(centroids), config, dim)
    return out


def _train_codec(shards: TokenShards, config: CompressedIndexConfig, num_tokens: int, codec_file: Path,
                 progress: bool) -> None:
    k = _num_centroids(config, num_tokens)
    size = int(min(num_tokens, max(k, config.sample_per_centroid * k)))
    rng = np.random.default_rng(config.seed)
    picks = np.sort(rng.choice(num_tokens, size, replace=False))
    parts, offset = [], 0
    for s in range(shards.num_shards):  # read only the sampled rows of each shard
        vectors = shards.vectors(s)
        mine = picks[(picks >= offset) & (picks < offset + len(vectors))] - offset
        parts.append(np.asarray(vectors[mine], np.float32))
        offset += len(vectors)
    sample = np.concatenate(parts)
    centroids = _kmeans(sample, k, config.kmeans_iterations, config.seed, progress)
    residuals = sample - centroids[_assign(sample, centroids)]
    levels = 2 ** config.nbits
    cutoffs = np.quantile(residuals, np.arange(1, levels) / levels).astype(np.float32)
    weights = np.quantile(residuals, (np.arange(levels) + 0.5) / levels).astype(np.float32)
    norms = np.linalg.norm(sample, axis=1)
    normalized = bool(np.allclose(norms, 1.0, atol=1e-3))
    tmp = codec_file.with_name("codec.tmp.npz")
    np.savez(tmp, centroids=centroids, cutoffs=cutoffs, weights=weights, normalized=np.array(normalized))
    os.replace(tmp, codec_file)


def _finalize(out: Path, num_shards: int, num_centroids: int, config: CompressedIndexConfig, dim: int) -> None:
    """Inverted file (centroid -> documents) and document tables; meta.json last."""
    keys, doc_base, lens_all = [], 0, []
    for s in range(num_shards):
        codes = np.load(out / f"part-{s:05d}.codes.npy", mmap_mode="r")
        lens = np.load(out / f"part-{s:05d}.lens.npy")
        docs = np.repeat(np.arange(doc_base, doc_base + len(lens), dtype=np.int64), lens)
        # centroid-major keys, one per (centroid, document) pair
        keys.append(np.unique(np.asarray(codes, np.int64) * (1 << 32) + docs))
        doc_base += len(lens)
        lens_all.append(lens)
    key = np.sort(np.concatenate(keys))
    ivf = (key & 0xFFFFFFFF).astype(np.int32)
    offsets = np.zeros(num_centroids + 1, np.int64)
    offsets[1:] = np.cumsum(np.bincount(key >> 32, minlength=num_centroids))
    _atomic_save(out / "ivf.npy", ivf)
    _atomic_save(out / "ivf_offsets.npy", offsets)
    lens = np.concatenate(lens_all)
    meta = {"num_docs": int(doc_base), "num_tokens": int(lens.sum()), "num_shards": num_shards,
            "num_centroids": num_centroids, "dim": dim, "nbits": config.nbits,
            "max_doc_len": int(lens.max(initial=0))}
    _atomic_text(out / "meta.json", json.dumps(meta, indent=1))


def index_bytes(index_dir: str | os.PathLike) -> int:
    """Bytes the index occupies on disk (without plan.json)."""
    return sum(p.stat().st_size for p in Path(index_dir).iterdir() if p.is_file() and p.name != "plan.json")


# ---------------------------------------------------------------------------------------------------------
# Search

@gin.configurable
@dataclass(frozen=True)
class CompressedSearchConfig:
    """Search depth; None derives it from k as PLAID does, with one more doubling of the probes
    (k <= 10: 2 probes per query token, 256 documents; k <= 100: 4, 1024; else 8, max(4k, 4096));
    rerank defaults to ndocs / 4, at least k."""
    nprobe: int | None = None
    ndocs: int | None = None
    rerank: int | None = None
    threads: int = 0  # queries searched in parallel; 0: every core


@register_index("compressed")
class CompressedLateInteractionIndex(Index):
    """Opens a built index folder; `build` builds one (from token shards) and opens it."""

    multi_vector = True
    on_disk = True

    def __init__(self, index_dir: str | os.PathLike, exact_shards: str | os.PathLike | None = None):
        d = Path(index_dir)
        meta_file = d / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file}: missing; not a finished compressed index (rerun the build)")
        self.dir, self.meta = d, json.loads(meta_file.read_text())
        codec = np.load(d / "codec.npz")
        self.centroids, self.weights = codec["centroids"], codec["weights"]
        self.normalized = bool(codec["normalized"])
        self.nbits = self.meta["nbits"]
        # byte -> the residual values of its 8 / nbits dimensions: one gather decompresses a token
        self._lut = self.weights[_unpack(np.arange(256, dtype=np.uint8)[:, None], self.nbits)]
        self.ivf = np.load(d / "ivf.npy", mmap_mode="r")
        self.ivf_offsets = np.load(d / "ivf_offsets.npy")
        n = self.meta["num_shards"]
        self.codes = [np.load(d / f"part-{s:05d}.codes.npy", mmap_mode="r") for s in range(n)]
        self.residuals = [np.load(d / f"part-{s:05d}.residuals.npy", mmap_mode="r") for s in range(n)]
        lens = [np.load(d / f"part-{s:05d}.lens.npy") for s in range(n)]
        self.ids: list[str] = []
        for s in range(n):
            self.ids += (d / f"part-{s:05d}.ids").read_text(encoding="utf-8").splitlines()
        self.doc_len = np.concatenate(lens).astype(np.int64)
        self.doc_shard = np.repeat(np.arange(n), [len(x) for x in lens])
        self.doc_start = np.concatenate([np.concatenate([[0], np.cumsum(x)[:-1]]) for x in lens]).astype(np.int64)
        self.exact_vectors, self.exact_shards = None, None
        if exact_shards is not None:
            shards = TokenShards(exact_shards)
            self.exact_vectors = [shards.vectors(s) for s in range(n)]
            self.exact_shards = shards.dir.resolve()

    @classmethod
    def build(cls, ids: Sequence[str], vectors: Sequence[np.ndarray] | TokenShards, k: int = 100,
              folder: str | os.PathLike | None = None, queries=None) -> "CompressedLateInteractionIndex":
        """Build (or finish building) the index of `vectors` into `folder` and open it, final candidates
        re-scored with the exact vectors. Token vectors in memory are first written as shards to
        folder/tokens; a TokenShards folder is read as it is."""
        if folder is None:
            raise ValueError("the compressed index is written to disk: give build a folder")
        folder = Path(folder)
        if not isinstance(vectors, TokenShards):
            docs = vectors
            vectors = TokenShards(write_token_shards(folder / "tokens", list(ids), lambda a, b: docs[a:b],
                                                     progress=False))
        if vectors.manifest["num_docs"] != len(ids):
            raise ValueError(f"{vectors.dir}: holds {vectors.manifest['num_docs']} documents, not {len(ids)}")
        build_compressed_index(vectors.dir, folder)
        return cls(folder, exact_shards=vectors.dir)

    def info(self) -> dict:
        return {**self.meta, "exact_rescoring": self.exact_shards is not None}

    def write(self, folder: Path) -> dict:
        """The index's files (copied unless `folder` is where it lives); exact shards are referred to."""
        if folder.resolve() != self.dir.resolve():
            for path in self.dir.iterdir():
                if path.is_file():
                    shutil.copy2(path, folder / path.name)
        return {"exact_shards": None if self.exact_shards is None else str(self.exact_shards)}

    @classmethod
    def read(cls, folder: Path, settings: dict) -> "CompressedLateInteractionIndex":
        return cls(folder, exact_shards=settings.get("exact_shards"))

    def _depth(self, k: int, config: CompressedSearchConfig) -> tuple[int, int, int]:
        nprobe, ndocs = (2, 256) if k <= 10 else (4, 1024) if k <= 100 else (8, max(4 * k, 4096))
        nprobe = config.nprobe or nprobe
        ndocs = max(config.ndocs or ndocs, k)
        rerank = max(config.rerank or ndocs // 4, k)
        return min(nprobe, len(self.centroids)), ndocs, rerank

    def _gather(self, docs: np.ndarray, arrays: list) -> tuple[np.ndarray, np.ndarray]:
        """Rows of every token of `docs`, document after document, from per-shard (memory-mapped)
        arrays -> (rows, tokens per document)."""
        lens = self.doc_len[docs]
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
        src = np.repeat(self.doc_start[docs] - offsets, lens) + np.arange(lens.sum())
        token_shard = np.repeat(self.doc_shard[docs], lens)
        out = np.empty((len(src),) + arrays[0].shape[1:], arrays[0].dtype)
        for s in np.unique(self.doc_shard[docs]):
            sel = token_shard == s
            out[sel] = arrays[s][src[sel]]
        return out, lens

    def _decompress(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes, lens = self._gather(docs, self.codes)
        if self.exact_vectors is not None:
            vectors, _ = self._gather(docs, self.exact_vectors)
            return np.asarray(vectors, np.float32), lens
        packed, _ = self._gather(docs, self.residuals)
        vectors = self.centroids[codes.astype(np.int64)]
        vectors += self._lut[packed].reshape(len(packed), -1)
        if self.normalized:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, lens

    @staticmethod
    def _segment_maxsim(token_scores: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """[Lq, T] scores of the concatenated tokens of documents with `lens` -> MaxSim per document."""
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        return np.maximum.reduceat(token_scores, starts, axis=1).sum(axis=0)

    def search(self, queries: Sequence[np.ndarray], k: int = 10, config: CompressedSearchConfig | None = None
               ) -> SearchResult:
        """MaxSim of the decompressed (or exact) vectors for each [Lq, dim] query, best first, ties broken by
        doc id; `config.threads` queries at a time (numpy releases the GIL in the heavy parts)."""
        config = config or CompressedSearchConfig()
        k = min(k, len(self.ids))
        threads = config.threads or os.cpu_count() or 1
        if threads == 1:
            hits = [self._search_one(q, k, config) for q in queries]
        else:
            with ThreadPoolExecutor(threads) as pool:
                hits = list(pool.map(lambda q: self._search_one(q, k, config), queries))
        return pad_hits(hits, k)

    def _search_one(self, query: np.ndarray, k: int, config: CompressedSearchConfig) -> list[tuple[int, float]]:
        query = np.asarray(query, np.float32)
        nprobe, ndocs, rerank = self._depth(k, config)
        scores = query @ self.centroids.T  # [Lq, C]
        # (A) probed centroids -> documents, scored by the best probed centroid per query token
        probes = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe] if nprobe < scores.shape[1] else \
            np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        qi = np.repeat(np.arange(len(query)), probes.shape[1])
        cs = probes.ravel()
        lo, hi = self.ivf_offsets[cs], self.ivf_offsets[cs + 1]
        counts = hi - lo
        pos = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        docs = np.asarray(self.ivf[pos], np.int64)
        if len(docs) == 0:
            return []
        tok = np.repeat(qi, counts)
        val = np.repeat(scores[qi, cs], counts)
        key = docs * len(query) + tok
        order = np.lexsort((-val, key))
        key, val = key[order], val[order]
        first = np.concatenate([[True], key[1:] != key[:-1]])
        cand, inverse = np.unique(key[first] // len(query), return_inverse=True)
        approx = np.bincount(inverse, weights=val[first])
        if len(cand) > ndocs:
            keep = np.lexsort((cand, -approx))[:ndocs]
            cand = np.sort(cand[keep])
        # (B) centroid MaxSim over every token of the candidates
        if len(cand) > rerank:
            codes, lens = self._gather(cand, self.codes)
            centroid_maxsim = self._segment_maxsim(scores[:, codes.astype(np.int64)], lens)
            keep = np.lexsort((cand, -centroid_maxsim))[:rerank]
            cand = np.sort(cand[keep])
        # (C) decompressed (or exact) MaxSim
        vectors, lens = self._decompress(cand)
        final = self._segment_maxsim(query @ vectors.T, lens)
        ranked = sorted(zip(cand.tolist(), final.tolist()), key=lambda x: (-x[1], self.ids[x[0]]))
        return ranked[:k]
