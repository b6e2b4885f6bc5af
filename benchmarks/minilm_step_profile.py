"""The MiniLM fine-tuning step in isolation: polyret (JAX, XLA:CPU) against the same model in PyTorch, on one core
and on all of them.

The step of `benchmarks/finetune_vs_sentence_transformers.py` without its input pipeline: all-MiniLM-L6-v2's
shapes (6 layers, hidden 384, 12 heads, FFN 1536; random weights), 32 queries of `--query_len` tokens and 32
passages of `--passage_len` tokens (every token real), mean pooling, L2, in-batch softmax at scale 20 (query ->
passage, as MultipleNegativesRankingLoss), AdamW. polyret runs its trainer's own step (`make_train_step`);
PyTorch runs transformers' `BertModel` (SDPA attention). Each run is its own process, pinned with `taskset` to the
first core (`1 core`) or left on all of them, so the table says how much of each framework's step uses a second
core: a step that scales less than the other framework's points at work XLA does on one thread.

  python benchmarks/minilm_step_profile.py [--steps 10] [--dropout 0.1] [--query_len 16] [--passage_len 128] \
      [--xla_variant=--xla_cpu_enable_concurrency_optimized_scheduler=true ...]

Each `--xla_variant=FLAGS` (repeatable; FLAGS an XLA_FLAGS value, after `=` since it starts with dashes) times
polyret's step again under those flags, on all cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

BATCH = 32


def batch_tokens(rows: int, length: int, rng: np.random.Generator) -> np.ndarray:
    tokens = rng.integers(1000, 30000, size=(rows, length), dtype=np.int32)
    tokens[:, 0], tokens[:, -1] = 101, 102  # [CLS] ... [SEP], as the tokenizer writes them
    return tokens


def run_polyret(args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from polyret.models.bert import PRESETS
    from polyret.models.losses import ContrastiveLoss
    from polyret.models.retrieval_model import build_model
    from polyret.models.towers import DualEncoderConfig
    from polyret.training.trainer import make_train_step

    encoder = dataclasses.replace(PRESETS["minilm_l6"], hidden_dropout_rate=args.dropout,
                                  attention_dropout_rate=args.dropout)
    model = build_model(DualEncoderConfig(encoder=encoder, pooling="mean", l2_norm=True, logit_scale=20.0),
                        ContrastiveLoss(bidirectional=False))
    params, _ = model.init(jax.random.PRNGKey(0))
    tx = optax.adamw(2e-5)
    opt = tx.init(params)
    rng = np.random.default_rng(0)
    batches = [{"left_encoder_input_tokens": jnp.asarray(batch_tokens(BATCH, args.query_len, rng)),
                "right_encoder_input_tokens": jnp.asarray(batch_tokens(BATCH, args.passage_len, rng))}
               for _ in range(max(args.steps, 2))]
    step = jax.jit(make_train_step(model, tx, optax.constant_schedule(2e-5), (), jax.random.PRNGKey(0)),
                   donate_argnums=(0, 1))
    for i in range(2):  # compile and warm up
        params, opt, metrics = step(params, opt, batches[i], jnp.int32(i))
    metrics["loss"].block_until_ready()
    start = time.perf_counter()
    for i, batch in enumerate(batches[:args.steps]):
        params, opt, metrics = step(params, opt, batch, jnp.int32(i))
    metrics["loss"].block_until_ready()
    return {"s_per_step": (time.perf_counter() - start) / args.steps}


def run_torch(args) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                  intermediate_size=1536, hidden_dropout_prob=args.dropout,
                                  attention_probs_dropout_prob=args.dropout, attn_implementation="sdpa")
    model = transformers.BertModel(cfg, add_pooling_layer=False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(batch_tokens(BATCH, args.query_len, rng)).long(),
                torch.from_numpy(batch_tokens(BATCH, args.passage_len, rng)).long()) for _ in range(max(args.steps, 2))]

    def embed(tokens):
        mask = torch.ones_like(tokens)
        h = model(input_ids=tokens, attention_mask=mask).last_hidden_state
        return torch.nn.functional.normalize(h.mean(1), dim=-1)

    def step(queries, passages):
        opt.zero_grad()
        scores = 20.0 * embed(queries) @ embed(passages).T
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(scores)))
        loss.backward()
        opt.step()
        return loss

    for queries, passages in batches[:2]:
        step(queries, passages)
    start = time.perf_counter()
    for queries, passages in batches[:args.steps]:
        step(queries, passages)
    return {"s_per_step": (time.perf_counter() - start) / args.steps, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--query_len", type=int, default=16)
    ap.add_argument("--passage_len", type=int, default=128)
    ap.add_argument("--xla_variant", action="append", default=[], help="an XLA_FLAGS value to time polyret under")
    ap.add_argument("--worker", choices=["polyret", "torch"])
    args = ap.parse_args()
    if args.worker:
        result = (run_polyret if args.worker == "polyret" else run_torch)(args)
        print(json.dumps(result))
        return
    cores = len(os.sched_getaffinity(0))

    def worker(framework: str, pin: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
        """One timed run in its own process; `pin` prefixes the command (taskset), `env` adds variables."""
        return subprocess.run([*pin, sys.executable, __file__, "--worker", framework, "--steps", str(args.steps),
                               "--dropout", str(args.dropout), "--query_len", str(args.query_len),
                               "--passage_len", str(args.passage_len)],
                              env={**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                              capture_output=True, text=True)

    def seconds(out: subprocess.CompletedProcess) -> float:
        return json.loads(out.stdout.strip().splitlines()[-1])["s_per_step"]

    rows = {}
    for framework in ("polyret", "torch"):
        for label, pin in (("1 core", ("taskset", "-c", "0")), (f"{cores} cores", ())):
            # Both frameworks size their thread pools from what they may run on.
            out = worker(framework, pin, **({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if pin else {}))
            out.check_returncode()
            rows[framework, label] = seconds(out)
            print(f"{framework:8s} {label:8s} {rows[framework, label]:.3f} s/step", flush=True)
    for flags in args.xla_variant:
        out = worker("polyret", XLA_FLAGS=flags)
        print(f"polyret {cores} cores, XLA_FLAGS={flags}: "
              + (f"{seconds(out):.3f} s/step" if out.returncode == 0
                 else f"failed: {out.stderr.strip().splitlines()[-1:]}"), flush=True)
    many = f"{cores} cores"
    print("\n| | polyret s/step | PyTorch s/step | polyret speed / PyTorch |\n|---|---:|---:|---:|")
    for label in ("1 core", many):
        print(f"| {label} | {rows['polyret', label]:.3f} | {rows['torch', label]:.3f} | "
              f"{rows['torch', label] / rows['polyret', label]:.2f}x |")
    print(f"| speed-up from the second core | {rows['polyret', '1 core'] / rows['polyret', many]:.2f}x | "
          f"{rows['torch', '1 core'] / rows['torch', many]:.2f}x | |")


if __name__ == "__main__":
    main()
