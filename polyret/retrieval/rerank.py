"""Rerank a first-stage run with a cross-encoder checkpoint: each query's top k passages scored as pairs,
in length-sorted batches padded to buckets (few shapes, few compilations), written a chunk of queries at a
time so a killed run resumes where it stopped.

Output folder (DIR): `part-00000.trec` ... (one per chunk of queries, written under a temporary name and
renamed when complete), `manifest.json` (what produced them: checkpoint, inputs, settings; a rerun with
anything different is refused in one line), and `reranked.trec` once every part is there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from polyret.errors import DataError
from polyret.io import preemption
from polyret.io.fingerprint import check_match, digest, params_fingerprint, read_json, texts_fingerprint
from polyret.io.outputs import OutputError, atomic_write_text
from polyret.io.runs import Run, read_trec_run, write_trec_run
from polyret.models.cross_encoder import CrossEncoderConfig
from polyret.models.model_folder import load_model, load_prompts
from polyret.models.prompts import Prompts, choose_prompts
from polyret.models.retrieval_model import build_model, model_config_to_dict
from polyret.retrieval.tokenize import Tokenizer, pad_batch

MANIFEST = "manifest.json"
FINAL = "reranked.trec"


class PairScorer:
    """A cross-encoder checkpoint that scores (query, passage) texts, jitted once per padded shape."""

    def __init__(self, params: Any, config: Any, tokenizer: Tokenizer, batch_size: int = 32,
                 query_max_length: int = 64, passage_max_length: int = 256, prompts: Prompts = Prompts()):
        self.params, self.config, self.tokenizer, self.prompts = params, config, tokenizer, prompts
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        if not isinstance(config, CrossEncoderConfig):
            raise ValueError(f"a {type(config).__name__} checkpoint is not a cross-encoder; rerank with a cross-encoder "
                             "(import_checkpoint --tower cross_encoder, or a sentence-transformers CrossEncoder)")
        model = build_model(config)
        # Data parallel over this host's devices (as TowerEncoder encodes): parameters replicated, pairs split.
        mesh = Mesh(np.array(jax.local_devices()), ("data",))
        self.batch_size = -(-batch_size // mesh.size) * mesh.size
        self._params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self._rows = NamedSharding(mesh, PartitionSpec("data"))
        self._score = jax.jit(lambda p, q, d: model.paired_scores(p, q, d[:, None])[:, 0])

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike, query_prompt: str | None = None,
                        passage_prompt: str | None = None, **kwargs: Any) -> "PairScorer":
        params, config, tokenizer = load_model(checkpoint_dir)
        prompts = choose_prompts(load_prompts(checkpoint_dir), query_prompt, passage_prompt, str(checkpoint_dir))
        return cls(params, config, Tokenizer(tokenizer), prompts=prompts, **kwargs)

    def score(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> np.ndarray:
        """One logit per (query, passage) pair, float32 [n] (also the teacher interface of prepare_distill)."""
        q_ids = self.tokenizer.encode([self.prompts.query + q for q, _ in pairs], self.query_max_length)
        p_ids = self.tokenizer.encode([self.prompts.passage + p for _, p in pairs], self.passage_max_length)
        order = np.argsort([len(q) + len(p) for q, p in zip(q_ids, p_ids)], kind="stable")
        out = np.zeros(len(order), np.float32)
        with tqdm(total=len(order), desc="reranking", unit="pair", disable=not progress) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                rows = len(chunk)
                q = pad_batch([q_ids[i] for i in chunk], max_length=self.query_max_length)
                p = pad_batch([p_ids[i] for i in chunk], max_length=self.passage_max_length)
                # A fixed batch size: the last chunk is padded with empty rows (scored, then dropped).
                q = np.pad(q, ((0, self.batch_size - rows), (0, 0)))
                p = np.pad(p, ((0, self.batch_size - rows), (0, 0)))
                scores = self._score(self._params, jax.device_put(q, self._rows), jax.device_put(p, self._rows))
                out[chunk] = np.asarray(scores)[:rows]
                bar.update(rows)
        return out


def check_ids(run_file: str | os.PathLike, corpus: Mapping[str, str], queries: Mapping[str, str]) -> None:
    """Every query and passage the run file names exists in the queries and corpus: the first that does not
    stops with its file:line."""
    with open(run_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) < 3:
                continue  # read_trec_run has already refused malformed lines
            if fields[0] not in queries:
                raise DataError(run_file, number, f"query {fields[0]!r} is not in the queries file")
            if fields[2] not in corpus:
                raise DataError(run_file, number, f"passage {fields[2]!r} (query {fields[0]!r}) is not in the corpus")


def ranked(run: Run) -> dict[str, list[str]]:
    """Each query's passages, best first, ties broken by id as trec_eval does."""
    return {qid: [d for d, _ in sorted(hits.items(), key=lambda x: (-x[1], x[0]))] for qid, hits in run.items()}


