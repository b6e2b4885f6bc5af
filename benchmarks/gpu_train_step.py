"""polyret against PyTorch peers on one GPU, with model FLOPs counted analytically (MFU that means something).

Three workloads, each on both sides with the same config, loss and shapes (random weights and tokens, bf16
activations, fp32 parameters, AdamW for training):
  dual     mT5-base dual encoder step, query 64 / passage 256, bidirectional in-batch softmax (SWIM-X);
           peer: transformers' MT5EncoderModel (SDPA where transformers offers it for T5, else eager;
           gradient checkpointing only where the batch does not fit without it);
  colbert  ColBERT-X on XLM-R-large, MTD step: queries (32 tokens) x 6 passages x 180 tokens, KL to teacher
           scores; peer: XLMRobertaModel with SDPA attention (+ checkpointing where needed);
  encode   mT5-base encoding, passages of 256 tokens, forward only, mean pooled; peer: torch.compile'd
           MT5EncoderModel in bf16.
Each side runs at one shared batch and at the largest batch of a list that fits (one process per side and
workload, batches tried in increasing order, stopping at the first out-of-memory).

FLOPs. XLA's cost analysis counts a scanned layer body once (0.088 of the true FLOPs for mT5-base), so the
model FLOPs come from the closed form in `workload_flops`: every matmul of the encoder (q/k/v/out
projections, q.k and p.v, the MLP), the heads and the scores, x3 for a training step (forward + backward),
no remat recompute (model FLOPs, as in the PaLM paper's MFU). MFU = model FLOPs / step time / peak.

  python benchmarks/gpu_train_step.py --output results.json [--workloads dual,colbert,encode]
  python benchmarks/gpu_train_step.py --tiny --output tiny.json   # CPU, tiny models, in-process (the suite)

Under 8 minutes on one H100/H200 with the default lists. Needs `pip install -e '.[cuda]'` and a CUDA torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H200": 989.0,
                    "A100-SXM4-80GB": 312.0, "A100-SXM4-40GB": 312.0, "A100 80GB PCIe": 312.0, "L4": 121.0}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    family: str  # "t5" | "bert"
    preset: str
    query_length: int  # tokens per query (dual, colbert)
    passage_length: int  # tokens per passage
    passages_per_query: int  # colbert: K passages per query; dual: 1 positive; encode: 0 (passages only)
    shared_batch: int
    batches: tuple[int, ...]  # candidates for the largest batch that fits (increasing)
    projection_dim: int = 768
    train: bool = True


FULL = {
    "dual": Workload("dual", "t5", "mt5_base", 64, 256, 1, 128, (256, 512, 1024, 2048)),
    "colbert": Workload("colbert", "bert", "xlm_roberta_large", 32, 180, 6, 64, (128, 256, 512), 128),
    "encode": Workload("encode", "t5", "mt5_base", 0, 256, 0, 1024, (2048, 4096, 8192), train=False),
}
TINY = {
    "dual": Workload("dual", "t5", "mt5_tiny", 8, 16, 1, 4, (8,), 16),
    "colbert": Workload("colbert", "bert", "xlm_roberta_tiny", 8, 12, 3, 2, (4,), 8),
    "encode": Workload("encode", "t5", "mt5_tiny", 0, 16, 0, 4, (8,), 16, train=False),
}
# ColBERT-X marker ids (XLM-R's [Q]/[D] stand-ins; any ids below the vocabulary size do for timing).
QUERY_MARKER, DOC_MARKER, MASK_ID = 5, 6, 7


# ------------------------------------------------------------------------------------------- model FLOPs

def encoder_flops(cfg, length: int) -> int:
    """Matmul FLOPs (2 x multiply-adds) of one encoder forward over one sequence of `length` tokens."""
    if hasattr(cfg, "d_kv"):  # T5 family
        width, inner, ff, mlp_mats = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff, 3 if cfg.gated else 2
    else:  # BERT family
        width, inner, ff, mlp_mats = cfg.hidden_size, cfg.hidden_size, cfg.intermediate_size, 2
    projections = 2 * length * width * inner * 4  # q, k, v, out
    attention = 2 * 2 * length * length * inner  # q.k and p.v
    mlp = 2 * length * width * ff * mlp_mats
    return cfg.num_layers * (projections + attention + mlp)


def workload_flops(w: Workload, cfg, batch: int, query_tokens: int, doc_tokens: int) -> int:
    """Model FLOPs of one step: encoder passes, heads and scores; x3 when training. `query_tokens` /
    `doc_tokens`: the lengths the encoder sees (ColBERT-X inserts markers)."""
    width = cfg.d_model if hasattr(cfg, "d_model") else cfg.hidden_size
    if w.name == "encode":
        return batch * (encoder_flops(cfg, doc_tokens) + 2 * width * w.projection_dim)
    if w.name == "dual":
        per_text = 2 * width * w.projection_dim  # pooled vector -> projection
        forward = batch * (encoder_flops(cfg, query_tokens) + encoder_flops(cfg, doc_tokens) + 2 * per_text)
        forward += 2 * batch * batch * w.projection_dim  # in-batch scores
        return 3 * forward
    docs = batch * w.passages_per_query  # colbert: per-token projection, MaxSim of each query's own passages
    forward = (batch * (encoder_flops(cfg, query_tokens) + 2 * query_tokens * width * w.projection_dim)
               + docs * (encoder_flops(cfg, doc_tokens) + 2 * doc_tokens * width * w.projection_dim)
               + docs * 2 * query_tokens * doc_tokens * w.projection_dim)
    return 3 * forward


# --------------------------------------------------------------------------------------------- polyret

def _encoder_config(w: Workload, tiny: bool, remat: str):
    from polyret.models import bert, t5
    presets = t5.PRESETS if w.family == "t5" else bert.PRESETS
    dtype = "float32" if tiny else "bfloat16"
    fields = dict(dtype=dtype, scan_layers=True, remat_policy=remat)
    fields.update(dropout_rate=0.0) if w.family == "t5" else fields.update(hidden_dropout_rate=0.0,
                                                                          attention_dropout_rate=0.0)
    return dataclasses.replace(presets[w.preset], **fields)


def _ours_model(w: Workload, tiny: bool, remat: str):
    from polyret.models import losses, towers
    from polyret.models.retrieval_model import build_model
    encoder = _encoder_config(w, tiny, remat)
    if w.name == "colbert":
        config = towers.ColBERTConfig(encoder=encoder, projection_dim=w.projection_dim, query_length=w.query_length,
                                      query_mask_token_id=MASK_ID, query_marker_id=QUERY_MARKER,
                                      document_marker_id=DOC_MARKER, attend_to_mask_tokens=False,
                                      document_length=w.passage_length + 40)
        return build_model(config, losses.KLDistillationLoss())
    return build_model(towers.DualEncoderConfig(encoder=encoder, projection_dim=w.projection_dim, logit_scale=100.0))


def _tokens(rng, shape, vocab):
    import numpy as np
    tokens = rng.integers(10, vocab, shape).astype(np.int32)
    tokens[..., -1] = 1  # an EOS-like last token; no padding (every token is counted)
    return tokens


def ours_lengths(w: Workload, model) -> tuple[int, int]:
    """The lengths the encoder sees for queries and passages (ColBERT-X inserts a marker)."""
    import jax
    import jax.numpy as jnp
    if w.name != "colbert":
        return w.query_length, w.passage_length
    module = model.module
    q = jax.eval_shape(lambda t: module.apply({}, t, method=type(module).query_inputs)[0],
                       jax.ShapeDtypeStruct((1, w.query_length), jnp.int32))
    d = jax.eval_shape(lambda t: module.apply({}, t, method=type(module).document_inputs),
                       jax.ShapeDtypeStruct((1, w.passage_length), jnp.int32))
    return q.shape[-1], d.shape[-1]


def run_ours(w: Workload, batch: int, steps: int, tiny: bool, remat: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from polyret.training.trainer import make_train_step

    model = _ours_model(w, tiny, remat)
    params, _ = model.init(jax.random.PRNGKey(0))
    vocab = model.config.encoder.vocab_size
    rng = np.random.default_rng(0)
    if not w.train:
        tokens = jnp.asarray(_tokens(rng, (batch, w.passage_length), vocab))
        encode = jax.jit(lambda p, t: model.encode_documents(p, t).vectors)
        compiled = encode.lower(params, tokens).compile()
        run = lambda: compiled(params, tokens)
    else:
        data = {"left_encoder_input_tokens": _tokens(rng, (batch, w.query_length), vocab)}
        if w.name == "colbert":
            data["right_encoder_input_tokens"] = _tokens(rng, (batch, w.passages_per_query, w.passage_length), vocab)
            data["teacher_scores"] = rng.normal(size=(batch, w.passages_per_query)).astype(np.float32)
            data["passage_languages"] = np.zeros((batch, w.passages_per_query), np.int32)
        else:
            data["right_encoder_input_tokens"] = _tokens(rng, (batch, w.passage_length), vocab)
        data = {k: jnp.asarray(v) for k, v in data.items()}
        tx = optax.adamw(1e-5)
        state = {"params": params, "opt": tx.init(params)}
        step = jax.jit(make_train_step(model, tx, optax.constant_schedule(1e-5), (), jax.random.PRNGKey(1)),
                       donate_argnums=(0, 1))
        compiled = step.lower(state["params"], state["opt"], data, jnp.int32(0)).compile()

        def run():
            state["params"], state["opt"], metrics = compiled(state["params"], state["opt"], data, jnp.int32(0))
            return metrics["loss"]
    seconds = _time(lambda: run(), lambda out: jax.block_until_ready(out), steps)
    query_tokens, doc_tokens = ours_lengths(w, model)
    device = jax.devices()[0]
    return {"seconds_per_step": seconds, "device": device.device_kind,
            "flops_per_step": workload_flops(w, model.config.encoder, batch, query_tokens, doc_tokens),
            "xla_cost_analysis_flops": (compiled.cost_analysis() or {}).get("flops"),
            "peak_bytes": (device.memory_stats() or {}).get("peak_bytes_in_use"), "remat": remat}


def _time(call, wait, steps: int) -> float:
    wait(call())
    wait(call())  # compiled and warm
    start = time.perf_counter()
    out = None
    for _ in range(steps):
        out = call()
    wait(out)
    return (time.perf_counter() - start) / steps


# --------------------------------------------------------------------------------------------- PyTorch

def run_torch(w: Workload, batch: int, steps: int, tiny: bool, checkpointing: bool) -> dict:
    import torch
    import transformers

    gpu = torch.cuda.is_available()
    dev = "cuda" if gpu else "cpu"
    amp = torch.bfloat16 if gpu else torch.float32  # CPU (tiny): float32, as ours
    torch.manual_seed(0)
    cfg = _encoder_config(w, tiny, "none")
    if w.family == "t5":
        hf_cfg = transformers.MT5Config(vocab_size=cfg.vocab_size, d_model=cfg.d_model, num_heads=cfg.num_heads,
                                        d_kv=cfg.d_kv, d_ff=cfg.d_ff, num_layers=cfg.num_layers,
                                        feed_forward_proj=cfg.activation, dropout_rate=0.0)
        encoder_cls, width, vocab = transformers.MT5EncoderModel, cfg.d_model, cfg.vocab_size
    else:
        hf_cfg = transformers.XLMRobertaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1)
        encoder_cls, width, vocab = transformers.XLMRobertaModel, cfg.hidden_size, cfg.vocab_size
    try:
        model = encoder_cls._from_config(hf_cfg, attn_implementation="sdpa")
        attention = "sdpa"
    except (ValueError, ImportError):  # transformers offers no SDPA for this family
        model = encoder_cls._from_config(hf_cfg, attn_implementation="eager")
        attention = "eager"
    model = model.to(dev)
    projection = torch.nn.Linear(width, w.projection_dim, bias=False).to(dev)
    g = torch.Generator().manual_seed(0)
    tokens = lambda *shape: torch.randint(10, vocab, shape, generator=g).to(dev)

    if not w.train:
        model = model.to(amp).eval()
        projection = projection.to(amp)
        passages = tokens(batch, w.passage_length)
        compiled = torch.compile(model) if gpu else model  # inductor on CPU needs a compiler and minutes

        @torch.no_grad()
        def call():
            h = compiled(input_ids=passages).last_hidden_state
            return torch.nn.functional.normalize(projection(h.mean(1)), dim=-1)
        seconds = _time(call, lambda _: torch.cuda.synchronize() if gpu else None, steps)
        return {"seconds_per_step": seconds, "attention": attention, "compiled": gpu,
                "peak_bytes": torch.cuda.max_memory_allocated() if gpu else None}

    if checkpointing:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(list(model.parameters()) + list(projection.parameters()), lr=1e-5, fused=gpu)
    if w.name == "dual":
        left, right = tokens(batch, w.query_length), tokens(batch, w.passage_length)
    else:
        # The lengths polyret's ColBERT-X encoder sees: queries cut to query_length with the marker
        # inside, passages one marker longer.
        left, right = tokens(batch, w.query_length), tokens(batch * w.passages_per_query, w.passage_length + 1)
        teacher = torch.randn(batch, w.passages_per_query, generator=g).to(dev)

    def call():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=amp, enabled=gpu):
            if w.name == "dual":
                q = torch.nn.functional.normalize(projection(model(input_ids=left).last_hidden_state.mean(1)), dim=-1)
                p = torch.nn.functional.normalize(projection(model(input_ids=right).last_hidden_state.mean(1)), dim=-1)
                scores = 100.0 * q.float() @ p.float().T
                labels = torch.arange(batch, device=dev)
                loss = (torch.nn.functional.cross_entropy(scores, labels)
                        + torch.nn.functional.cross_entropy(scores.T, labels)) / 2
            else:
                q = torch.nn.functional.normalize(projection(model(input_ids=left).last_hidden_state), dim=-1)
                d = torch.nn.functional.normalize(projection(model(input_ids=right).last_hidden_state), dim=-1)
                d = d.view(batch, w.passages_per_query, *d.shape[1:])
                student = torch.einsum("bqe,bkde->bkqd", q.float(), d.float()).amax(-1).sum(-1)
                loss = torch.nn.functional.kl_div(torch.log_softmax(student, -1), torch.softmax(teacher, -1),
                                                  reduction="batchmean")
        loss.backward()
        opt.step()
        return loss
    seconds = _time(call, lambda _: torch.cuda.synchronize() if gpu else None, steps)
    return {"seconds_per_step": seconds, "attention": attention, "checkpointing": checkpointing,
            "peak_bytes": torch.cuda.max_memory_allocated() if gpu else None}


# ---------------------------------------------------------------------------------------------- driver

def _oom(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}"
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OutOfMemory" in text


def measure(side: str, w: Workload, batches: list[int], steps: int, tiny: bool, remats: list[str]) -> list[dict]:
    """Each batch in turn (the shared one first); per batch the first setting that fits (ours: remat
    policies in order; torch: without, then with checkpointing). Stops at the first batch nothing fits."""
    rows = []
    settings = remats if side == "ours" else [False, True]
    for batch in batches:
        for setting in settings:
            try:
                row = (run_ours(w, batch, steps, tiny, setting) if side == "ours"
                       else run_torch(w, batch, steps, tiny, setting))
            except Exception as e:  # noqa: BLE001  (out of memory is a result; anything else is raised)
                if not _oom(e):
                    raise
                _free(side)
                continue
            rows.append({"batch": batch, **row})
            break
        else:
            rows.append({"batch": batch, "oom": True})
            if batch != batches[0]:
                break
    return rows


def _free(side: str) -> None:
    import gc
    gc.collect()
    if side == "torch":
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    else:
        import jax
        jax.clear_caches()


def _peak(device: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for name, tflops in BF16_PEAK_TFLOPS.items():
        if name.lower() in device.lower() or device.lower() in name.lower():
            return tflops * 1e12
    return None


def _units(w: Workload, batch: int) -> float:
    """Tokens per step (training) or passages per step (encoding)."""
    if not w.train:
        return batch
    return batch * (w.query_length + max(w.passages_per_query, 1) * w.passage_length)


def summarize(workloads: dict, results: dict, peak_override: float | None) -> dict:
    summary = {}
    for name, sides in results.items():
        w = workloads[name]
        unit = "passages/s" if not w.train else "tokens/s"
        out = {"unit": unit}
        for side, rows in sides.items():
            fitted = [r for r in rows if not r.get("oom")]
            for r in fitted:
                r["throughput"] = _units(w, r["batch"]) / r["seconds_per_step"]
                if side == "ours":
                    peak = _peak(r["device"], peak_override)
                    r["mfu"] = r["flops_per_step"] / r["seconds_per_step"] / peak if peak else None
            out[side] = {"shared": next((r for r in fitted if r["batch"] == w.shared_batch), None),
                         "largest": max(fitted, key=lambda r: r["batch"], default=None), "rows": rows}
        for which in ("shared", "largest"):
            ours, theirs = out.get("ours", {}).get(which), out.get("torch", {}).get(which)
            out[f"ratio_{which}"] = ours["throughput"] / theirs["throughput"] if ours and theirs else None
        summary[name] = out
    return summary


def print_summary(summary: dict) -> None:
    for name, out in summary.items():
        print(f"\n{name} ({out['unit']})")
        for side in ("ours", "torch"):
            for which in ("shared", "largest"):
                r = out.get(side, {}).get(which)
                if not r:
                    continue
                extra = f"  MFU {r['mfu']:.1%}" if r.get("mfu") is not None else ""
                if side == "ours":
                    extra += f"  {r['flops_per_step'] / 1e12:.3f} TFLOP/step (model FLOPs), remat {r['remat']}"
                else:
                    extra += f"  attention {r.get('attention')}, checkpointing {r.get('checkpointing', '-')}"
                print(f"  {side:6s} {which:8s} batch {r['batch']:5d}  {r['throughput']:14,.0f}{extra}")
        for which in ("shared", "largest"):
            if out.get(f"ratio_{which}") is not None:
                print(f"  ratio ours/PyTorch at the {which} batch: {out[f'ratio_{which}']:.2f}x")


def _worker(args) -> None:
    workloads = TINY if args.tiny else FULL
    w = workloads[args.worker_workload]
    batches = [w.shared_batch] + [b for b in w.batches if b != w.shared_batch]
    rows = measure(args.worker_side, w, batches, args.steps, args.tiny, args.remat.split(","))
    print("RESULT " + json.dumps(rows))


def _subprocess(side: str, workload: str, argv: list[str]) -> list[dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"}
    out = subprocess.run([sys.executable, __file__, "--worker_side", side, "--worker_workload", workload, *argv],
                         capture_output=True, text=True, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{side} {workload} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="dual,colbert,encode")
    ap.add_argument("--sides", default="ours,torch")
    ap.add_argument("--remat", default="none,dots_saveable,full",
                    help="ours: remat policies tried in order at each batch until one fits")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="tiny models on CPU, in this process (the test suite)")
    ap.add_argument("--peak_tflops", type=float, default=None, help="bf16 peak of the GPU if not in the table")
    ap.add_argument("--output", default=None, help="write the results as JSON here")
    ap.add_argument("--worker_side", choices=["ours", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--worker_workload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_side:
        return _worker(args)
    workloads = TINY if args.tiny else FULL
    names = [n for n in args.workloads.split(",") if n]
    unknown = sorted(set(names) - set(workloads))
    if unknown:
        ap.error(f"--workloads: unknown {unknown}; known: {', '.join(workloads)}")
    start = time.time()
    results: dict = {}
    for name in names:
        w = workloads[name]
        batches = [w.shared_batch] + [b for b in w.batches if b != w.shared_batch]
        for side in args.sides.split(","):
            if args.tiny:  # CPU: no device memory to isolate, and no interpreter start-up per side
                results.setdefault(name, {})[side] = measure(side, w, batches, 2, True, args.remat.split(","))
            else:
                flags = ["--steps", str(args.steps), "--remat", args.remat]
                results.setdefault(name, {})[side] = _subprocess(side, name, flags)
            print(f"{name} {side}: done at {time.time() - start:.0f} s", flush=True)
    summary = summarize(workloads, results, args.peak_tflops)
    print_summary(summary)
    report = {"workloads": {n: dataclasses.asdict(workloads[n]) for n in names}, "results": summary,
              "seconds": time.time() - start, "versions": _versions(), "tiny": args.tiny,
              "date": time.strftime("%Y-%m-%d")}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)
    return report


def _versions() -> dict:
    import importlib.metadata as md
    out = {}
    for package in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


if __name__ == "__main__":
    main()
