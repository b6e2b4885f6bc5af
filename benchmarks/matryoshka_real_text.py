"""Matryoshka dimensions on the real-text set (benchmarks/real_text_set.py, Debian Reference sections): the same
model fine-tuned twice on the same train pairs, with the plain in-batch loss and with `MatryoshkaLoss` around
it, then searched at the full width and at each truncated width (the full vectors cut and re-normalised, what
`polyret evaluate --truncate_dim` searches). Prints nDCG@10 per test pair and width, the mean over the pairs, and
the ScaNN index size at each width: written to disk (tree + AH + float32 reorder, untuned knobs) for every test
passage of the set, and `polyret plan`'s estimate for one million passages.

  nice -n 10 python benchmarks/matryoshka_real_text.py [--base all-MiniLM-L6-v2] [--dims 256,128,64] \
      [--steps 300] [--batch_size 32] [--work /tmp/matryoshka]

The two runs differ only in the loss; both use runs/finetune_minilm.gin (benchmarks/finetune_real_text.py).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from finetune_real_text import add_finetune_flags, evaluate_pair, finetune, import_base, register_train_mixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TruncatingEncoder:
    """A TowerEncoder's full vectors, encoded once per text list, cut to `dim` dimensions and re-normalised on
    each call: `TowerEncoder(truncate_dim=dim)` gives the same vectors (tests/models/test_matryoshka.py) at the
    cost of one encode per width."""

    def __init__(self, encoder):
        self.encoder, self.cache, self.dim = encoder, {}, None

    def encode(self, texts, side, max_length, progress=False, desc=""):
        from polyret.models.losses import truncate
        key = (tuple(texts), side, max_length)
        if key not in self.cache:
            self.cache[key] = self.encoder.encode(texts, side, max_length)
        full = self.cache[key]
        return full if self.dim is None else np.asarray(truncate(full, self.dim))


def scann_bytes_on_disk(vectors: np.ndarray) -> int:
    """Bytes of the ScaNN index (tree + AH + reorder, untuned) of `vectors`, as written (the ids file left out)."""
    from polyret.retrieval.scann_index import ScannConfig, ScannIndex
    index = ScannIndex.build([str(i) for i in range(len(vectors))], vectors, k=10,
                             config=ScannConfig(brute_force_below=0, recall_target=None))
    with tempfile.TemporaryDirectory() as folder:
        index.write(Path(folder))
        return sum(f.stat().st_size for f in Path(folder).iterdir() if f.name != "ids.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_finetune_flags(ap, "/tmp/matryoshka")
    ap.add_argument("--dims", default="256,128,64", help="truncated widths (the full width is added)")
    ap.add_argument("--pairs", default="en-de,en-fr,en-ja,en-zh-cn,en-es,en-pt",
                    help="test pairs to evaluate (the mean is over these)")
    args = ap.parse_args()
    from polyret.io.benchmarks import load_beir
    from polyret.retrieval.encode import TowerEncoder
    from polyret.retrieval.scann_index import index_bytes

    pairs_dir, work = Path(args.set) / "pairs", Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    imported = import_base(args.base, work)
    register_train_mixture("rts_train", pairs_dir, args.train_languages.split(","), imported)
    full = TowerEncoder.from_checkpoint(imported).encode(["a"], "right", 8).shape[-1]
    dims = [full] + [int(d) for d in args.dims.split(",") if int(d) < full]
    runs = {"plain loss": [], "MatryoshkaLoss": [
        "train.loss=@MatryoshkaLoss()", "MatryoshkaLoss.loss=@ContrastiveLoss()", f"MatryoshkaLoss.dims={tuple(dims)}"]}
    for name, bindings in runs.items():
        out = work / name.replace(" ", "_")
        if not (out / "checkpoint_done").exists():
            t0 = time.time()
            finetune(imported, out, "rts_train", args.steps, args.batch_size, args.learning_rate, bindings)
            (out / "checkpoint_done").write_text(f"{time.time() - t0:.0f}\n")
            print(f"{name}: trained in {time.time() - t0:.0f} s")

    pairs = args.pairs.split(",")
    scores = {}  # (run, dim) -> {pair: nDCG@10}
    for name in runs:
        encoder = TruncatingEncoder(TowerEncoder.from_checkpoint(work / name.replace(" ", "_")))
        for dim in dims:
            encoder.dim = None if dim == full else dim
            scores[name, dim] = {pair: evaluate_pair(encoder, pairs_dir / pair)["nDCG@10"] for pair in pairs}
            print(f"{name} @ {dim}: " + ", ".join(f"{p} {v:.3f}" for p, v in scores[name, dim].items()), flush=True)

    # Index sizes: every test passage of the set, encoded once by the Matryoshka model, cut to each width.
    texts = sorted({t for pair in pairs_dir.iterdir() for t in load_beir(pair).passage_texts.values()})
    vectors = TowerEncoder.from_checkpoint(work / "MatryoshkaLoss").encode(texts, "right", 256)
    sizes = {}
    for dim in dims:
        cut = vectors[:, :dim] / np.linalg.norm(vectors[:, :dim], axis=1, keepdims=True)
        sizes[dim] = (scann_bytes_on_disk(cut), index_bytes(len(texts), dim), index_bytes(1_000_000, dim))

    header = ("| width | " + " | ".join(f"{p} plain / Matryoshka" for p in pairs) + " | mean plain | mean Matryoshka "
              f"| ScaNN index of the set's {len(texts):,} passages: on disk (estimate) | estimate for 1M passages |")
    lines = [header, "|" + "---|" + "---:|" * (len(pairs) + 4)]
    for dim in dims:
        plain, mrl = scores["plain loss", dim], scores["MatryoshkaLoss", dim]
        disk, estimate, million = sizes[dim]
        lines.append(f"| {dim}{' (full)' if dim == full else ''} | "
                     + " | ".join(f"{plain[p]:.3f} / {mrl[p]:.3f}" for p in pairs)
                     + f" | {np.mean(list(plain.values())):.3f} | {np.mean(list(mrl.values())):.3f} | "
                     f"{disk / 2**20:.1f} MiB ({estimate / 2**20:.1f}) | {million / 2**30:.2f} GiB |")
    print("\n".join(lines))
    (work / "table.md").write_text("\n".join(lines) + "\n")
    (work / "scores.json").write_text(json.dumps({f"{n}@{d}": s for (n, d), s in scores.items()}, indent=2))
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
