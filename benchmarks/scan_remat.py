"""Scanned vs looped encoder layers and the remat policies, side by side on this machine: compile time, XLA
temporary memory and seconds per train step (the trainer's own step, AdamW) of a T5 dual encoder.

  python benchmarks/scan_remat.py [--layers 8 --d_model 512 --d_ff 1024 --batch 8 --query_len 64 --passage_len 256]

The scanned stack builds a stacked copy of the layer weights every step (and unstacks their gradients);
the "scan" vs "loop" step time at remat 'none' is what that copy costs next to the step.
"""

from __future__ import annotations

import argparse
import time


def measure(args, scan: bool, remat: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from polyret.models.retrieval_model import build_model
    from polyret.models.t5 import T5Config
    from polyret.models.towers import DualEncoderConfig
    from polyret.training.trainer import make_train_step

    encoder = T5Config(vocab_size=32000, d_model=args.d_model, num_heads=args.d_model // 64, d_kv=64, d_ff=args.d_ff,
                       num_layers=args.layers, dropout_rate=0.0, scan_layers=scan, remat_policy=remat)
    model = build_model(DualEncoderConfig(encoder=encoder, logit_scale=100.0))
    params, _ = model.init(jax.random.PRNGKey(0))
    tx = optax.adamw(1e-4)
    opt = tx.init(params)
    rng = np.random.default_rng(0)
    batch = {"left_encoder_input_tokens": jnp.asarray(rng.integers(3, 32000, (args.batch, args.query_len)), jnp.int32),
             "right_encoder_input_tokens": jnp.asarray(rng.integers(3, 32000, (args.batch, args.passage_len)),
                                                       jnp.int32)}
    step = make_train_step(model, tx, optax.constant_schedule(1e-4), (), jax.random.PRNGKey(0))
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, batch, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - start
    temp = compiled.memory_analysis().temp_size_in_bytes
    params, opt, metrics = compiled(params, opt, batch, jnp.int32(0))
    metrics["loss"].block_until_ready()
    start = time.perf_counter()
    for i in range(args.steps):
        params, opt, metrics = compiled(params, opt, batch, jnp.int32(i))
    metrics["loss"].block_until_ready()
    return {"compile_s": compile_s, "temp_mib": temp / 2**20, "step_s": (time.perf_counter() - start) / args.steps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d_model", type=int, default=512)
    ap.add_argument("--d_ff", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--query_len", type=int, default=64)
    ap.add_argument("--passage_len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    print(f"T5 dual encoder: {args.layers} layers, d_model {args.d_model}, d_ff {args.d_ff}, batch {args.batch}, "
          f"lengths {args.query_len}/{args.passage_len}, float32")
    print(f"{'layers':6s} {'remat':14s} {'compile s':>10s} {'XLA temp MiB':>13s} {'s/step':>8s}")
    rows = {}
    for scan, remat in ((False, "none"), (True, "none"), (True, "dots_saveable"), (True, "full"), (False, "full")):
        r = measure(args, scan, remat)
        rows[(scan, remat)] = r
        print(f"{'scan' if scan else 'loop':6s} {remat:14s} {r['compile_s']:10.1f} {r['temp_mib']:13.1f} "
              f"{r['step_s']:8.3f}", flush=True)
    loop, scan = rows[(False, "none")], rows[(True, "none")]
    print(f"scan / loop: compile {scan['compile_s'] / loop['compile_s']:.2f}x, step time "
          f"{scan['step_s'] / loop['step_s']:.2f}x (the stacked-weight copy included), temp "
          f"{scan['temp_mib'] / loop['temp_mib']:.2f}x; full remat / none (scan): temp "
          f"{rows[(True, 'full')]['temp_mib'] / scan['temp_mib']:.2f}x, step "
          f"{rows[(True, 'full')]['step_s'] / scan['step_s']:.2f}x")


if __name__ == "__main__":
    main()
