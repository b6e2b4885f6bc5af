"""Encoding speed against sentence-transformers on the same real passages and machine: `TowerEncoder.encode` (what
`polyret encode` / `evaluate` run) against `SentenceTransformer.encode_document`, the model's prompts on both.

  nice -n 10 python benchmarks/encode_vs_sentence_transformers.py [--base multilingual-e5-small]
      [--set ~/.cache/polyret/debian_reference_set] [--passages 800] [--max_length 256] [--batch_size 32]

Passages: the first `--passages` sections of the set's corpora (de, fr, ja, es, ...), cut at `--max_length` tokens.
Each side encodes once to warm up (polyret compiles one shape per padded length), then is timed on a second pass;
the vectors are compared (cosine) so both sides did the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="multilingual-e5-small")
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--passages", type=int, default=800)
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--work", default="/tmp/encode_vs_st")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer
    from polyret.jobs import import_checkpoint as import_job
    from polyret.models.model_names import resolve_model
    from polyret.retrieval.encode import TowerEncoder

    texts = []
    for pair in ("en-de", "en-fr", "en-ja", "en-es", "en-zh-cn", "en-pt"):
        for line in (Path(args.set) / "pairs" / pair / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            texts.append(json.loads(line)["text"])
    texts = texts[:args.passages]
    folder = resolve_model(args.base)
    ckpt = Path(args.work) / "ckpt"
    if not ckpt.exists():
        import_job.main(["--hf", str(folder), "--output_dir", str(ckpt)])
    ours = TowerEncoder.from_checkpoint(ckpt, batch_size=args.batch_size)
    theirs = SentenceTransformer(str(folder), device="cpu")
    theirs.max_seq_length = args.max_length

    def timed(fn):
        fn()
        start = time.time()
        out = fn()
        return out, time.time() - start

    a, t_ours = timed(lambda: ours.encode(texts, "right", args.max_length))
    b, t_theirs = timed(lambda: theirs.encode_document(texts, batch_size=args.batch_size))
    cosine = np.sum(a * b, axis=1)
    print(f"{len(texts)} passages, max {args.max_length} tokens, batch {args.batch_size}, {args.base}")
    print(f"polyret: {len(texts) / t_ours:.1f} passages/s; sentence-transformers: {len(texts) / t_theirs:.1f} "
          f"passages/s; polyret speed / theirs: {t_theirs / t_ours:.2f}x; min cosine {cosine.min():.6f}")


if __name__ == "__main__":
    main()
