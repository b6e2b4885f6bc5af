"""Does ScaNN's auto-tuner meet its recall target on queries it never saw? Builds `ScannIndex` with the
default `ScannConfig` (recall@10 >= 0.95; tuned on corpus vectors used as queries) and measures recall@10
against streamed brute force on held-out real queries.

  python benchmarks/autotune_recall.py --data li_tokens --n 300000
  python benchmarks/autotune_recall.py --data sentences

Data: `sentences` / `tokens` as in ann_search.py (MiniLM, 384-d); `li_tokens`: the PCA-128 unit-norm
token vectors that late_interaction.py writes (queries: its held-out query tokens).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from polyret.retrieval.compressed_index import TokenShards
from polyret.retrieval.scann_index import ScannConfig, ScannIndex, measure_recall

LI = Path(os.path.expanduser("~/.cache/polyret/debian/late_interaction"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("sentences", "tokens", "li_tokens"), default="li_tokens")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    if args.data == "li_tokens":
        shards = TokenShards(LI / "shards")
        parts, total = [], 0
        for s in range(shards.num_shards):
            parts.append(np.asarray(shards.vectors(s), np.float32))
            total += len(parts[-1])
            if args.n and total >= args.n:
                break
        x = np.concatenate(parts)[:args.n]
        q = np.concatenate(list(np.load(LI / "queries.npz", allow_pickle=True)["q"]))[:args.queries]
    else:
        from ann_search import real
        x, q = real(args.data, args.n, args.queries)
    start = time.perf_counter()
    index = ScannIndex.build([str(i) for i in range(len(x))], x, k=10, config=ScannConfig(brute_force_below=0))
    build = time.perf_counter() - start
    t = index.params["tuning"]
    recall = measure_recall(index, q, x, 10)
    print(f"| {args.data} | {len(x):,} x {x.shape[1]} | {index.params['num_leaves']} / "
          f"{index.params['num_leaves_to_search']} / {index.params['dimensions_per_block']} / "
          f"{index.params['reorder']} | {t['recall_tuning']:.3f} | {t['recall_heldout']:.3f} | {recall:.3f} "
          f"({len(q)} real queries) | {build:.0f} |")


if __name__ == "__main__":
    main()
