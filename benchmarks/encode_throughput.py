"""Corpus-encoding passages/s: our jitted, length-sorted TowerEncoder vs sentence-transformers on the same
exported model and the same passages (and a check that both give the same embeddings).

  python benchmarks/encode_throughput.py [--layers 4 --passages 4000 --batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import numpy as np

from polyret.models.model_folder import save_model
from polyret.models.retrieval_model import export_hf
from polyret.models.t5 import T5Config
from polyret.models.retrieval_model import init_params
from polyret.models.towers import DualEncoderConfig
from polyret.retrieval.encode import TowerEncoder
from polyret.seqio_tasks.templates import write_template_dataset
from polyret.seqio_tasks.vocab import train_sentencepiece


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--passages", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max_length", type=int, default=128)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = write_template_dataset(tmp / "data", num_entities=max(50, args.passages // 21 + 1))
    spm = train_sentencepiece([data["text"]], tmp / "sp", vocab_size=1500)
    texts = []
    for f in sorted(data["corpus"].glob("*.jsonl")):
        texts += [json.loads(l)["text"] for l in f.read_text(encoding="utf-8").splitlines()]
    rng = np.random.default_rng(0)
    # Passages of mixed length: 1 to 8 template sentences joined.
    texts = [" ".join(rng.choice(texts, rng.integers(1, 9))) for _ in range(args.passages)]
    cfg = DualEncoderConfig(encoder=T5Config(vocab_size=2048, d_model=512, num_heads=8, d_kv=64, d_ff=1024,
                                             num_layers=args.layers, dropout_rate=0.0), projection_dim=256)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    save_model(tmp / "ckpt", params, cfg, spm)
    export_hf(params, cfg, tmp / "hf", tokenizer=spm, max_seq_length=args.max_length)

    encoder = TowerEncoder.from_checkpoint(tmp / "ckpt", batch_size=args.batch)
    encoder.encode(texts[: args.batch * 2], "right", args.max_length)  # compile the common shapes
    start = time.perf_counter()
    ours = encoder.encode(texts, "right", args.max_length)
    ours_rate = len(texts) / (time.perf_counter() - start)

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(tmp / "hf"), device="cpu")
    st.encode(texts[: args.batch * 2], batch_size=args.batch)
    start = time.perf_counter()
    theirs = st.encode(texts, batch_size=args.batch, convert_to_numpy=True)
    st_rate = len(texts) / (time.perf_counter() - start)
    cosine = np.sum(ours * theirs, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    print(f"{len(texts)} passages, {args.layers}-layer d512 encoder, max length {args.max_length}, batch {args.batch}")
    print(f"polyret TowerEncoder (JAX, length-sorted):  {ours_rate:8.1f} passages/s")
    print(f"sentence-transformers (PyTorch):            {st_rate:8.1f} passages/s")
    print(f"ratio ours / sentence-transformers: {ours_rate / st_rate:.2f}x; min cosine between the two: {cosine.min():.6f}")


if __name__ == "__main__":
    main()
