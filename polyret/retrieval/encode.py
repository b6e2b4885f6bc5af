"""Encode texts with a checkpoint's tower: length-sorted batches, jitted, sharded over devices and hosts,
written in shards with their ids so an interrupted run resumes where it stopped.

Shard layout (DIR): `shard-00000.npy` (float32 [n, dim]) + `shard-00000.ids` (one id a line), written to
temporary names and renamed, ids last; `manifest.json` records the plan (order, shard size, dim) and a
fingerprint of what produced the shards (the corpus content, the checkpoint's config and parameters, the
settings). A shard whose two files exist is done and is never recomputed; the plan is deterministic, so a
resumed run writes byte-identical shards. A run with another corpus, checkpoint or settings is refused
(one line naming what differs) instead of mixing two runs' rows; with `overwrite` it encodes into a
staging folder beside DIR that replaces DIR only when complete (and resumes there if killed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from polyret.io import preemption
from polyret.io.disk_space import disk_full_reported
from polyret.io.fingerprint import (FingerprintMismatch, canonical, check_match, digest, params_fingerprint,
                                    texts_fingerprint)
from polyret.io.outputs import OutputError, apply_umask, atomic_write_text, swap_in
from polyret.models.losses import truncate
from polyret.models.model_folder import load_model, load_prompts
from polyret.models.prompts import Prompts, choose_prompts
from polyret.models.retrieval_model import build_model, model_config_to_dict
from polyret.models.towers import ModelConfig
from polyret.retrieval.tokenize import Tokenizer, pad_batch
from polyret.retrieval.vector_file import MANIFEST, open_embeddings, read_manifest as _read_manifest
from polyret.retrieval.vector_file import shard_paths as _shard_paths


class TowerEncoder:
    """A loaded checkpoint + tokenizer that turns texts into vectors (dual encoder) or token vectors (ColBERT),
    each text after the model's prompt for its side."""

    def __init__(self, params: Any, config: ModelConfig, tokenizer: Tokenizer, batch_size: int = 64,
                 prompts: Prompts = Prompts(), truncate_dim: int | None = None):
        """`truncate_dim`: keep the first that many dimensions of every vector (re-normalised when the model
        normalises): a Matryoshka-trained model's smaller embedding."""
        self.params, self.config, self.tokenizer, self.prompts = params, config, tokenizer, prompts
        self.truncate_dim = truncate_dim
        # Local devices only: each host encodes its own shards, no cross-host traffic.
        self.mesh = Mesh(np.array(jax.local_devices()), ("data",))
        self.batch_size = -(-batch_size // self.mesh.size) * self.mesh.size  # divisible by the devices
        self.model = build_model(config)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._params = jax.device_put(params, replicated)
        self._batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self._fns = {"left": jax.jit(self.model.encode_queries), "right": jax.jit(self.model.encode_documents)}
        self._memo: dict[tuple[str, tuple[int, ...]], Any] | None = None

    def remember_rows(self) -> "TowerEncoder":
        """From now on keep every encoded row's vectors, keyed by its side and token ids, so that a text met
        again (the same passage in several evaluation corpora) is encoded once. Memory grows with the distinct
        texts encoded: for evaluation sets held in memory anyway, not for corpus-scale encodes."""
        self._memo = {}
        return self

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike, batch_size: int = 64, query_prompt: str | None = None,
                        passage_prompt: str | None = None, truncate_dim: int | None = None) -> "TowerEncoder":
        """The checkpoint with its own prompts; `query_prompt` / `passage_prompt` replace them ('' removes)."""
        params, config, spm = load_model(checkpoint_dir)
        prompts = choose_prompts(load_prompts(checkpoint_dir), query_prompt, passage_prompt, str(checkpoint_dir))
        return cls(params, config, Tokenizer(spm), batch_size, prompts, truncate_dim)

    @property
    def is_colbert(self) -> bool:
        """True for models with one vector per token (late interaction)."""
        return self.model.multi_vector

    def _run(self, tokens: np.ndarray, side: str):
        n = tokens.shape[0]
        padded = np.zeros((self.batch_size, tokens.shape[1]), np.int32)
        padded[:n] = tokens
        out = self._fns[side](self._params, jax.device_put(padded, self._batch_sharding))
        out = jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], out)
        if self.truncate_dim:
            out = out._replace(vectors=np.asarray(truncate(out.vectors, self.truncate_dim,
                                                           getattr(self.config, "l2_norm", True))))
        return out

    def encode(self, texts: Sequence[str], side: str, max_length: int, progress: bool = False,
               desc: str = "encoding") -> Any:
        """Dual encoder: float32 [n, dim]. ColBERT: list of [len_i, dim] arrays (padding and skip ids removed)."""
        return self.encode_ids(self.tokenize(texts, side, max_length), side, max_length, progress, desc)

    def tokenize(self, texts: Sequence[str], side: str, max_length: int) -> list[list[int]]:
        """Token ids of `texts` after the side's prompt ('left' queries, 'right' passages), as `encode` feeds them."""
        prompt = self.prompts.for_side(side)
        return self.tokenizer.encode([prompt + t for t in texts] if prompt else texts, max_length)

    def encode_ids(self, ids: Sequence[Sequence[int]], side: str, max_length: int, progress: bool = False,
                   desc: str = "encoding") -> Any:
        """As `encode`, from token ids (each ending with EOS, at most max_length long)."""
        if self._memo is None:
            rows = self._encode_rows(ids, side, max_length, progress, desc)
        else:
            keys = [(side, tuple(row)) for row in ids]
            new = list(dict.fromkeys(k for k in keys if k not in self._memo))
            if new:
                self._memo.update(zip(new, self._encode_rows([list(k[1]) for k in new], side, max_length, progress,
                                                             desc)))
            rows = [self._memo[k] for k in keys]
        if self.is_colbert:
            return rows
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    def _encode_rows(self, ids: Sequence[Sequence[int]], side: str, max_length: int, progress: bool,
                     desc: str) -> list[Any]:
        """Each row's vector (dual encoder) or token vectors (ColBERT), in the order given."""
        order = np.argsort([len(r) for r in ids], kind="stable")
        results: list[Any] = [None] * len(ids)
        with tqdm(total=len(ids), desc=desc, unit="text", disable=not progress) as bar:
            for start in range(0, len(ids), self.batch_size):
                chunk = order[start:start + self.batch_size]
                out = self._run(pad_batch([ids[i] for i in chunk], max_length=max_length), side)
                for j, i in enumerate(chunk):
                    results[i] = out.vectors[j] if out.mask is None else out.vectors[j][out.mask[j]]
                bar.update(len(chunk))
        return results


