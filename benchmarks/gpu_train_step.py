"""GPU train step: polyret's mT5-base dual encoder (bf16 activations, fp32 parameters and AdamW state, scanned
and rematerialised layers) against Hugging Face `MT5EncoderModel` in PyTorch (bf16 autocast, fp32 parameters,
fused AdamW, gradient checkpointing), same config, loss and shapes (SWIM-X: query 64 / passage 256 tokens,
mean pooling, L2, logit scale 100, bidirectional in-batch softmax), each at the largest batch that fits.
MFU = XLA cost-analysis FLOPs per step / step time / the GPU's dense bf16 peak.

  python benchmarks/gpu_train_step.py [--remat full|dots_saveable|none] [--batches 64,128,...] [--steps 10]

Needs a CUDA GPU with jax[cuda] and a CUDA build of torch in the environment. Each framework runs in its
own subprocess (its own GPU memory). Not run yet: no GPU was available when it was written (see
benchmarks/RESULTS.md); run it and record the figures there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H200": 989.0,
                    "A100-SXM4-80GB": 312.0, "A100-SXM4-40GB": 312.0, "A100 80GB PCIe": 312.0, "L4": 121.0}
QUERY_LEN, PASSAGE_LEN = 64, 256


def _peak(device_name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for name, tflops in BF16_PEAK_TFLOPS.items():
        if name.lower() in device_name.lower() or device_name.lower() in name.lower():
            return tflops * 1e12
    return None


def _time(fn, steps: int) -> float:
    """Seconds per call of `fn` (which returns a function that blocks until the step is done)."""
    fn()()
    fn()()  # compiled and warm
    start = time.perf_counter()
    for _ in range(steps):
        wait = fn()
    wait()
    return (time.perf_counter() - start) / steps


def run_ours(batch: int, args) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from polyret.models.retrieval_model import build_model
    from polyret.models.t5 import PRESETS
    from polyret.models.towers import DualEncoderConfig
    from polyret.training.trainer import make_train_step

    encoder = dataclasses.replace(PRESETS["mt5_base"], dtype="bfloat16", dropout_rate=0.0, scan_layers=True,
                                  remat_policy=args.remat)
    model = build_model(DualEncoderConfig(encoder=encoder, projection_dim=768, logit_scale=100.0))
    params, _ = model.init(jax.random.PRNGKey(0))
    tx = optax.adamw(1e-4)
    opt = tx.init(params)
    rng = np.random.default_rng(0)
    data = {"left_encoder_input_tokens": jnp.asarray(rng.integers(3, 250000, (batch, QUERY_LEN)), jnp.int32),
            "right_encoder_input_tokens": jnp.asarray(rng.integers(3, 250000, (batch, PASSAGE_LEN)), jnp.int32)}
    step = make_train_step(model, tx, optax.constant_schedule(1e-4), (), jax.random.PRNGKey(0))
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, data, jnp.int32(0)).compile()
    flops = compiled.cost_analysis()["flops"]
    state = {"params": params, "opt": opt, "metrics": None}

    def one():
        state["params"], state["opt"], state["metrics"] = compiled(state["params"], state["opt"], data, jnp.int32(0))
        return lambda: state["metrics"]["loss"].block_until_ready()

    seconds = _time(one, args.steps)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return {"seconds_per_step": seconds, "flops_per_step": flops, "device": device.device_kind,
            "peak_bytes": stats.get("peak_bytes_in_use"), "loss": float(state["metrics"]["loss"])}


def run_torch(batch: int, args) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.MT5Config(vocab_size=250112, d_model=768, num_heads=12, d_kv=64, d_ff=2048, num_layers=12,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = transformers.MT5EncoderModel(cfg).cuda()
    if args.remat != "none":
        model.gradient_checkpointing_enable()
    projection = torch.nn.Linear(768, 768, bias=False).cuda()
    opt = torch.optim.AdamW(list(model.parameters()) + list(projection.parameters()), lr=1e-4, fused=True)
    left = torch.randint(3, 250000, (batch, QUERY_LEN), device="cuda")
    right = torch.randint(3, 250000, (batch, PASSAGE_LEN), device="cuda")

    def embed(tokens):
        mask = (tokens != 0).float()
        h = model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state.float()
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(projection(pooled), dim=-1)

    def one():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            q, p = embed(left), embed(right)
        scores = 100.0 * q.float() @ p.float().T
        labels = torch.arange(len(q), device="cuda")
        loss = torch.nn.functional.cross_entropy(scores, labels) + torch.nn.functional.cross_entropy(scores.T, labels)
        loss.backward()
        opt.step()
        return lambda: torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    seconds = _time(one, args.steps)
    return {"seconds_per_step": seconds, "device": torch.cuda.get_device_name(),
            "peak_bytes": torch.cuda.max_memory_allocated()}


def _worker(args) -> None:
    fn = run_ours if args.worker == "ours" else run_torch
    try:
        result = fn(args.batch, args)
    except Exception as e:  # noqa: BLE001  (an out-of-memory batch is a result: the search stops there)
        text = str(e)
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            print("RESULT " + json.dumps({"oom": True}))
            return
        raise
    print("RESULT " + json.dumps(result))


def _run(worker: str, batch: int, argv: list[str]) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"}
    out = subprocess.run([sys.executable, __file__, "--worker", worker, "--batch", str(batch)] + argv,
                         capture_output=True, text=True, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        if "out of memory" in out.stderr.lower() or "RESOURCE_EXHAUSTED" in out.stderr:
            return {"oom": True}
        raise SystemExit(out.stderr[-3000:])
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--remat", default="full", choices=["none", "full", "dots_saveable"])
    ap.add_argument("--batches", default="64,128,256,512,1024,2048")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peak_tflops", type=float, default=None, help="bf16 peak of the GPU if not in the table")
    ap.add_argument("--worker", choices=["ours", "torch"])
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()
    if args.worker:
        return _worker(args)
    argv = ["--remat", args.remat, "--steps", str(args.steps)]
    best = {}
    for worker in ("ours", "torch"):
        for batch in (int(b) for b in args.batches.split(",")):
            result = _run(worker, batch, argv)
            if result.get("oom"):
                print(f"{worker}: batch {batch} does not fit")
                break
            tokens = batch * (QUERY_LEN + PASSAGE_LEN)
            print(f"{worker}: batch {batch}: {result['seconds_per_step'] * 1e3:.1f} ms/step, "
                  f"{tokens / result['seconds_per_step']:,.0f} tokens/s, peak {result['peak_bytes'] / 2**30:.1f} GiB",
                  flush=True)
            best[worker] = {**result, "batch": batch, "tokens_per_second": tokens / result["seconds_per_step"]}
    ours, torch_ = best.get("ours"), best.get("torch")
    if not ours or not torch_:
        raise SystemExit("one framework fitted no batch")
    print(f"\nGPU: {ours['device']}; remat {args.remat}; shapes {QUERY_LEN}/{PASSAGE_LEN}; mT5-base dual encoder")
    for name, r in (("polyret (JAX, bf16)", ours), ("transformers (PyTorch, bf16 autocast)", torch_)):
        print(f"{name:40s} largest batch {r['batch']:5d}  {r['tokens_per_second']:12,.0f} tokens/s")
    print(f"throughput ratio (ours / PyTorch, tokens/s at each one's largest batch): "
          f"{ours['tokens_per_second'] / torch_['tokens_per_second']:.2f}x")
    peak = _peak(ours["device"], args.peak_tflops)
    achieved = ours["flops_per_step"] / ours["seconds_per_step"]
    mfu = f"MFU {achieved / peak:.1%} of {peak / 1e12:.0f} TFLOP/s bf16" if peak else "MFU: unknown GPU, pass --peak_tflops"
    print(f"ours: {ours['flops_per_step'] / 1e12:.2f} TFLOP/step (XLA cost analysis; remat recompute included), "
          f"{achieved / 1e12:.1f} TFLOP/s; {mfu}")


if __name__ == "__main__":
    main()
