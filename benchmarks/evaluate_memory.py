"""Peak memory of `evaluate` on precomputed vectors with the ScaNN recall check on (issue 15: below 2x the
vectors' size at 1M x 128).

  nice -n 10 .venv/bin/python benchmarks/evaluate_memory.py [--docs 1000000] [--dim 128] [--queries 1000]

Writes random unit vectors (.npy + ids), a TSV corpus with one short text per document, queries and qrels,
runs `python -m polyret.jobs.evaluate` on them in a child process and reports the child's peak RSS
(ru_maxrss) beside the vectors' size; a run on a 1,000-document corpus gives the start-up baseline
(Python, NumPy, ScaNN's pybind module, ir_measures; no TensorFlow or JAX on this path) for comparison.
Extra `--gin.NAME=VALUE` arguments are passed to evaluate (e.g. a smaller ScannConfig.training_sample_size
to exercise the block build on a small corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_inputs(folder: Path, docs: int, dim: int, queries: int, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.lib.format.open_memmap(folder / "corpus.npy", mode="w+", dtype=np.float32, shape=(docs, dim))
    for start in range(0, docs, 100_000):  # in blocks: the writer itself stays small
        block = rng.standard_normal((min(100_000, docs - start), dim)).astype(np.float32)
        vectors[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    vectors.flush()
    del vectors
    with open(folder / "corpus.ids", "w") as f_ids, open(folder / "corpus.tsv", "w") as f_text:
        for i in range(docs):
            f_ids.write(f"d{i}\n")
            f_text.write(f"d{i}\tdocument {i}\n")
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    np.save(folder / "queries.npy", q / np.linalg.norm(q, axis=1, keepdims=True))
    with open(folder / "queries.ids", "w") as f_ids, open(folder / "queries.tsv", "w") as f_text, \
            open(folder / "qrels.txt", "w") as f_qrels:
        for i in range(queries):
            f_ids.write(f"q{i}\n")
            f_text.write(f"q{i}\tquery {i}\n")
            f_qrels.write(f"q{i} 0 d{int(rng.integers(docs))} 1\n")
    return {name: folder / name for name in ("corpus.npy", "corpus.ids", "corpus.tsv", "queries.npy",
                                             "queries.ids", "queries.tsv", "qrels.txt")}


def run_evaluate(files: dict[str, Path], out: Path, gin: list[str] = ()) -> tuple[float, float, dict]:
    """-> (peak RSS of the child in bytes, seconds, metrics.json)."""
    argv = [sys.executable, "-m", "polyret.jobs.evaluate", "--corpus", str(files["corpus.tsv"]),
            "--queries", str(files["queries.tsv"]), "--qrels", str(files["qrels.txt"]),
            "--corpus_embeddings", str(files["corpus.npy"]), "--corpus_ids", str(files["corpus.ids"]),
            "--query_embeddings", str(files["queries.npy"]), "--query_ids", str(files["queries.ids"]),
            "--output_dir", str(out), "--k", "100", "--metrics", "RR@10,R@100", *gin]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.time()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    return peak, seconds, json.loads((out / "metrics.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    args, gin = p.parse_known_args()
    if any(not g.startswith("--gin.") for g in gin):
        p.error(f"unknown arguments {[g for g in gin if not g.startswith('--gin.')]}")
    with tempfile.TemporaryDirectory(prefix="polyret_evalmem_") as tmp:
        tmp = Path(tmp)
        # Each measurement in its own child of a fresh interpreter, so ru_maxrss is that run's alone.
        rows = []
        for label, docs in (("baseline (1,000 docs)", 1000), (f"{args.docs:,} docs", args.docs)):
            files = write_inputs(tmp / str(docs), docs, args.dim, args.queries)
            code = (f"import sys; sys.argv=['x']; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
                    f"import evaluate_memory as m, json, pathlib; "
                    f"files={{k: pathlib.Path(v) for k, v in {json.dumps({k: str(v) for k, v in files.items()})}.items()}}; "
                    f"print(json.dumps(m.run_evaluate(files, pathlib.Path({str(tmp / (str(docs) + '_out'))!r}), {gin!r})))")
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            peak, seconds, metrics = json.loads(out.stdout.strip().splitlines()[-1])
            vector_bytes = docs * args.dim * 4
            rows.append((label, vector_bytes, peak, seconds, metrics.get("scann", {})))
    print(f"\nevaluate with precomputed {args.dim}-d vectors, {args.queries} queries, recall check on "
          f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs{', ' + ' '.join(gin) if gin else ''})\n")
    print("| corpus | vectors | peak RSS | peak / vectors | peak - baseline | time | ScaNN recall@10 vs brute force |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = rows[0][2]
    for label, vector_bytes, peak, seconds, scann in rows:
        recall = scann.get("recall@10_vs_brute_force")
        print(f"| {label} | {vector_bytes / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {peak / vector_bytes:.2f}x | "
              f"{(peak - base) / 2**20:.0f} MiB | {seconds:.0f} s | "
              f"{'n/a (brute force)' if recall is None else f'{recall:.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