STAGING_SUFFIX = ".polyret-next"


def embeddings_fingerprint(encoder: TowerEncoder, corpus: Mapping[str, str]) -> dict[str, Any]:
    """What the shards depend on: the texts (ids, content, order) and the model (config and parameters)."""
    model = {"config_sha256": digest(model_config_to_dict(encoder.config)),
             "params_sha256": params_fingerprint(encoder.params)}
    # (a model without prompts or truncation keeps the fingerprint older outputs recorded)
    if encoder.prompts:
        model["prompts"] = {"query": encoder.prompts.query, "passage": encoder.prompts.passage}
    if encoder.truncate_dim:
        model["truncate_dim"] = encoder.truncate_dim
    return {"corpus": texts_fingerprint(corpus), "model": model}


def _where_to_write(out: Path, manifest: dict[str, Any], overwrite: bool) -> Path:
    """`out` itself (new, empty, or the same run to resume), or the staging folder that will replace an
    output of another run (overwrite); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file, not a folder; choose a folder path")
    previous = _read_manifest(out) if out.is_dir() else None
    if previous is None:
        others = [p.name for p in out.iterdir()] if out.is_dir() else []
        if others:
            raise OutputError(f"{out}: not empty and not a polyret encode output (it holds "
                              f"{', '.join(sorted(others)[:4])}); choose a new or empty folder")
        return out
    try:
        check_match(previous, manifest, out / MANIFEST, "use a new --output_dir, or --overwrite to replace it")
    except FingerprintMismatch:
        if not overwrite:
            raise
        return out.parent / f".{out.name}{STAGING_SUFFIX}"
    return out


def encode_corpus_to_shards(encoder: TowerEncoder, corpus: dict[str, str], out_dir: str | os.PathLike,
                            max_length: int = 256, shard_size: int = 10000, side: str = "right",
                            process_index: int | None = None, process_count: int | None = None,
                            fingerprint: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Encode `corpus` {id: text} into shards under out_dir, resuming finished shards; this host takes
    shards process_index, process_index + process_count, ...; passages/s shown on a progress bar.
    `fingerprint`: more of what the shards depend on (e.g. the checkpoint path and step), recorded and
    checked on resume along with the corpus, the model and the plan."""
    if encoder.is_colbert:
        raise ValueError("sharded corpus encoding is for dual encoders; ColBERT corpora are indexed in memory "
                         "(polyret.retrieval.late_interaction)")
    if not corpus:
        raise ValueError("the corpus is empty")
    if shard_size < 1 or max_length < 2:
        raise ValueError(f"shard_size must be at least 1 and max_length at least 2 (got {shard_size}, {max_length})")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    out = Path(out_dir).absolute()
    ids = list(corpus)
    # Length-sorted order (by characters: cheap, and deterministic) so each shard pads little.
    order = sorted(range(len(ids)), key=lambda i: (len(corpus[ids[i]]), i))
    num_shards = -(-len(ids) // shard_size)
    manifest = {"num_passages": len(ids), "shard_size": shard_size, "num_shards": num_shards,
                "max_length": max_length, "side": side,
                "fingerprint": canonical({**embeddings_fingerprint(encoder, corpus), **(fingerprint or {})})}
    folder = _where_to_write(out, manifest, overwrite)
    staging = folder != out
    if staging:
        if process_count > 1:
            raise OutputError(f"{out}: holds another run's embeddings; --overwrite needs a single host "
                              "(or use a new --output_dir)")
        previous = _read_manifest(folder) if folder.is_dir() else None
        if previous is not None and canonical(previous) != canonical(manifest):
            shutil.rmtree(folder)  # an abandoned staging folder of yet another run
    folder.mkdir(parents=True, exist_ok=True)
    if process_index == 0 and _read_manifest(folder) is None:
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    mine = [s for s in range(num_shards) if s % process_count == process_index]
    for s in mine:  # what a killed run left half-written
        for tmp in _tmp_paths(folder, s):
            tmp.unlink(missing_ok=True)
    todo = [s for s in mine if not all(p.exists() for p in _shard_paths(folder, s))]
    # SIGTERM/SIGINT: the shard in flight is finished, then we stop (the bar closed first, so the job's
    # one line starts on its own line).
    with preemption.graceful_stop(), tqdm(total=sum(min(shard_size, len(ids) - s * shard_size) for s in todo),
                                          desc="encoding corpus", unit="passage") as bar:
        for k, s in enumerate(todo):
            _encode_shard(encoder, corpus, ids, order, folder, s, shard_size, side, max_length)
            bar.update(min(shard_size, len(ids) - s * shard_size))
            if k + 1 < len(todo):
                preemption.stop_if_requested(
                    f"stopped after {len(mine) - len(todo) + k + 1} of {len(mine)} shards; finished shards are "
                    f"kept in {folder}; rerun the same command to resume")
    if staging:
        apply_umask(folder)
        swap_in(folder, out)
    return out


def _encode_shard(encoder: TowerEncoder, corpus: dict[str, str], ids: list[str], order: list[int], folder: Path,
                  s: int, shard_size: int, side: str, max_length: int) -> None:
    """Encode shard `s` and write it: vectors, then ids (written last: marks the shard complete), each
    through a temp name; a full disk leaves the finished shards as they were."""
    shard_ids = [ids[i] for i in order[s * shard_size:(s + 1) * shard_size]]
    vectors = encoder.encode([corpus[i] for i in shard_ids], side, max_length).astype(np.float32)
    if not np.isfinite(vectors).all():
        bad = shard_ids[int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])]
        raise ValueError(f"the checkpoint produced a non-finite vector (NaN/inf) for {bad!r}; nothing of "
                         "this shard was written")
    vec_path, ids_path = _shard_paths(folder, s)
    vec_tmp, ids_tmp = _tmp_paths(folder, s)
    ids_text = "\n".join(shard_ids) + "\n"
    with disk_full_reported(folder, vectors.nbytes + len(ids_text.encode("utf-8")), f"shard {s}",
                            "the finished shards are kept"):
        try:
            np.save(vec_tmp, vectors)
            os.replace(vec_tmp, vec_path)
            ids_tmp.write_text(ids_text, encoding="utf-8")
            os.replace(ids_tmp, ids_path)  # written last: marks the shard complete
        except OSError:
            for tmp in (vec_tmp, ids_tmp):  # free what the failed write took
                tmp.unlink(missing_ok=True)
            raise


def _tmp_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    vec_path, ids_path = _shard_paths(out_dir, index)
    return vec_path.with_suffix(".tmp.npy"), ids_path.with_suffix(".tmp")


def load_embeddings(path: str | os.PathLike, ids_file: str | os.PathLike | None = None
                    ) -> tuple[list[str], np.ndarray]:
    """Shards written by `encode_corpus_to_shards` (a folder), or a precomputed `.npy` with an ids file
    (one id a line, same order) -> (ids, float32 [n, dim]) in memory, checked as
    `polyret.retrieval.vector_file.open_embeddings` checks them (which reads them on demand instead)."""
    ids, vectors = open_embeddings(path, ids_file)
    return ids, np.asarray(vectors)  # read once into one array, no intermediate copies