def top_k(run: Run, k: int) -> dict[str, list[str]]:
    """Each query's k best passages, ties broken by id as trec_eval does."""
    return {qid: docs[:k] for qid, docs in ranked(run).items()}


def append_tail(reranked: Run, first_stage: Run, k: int) -> Run:
    """The reranked top k, then the first stage's passages below rank k in their first-stage order, scored below
    every reranked score, so that metrics deeper than k (R@100 after reranking the top 20) count them."""
    out: Run = {}
    for qid, docs in ranked(first_stage).items():
        top = reranked.get(qid, {})
        lowest = min(top.values(), default=0.0)
        out[qid] = {**top, **{d: lowest - 1.0 - i for i, d in enumerate(docs[k:])}}
    return out


def fuse(reranked: Run, first_stage: Run, k: int, first_stage_weight: float) -> Run:
    """Each query's top k scored `w * z(first stage) + (1 - w) * z(reranker)`, then the first stage's tail as in
    `append_tail`. z standardises a query's k scores (mean 0, standard deviation 1; a constant list gives 0s), so
    the weight does not depend on either model's score scale. This is CombSUM over z-normalised scores (Fox & Shaw,
    TREC-2, 1994), written here because it is a few lines (ranx's `fuse` offers it, `norm="zmuv"`, `method="wsum"`,
    but ranx is not a dependency)."""
    def z(scores: Mapping[str, float]) -> dict[str, float]:
        values = np.asarray(list(scores.values()), dtype=np.float64)
        mean, std = values.mean(), values.std()
        return {d: float((s - mean) / std) if std > 0 else 0.0 for d, s in scores.items()}

    fused: Run = {}
    for qid, docs in top_k(first_stage, k).items():
        if qid not in reranked:
            continue
        first, second = z({d: first_stage[qid][d] for d in docs}), z({d: reranked[qid][d] for d in docs})
        fused[qid] = {d: first_stage_weight * first[d] + (1 - first_stage_weight) * second[d] for d in docs}
    return append_tail(fused, first_stage, k)


def rerank(scorer: PairScorer, corpus: Mapping[str, str], queries: Mapping[str, str], run: Run, k: int,
           out_dir: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None, queries_per_part: int = 64,
           progress: bool = True, keep_tail: bool = True) -> Path:
    """Rerank the top `k` of `run`; returns DIR/reranked.trec, which holds the first stage's passages below rank
    k after the reranked ones unless `keep_tail` is False. Finished parts of an earlier run are kept."""
    out = Path(out_dir)
    candidates = top_k(run, k)
    qids = sorted(candidates)
    manifest = {"fingerprint": {"model": {"config": digest(model_config_to_dict(scorer.config)),
                                          "params": params_fingerprint(scorer.params),
                                          "prompts": [scorer.prompts.query, scorer.prompts.passage]},
                                "candidates": digest(candidates), "queries": texts_fingerprint(
                                    {q: queries[q] for q in qids}),
                                "lengths": [scorer.query_max_length, scorer.passage_max_length],
                                **(fingerprint or {})},
                "queries_per_part": queries_per_part}
    previous = read_json(out / MANIFEST)
    if previous is not None:
        check_match(previous, manifest, out / MANIFEST, "use a new --output_dir")
    else:
        if out.exists() and any(out.iterdir()):
            raise OutputError(f"{out}: not empty and not a rerank output; choose a new or empty folder")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    parts = [qids[i:i + queries_per_part] for i in range(0, len(qids), queries_per_part)]
    todo = [i for i in range(len(parts)) if not (out / f"part-{i:05d}.trec").exists()]
    with tqdm(total=sum(len(candidates[q]) for q in qids), desc="reranking", unit="pair",
              disable=not progress) as bar:
        bar.update(sum(len(candidates[q]) for i in range(len(parts)) if i not in todo for q in parts[i]))
        for i in todo:
            pairs = [(q, d) for q in parts[i] for d in candidates[q]]
            scores = scorer.score([(queries[q], corpus[d]) for q, d in pairs])
            part: Run = {}
            for (q, d), s in zip(pairs, scores):
                part.setdefault(q, {})[d] = float(s)
            tmp = out / f".part-{i:05d}.trec.tmp"
            write_trec_run(part, tmp, tag="polyret-rerank")
            os.replace(tmp, out / f"part-{i:05d}.trec")
            bar.update(len(pairs))
            if preemption.requested() is not None and i != todo[-1]:
                preemption.stop_here(f"stopped after part {i + 1} of {len(parts)}; rerun the same command to resume")
    merged: Run = {}
    for i in range(len(parts)):
        merged.update(read_trec_run(out / f"part-{i:05d}.trec"))
    return write_trec_run(append_tail(merged, run, k) if keep_tail else merged, out / FINAL, tag="polyret-rerank")

