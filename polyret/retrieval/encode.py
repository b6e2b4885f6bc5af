"""Encode texts with a checkpoint's tower: length-sorted batches, jitted, sharded over devices and hosts,
written in shards with their ids so an interrupted run resumes where it stopped.

Shard layout (DIR): `shard-00000.npy` (float32 [n, dim]) + `shard-00000.ids` (one id a line), written to
temporary names and renamed, ids last; `manifest.json` records the plan (order, shard size, dim). A shard
whose two files exist is done and is never recomputed; the plan is deterministic, so a resumed run writes
byte-identical shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from polyret.models.checkpoint import load_model
from polyret.models.retrieval_model import build_model
from polyret.models.towers import ModelConfig
from polyret.retrieval.tokenize import Tokenizer, pad_batch


class TowerEncoder:
    """A loaded checkpoint + tokenizer that turns texts into vectors (dual encoder) or token vectors (ColBERT)."""

    def __init__(self, params: Any, config: ModelConfig, tokenizer: Tokenizer, batch_size: int = 64):
        self.params, self.config, self.tokenizer = params, config, tokenizer
        # Local devices only: each host encodes its own shards, no cross-host traffic.
        self.mesh = Mesh(np.array(jax.local_devices()), ("data",))
        self.batch_size = -(-batch_size // self.mesh.size) * self.mesh.size  # divisible by the devices
        self.model = build_model(config)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._params = jax.device_put(params, replicated)
        self._batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self._fns = {"left": jax.jit(self.model.encode_queries), "right": jax.jit(self.model.encode_documents)}

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike, batch_size: int = 64) -> "TowerEncoder":
        params, config, spm = load_model(checkpoint_dir)
        return cls(params, config, Tokenizer(spm), batch_size)

    @property
    def is_colbert(self) -> bool:
        """True for models with one vector per token (late interaction)."""
        return self.model.multi_vector

    def _run(self, tokens: np.ndarray, side: str):
        n = tokens.shape[0]
        padded = np.zeros((self.batch_size, tokens.shape[1]), np.int32)
        padded[:n] = tokens
        out = self._fns[side](self._params, jax.device_put(padded, self._batch_sharding))
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], out)

    def encode(self, texts: Sequence[str], side: str, max_length: int, progress: bool = False,
               desc: str = "encoding") -> Any:
        """Dual encoder: float32 [n, dim]. ColBERT: list of [len_i, dim] arrays (padding and skip ids removed)."""
        return self.encode_ids(self.tokenizer.encode(texts, max_length), side, max_length, progress, desc)

    def encode_ids(self, ids: Sequence[Sequence[int]], side: str, max_length: int, progress: bool = False,
                   desc: str = "encoding") -> Any:
        """As `encode`, from token ids (each ending with EOS, at most max_length long)."""
        order = np.argsort([len(r) for r in ids], kind="stable")
        results: list[Any] = [None] * len(ids)
        bar = tqdm(total=len(ids), desc=desc, unit="text", disable=not progress)
        for start in range(0, len(ids), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out = self._run(pad_batch([ids[i] for i in chunk], max_length=max_length), side)
            for j, i in enumerate(chunk):
                results[i] = out.vectors[j] if out.mask is None else out.vectors[j][out.mask[j]]
            bar.update(len(chunk))
        bar.close()
        if self.is_colbert:
            return results
        return np.stack(results) if results else np.zeros((0, 0), np.float32)


def _shard_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    return out_dir / f"shard-{index:05d}.npy", out_dir / f"shard-{index:05d}.ids"


def encode_corpus_to_shards(encoder: TowerEncoder, corpus: dict[str, str], out_dir: str | os.PathLike,
                            max_length: int = 256, shard_size: int = 10000, side: str = "right",
                            process_index: int | None = None, process_count: int | None = None) -> Path:
    """Encode `corpus` {id: text} into shards under out_dir, resuming finished shards; this host takes
    shards process_index, process_index + process_count, ...; passages/s shown on a progress bar."""
    if encoder.is_colbert:
        raise ValueError("sharded corpus encoding is for dual encoders; ColBERT corpora are indexed in memory "
                         "(polyret.retrieval.late_interaction)")
    if not corpus:
        raise ValueError("the corpus is empty")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = list(corpus)
    # Length-sorted order (by characters: cheap, and deterministic) so each shard pads little.
    order = sorted(range(len(ids)), key=lambda i: (len(corpus[ids[i]]), i))
    num_shards = -(-len(ids) // shard_size)
    manifest = {"num_passages": len(ids), "shard_size": shard_size, "num_shards": num_shards,
                "max_length": max_length, "side": side}
    manifest_file = out / "manifest.json"
    if manifest_file.exists():
        previous = json.loads(manifest_file.read_text())
        if previous != manifest:
            raise ValueError(f"{manifest_file}: written for a different plan {previous}; use a new output folder")
    elif process_index == 0:
        manifest_file.write_text(json.dumps(manifest, indent=2))
    mine = [s for s in range(num_shards) if s % process_count == process_index]
    todo = [s for s in mine if not all(p.exists() for p in _shard_paths(out, s))]
    bar = tqdm(total=sum(min(shard_size, len(ids) - s * shard_size) for s in todo), desc="encoding corpus",
               unit="passage")
    for s in todo:
        shard_ids = [ids[i] for i in order[s * shard_size:(s + 1) * shard_size]]
        vectors = encoder.encode([corpus[i] for i in shard_ids], side, max_length).astype(np.float32)
        vec_path, ids_path = _shard_paths(out, s)
        np.save(vec_path.with_suffix(".tmp.npy"), vectors)
        os.replace(vec_path.with_suffix(".tmp.npy"), vec_path)
        ids_path.with_suffix(".tmp").write_text("\n".join(shard_ids) + "\n", encoding="utf-8")
        os.replace(ids_path.with_suffix(".tmp"), ids_path)  # written last: marks the shard complete
        bar.update(len(shard_ids))
    bar.close()
    return out


def load_embeddings(path: str | os.PathLike, ids_file: str | os.PathLike | None = None
                    ) -> tuple[list[str], np.ndarray]:
    """Shards written by `encode_corpus_to_shards` (a folder), or a precomputed `.npy` with an ids file
    (one id a line, same order) -> (ids, float32 [n, dim])."""
    path = Path(path)
    if path.is_dir():
        manifest_file = path / "manifest.json"
        if not manifest_file.exists():
            raise FileNotFoundError(f"{manifest_file}: missing; not an embeddings folder")
        manifest = json.loads(manifest_file.read_text())
        ids, vectors = [], []
        for s in range(manifest["num_shards"]):
            vec_path, ids_path = _shard_paths(path, s)
            if not ids_path.exists():
                raise FileNotFoundError(f"{ids_path}: shard {s} of {manifest['num_shards']} is not written yet")
            ids += ids_path.read_text(encoding="utf-8").splitlines()
            vectors.append(np.load(vec_path))
        return ids, np.concatenate(vectors)
    if ids_file is None:
        raise ValueError(f"{path}: a precomputed .npy needs its ids file")
    vectors = np.load(path)
    ids = Path(ids_file).read_text(encoding="utf-8").splitlines()
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise ValueError(f"{path}: {vectors.shape} vectors but {len(ids)} ids in {ids_file}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{ids_file}: duplicate ids")
    return ids, vectors.astype(np.float32)
