"""Train-step throughput and peak memory: our Flax dual encoder vs transformers' PyTorch MT5EncoderModel,
same config, batch and loss (mean pooling, L2, in-batch bidirectional softmax, AdamW), on this CPU;
plus our model FLOPs utilisation against a measured float32 matmul peak.

  python benchmarks/train_step.py [--layers 4 --d_model 512 --batch 32 --steps 10]

Each framework runs in its own subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIG = dict(vocab_size=32000, d_model=512, num_heads=8, d_kv=64, d_ff=1024)


def run_ours(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
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
    batch = {"left_encoder_input_tokens": jnp.asarray(rng.integers(3, 32000, (args.batch, args.query_len)), jnp.int32),
             "right_encoder_input_tokens": jnp.asarray(rng.integers(3, 32000, (args.batch, args.passage_len)),
                                                       jnp.int32)}

    # The trainer's own step (no copy); like the train loop, metrics reach the host only at the end.
    step = make_train_step(model, tx, optax.constant_schedule(1e-4), (), jax.random.PRNGKey(0))
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, batch, jnp.int32(0)).compile()
    flops = compiled.cost_analysis()["flops"]
    mem = compiled.memory_analysis()
    for i in range(2):
        params, opt, metrics = compiled(params, opt, batch, jnp.int32(i))
    metrics["loss"].block_until_ready()
    start = time.perf_counter()
    for i in range(args.steps):
        params, opt, metrics = compiled(params, opt, batch, jnp.int32(i))
    loss = metrics["loss"].block_until_ready()
    seconds = (time.perf_counter() - start) / args.steps
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(10):
        r = mm(a)
    r.block_until_ready()
    peak = 2 * n ** 3 * 10 / (time.perf_counter() - t)
    return {"seconds_per_step": seconds, "flops_per_step": flops, "peak_flops": peak,
            "xla_temp_bytes": mem.temp_size_in_bytes, "loss": float(loss)}


def run_torch(args) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.MT5Config(**CONFIG, num_layers=args.layers, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = transformers.MT5EncoderModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    left = torch.randint(3, 32000, (args.batch, args.query_len), generator=g)
    right = torch.randint(3, 32000, (args.batch, args.passage_len), generator=g)

    def embed(tokens):
        mask = (tokens != 0).float()
        h = model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def step():
        opt.zero_grad()
        q, p = embed(left), embed(right)
        scores = 100.0 * q @ p.T
        labels = torch.arange(len(q))
        loss = 0.5 * (torch.nn.functional.cross_entropy(scores, labels) +
                      torch.nn.functional.cross_entropy(scores.T, labels))
        loss.backward()
        opt.step()
        return loss

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    return {"seconds_per_step": (time.perf_counter() - start) / args.steps, "loss": float(loss),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--query_len", type=int, default=64)
    ap.add_argument("--passage_len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--worker", choices=["ours", "torch"])
    args = ap.parse_args()
    if args.worker:
        result = run_ours(args) if args.worker == "ours" else run_torch(args)
        result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for worker in ("ours", "torch"):
        out = subprocess.run([sys.executable, __file__, "--worker", worker] + sys.argv[1:], capture_output=True,
                             text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(out.stderr[-3000:])
        results[worker] = json.loads(line[len("RESULT "):])
    tokens = args.batch * (args.query_len + args.passage_len)
    ours, torch_ = results["ours"], results["torch"]
    print(f"config {CONFIG} layers={args.layers} batch={args.batch} lengths={args.query_len}/{args.passage_len}")
    print(f"{'':22s} {'s/step':>8s} {'tokens/s':>10s} {'peak RSS MiB':>13s}")
    for name, r in (("polyret (JAX/Flax)", ours), ("transformers (PyTorch)", torch_)):
        print(f"{name:22s} {r['seconds_per_step']:8.3f} {tokens / r['seconds_per_step']:10.0f} "
              f"{r['peak_rss_bytes'] / 2**20:13.0f}")
    print(f"speed ratio (ours / PyTorch, tokens/s): {torch_['seconds_per_step'] / ours['seconds_per_step']:.2f}x; "
          f"peak RSS ratio: {ours['peak_rss_bytes'] / torch_['peak_rss_bytes']:.2f}")
    achieved = ours["flops_per_step"] / ours["seconds_per_step"]
    print(f"our step: {ours['flops_per_step'] / 1e9:.1f} GFLOP (XLA cost analysis), {achieved / 1e9:.1f} GFLOP/s; "
          f"measured f32 matmul peak {ours['peak_flops'] / 1e9:.1f} GFLOP/s; MFU {achieved / ours['peak_flops']:.1%}; "
          f"XLA temp memory {ours['xla_temp_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
