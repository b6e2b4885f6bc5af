"""`polyret plan` against the real step with real weights: mT5-base/large/XL on simulated CPU devices.

  python benchmarks/plan_vs_real.py [--only mt5_base ...] [--batch 16] [--compile_only mt5_xl] [--json_out F]

For each (model, mesh) case, in a fresh subprocess with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8):
  (a) the plan: `polyret.training.plan.read_run` + `plan_memory` (what `polyret plan` calls) on runs/swimx_xor.gin
      with the model swapped as benchmarks/plan_paper_runs.py does, bf16 + scan + full remat, a small global batch;
  (b) the real step: parameters and optimizer state materialised on the mesh by the trainer's own
      `state.setup_state` (random init), a batch of random token ids placed with the trainer's batch sharding, the
      trainer's step jitted with the trainer's shardings and donation, lowered on those real arrays, compiled, and
      XLA's memory_analysis() read; then ONE step is run and the process's resident memory measured:
      (RSS after materialising - RSS before) + (VmHWM during the step - RSS just before it), divided by the
      device count. XLA:CPU allocates every simulated device's buffers inside this one process, so that is the
      independent, per-device check of the plan's peak (arguments + outputs - aliased + temp).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEVICES = 8
FAST = ["t5_config.dtype='bfloat16'", "t5_config.scan_layers=True", "t5_config.remat_policy='full'"]
FSDP = ["logical_axis_rules.preset='fsdp'"]
# model preset, mesh, extra bindings. All 8 simulated devices live in this one process: with replicated
# parameters (data=8) mT5-base's step needs 8 x ~2.7 GiB, more than a 24 GiB machine (killed by the OOM killer
# on 2026-11-22), so every model runs on FSDP meshes (as plan_paper_runs.py does for large/XL).
CASES = [
    ("mt5_base", "data=2,fsdp=4", FSDP),
    ("mt5_base", "fsdp=8", FSDP),
    ("mt5_large", "data=2,fsdp=4", FSDP),
    ("mt5_large", "fsdp=8", FSDP),
    ("mt5_xl", "data=2,fsdp=4", FSDP),
    ("mt5_xl", "fsdp=8", FSDP),
]
GIB = 2 ** 30


def _status_bytes(field: str) -> int:
    """A /proc/self/status memory field (reported in kB) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _trim() -> None:
    """Hand freed heap back to the OS so RSS reflects live bytes (compile garbage, init temporaries)."""
    import ctypes
    import gc
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_case(gin_file: str, bindings: list[str], mesh_text: str, run_step: bool) -> dict:
    import gin
    import jax
    import jax.numpy as jnp
    import numpy as np

    from polyret.training import partitioning as part
    from polyret.training import plan
    from polyret.training.train_checkpoints import CheckpointConfig
    from polyret.training.state import setup_state
    from polyret.training.trainer import make_train_step
    from polyret.models.retrieval_model import build_model

    mesh_sizes = plan.parse_mesh(mesh_text)
    run = plan.read_run([gin_file], bindings)  # gin stays parsed for the real step's rules
    planned = plan.plan_memory(run, mesh_sizes)
    out = {"plan": {**{k: v for k, v in vars(planned).items() if k != "mesh"}, "peak": planned.peak}}

    devices = jax.devices()[:DEVICES]
    mesh = part.create_mesh(devices=devices, **mesh_sizes)
    rules = part.logical_axis_rules()
    model = build_model(run.model_config, run.loss)
    _trim()
    rss0 = _status_bytes("VmRSS")
    with tempfile.TemporaryDirectory() as model_dir:
        state = setup_state(model, mesh, rules, Path(model_dir), None, run.schedule,
                            CheckpointConfig(async_save=False), None, 0)
        state.checkpointer.close()
    converter = model.loss.converter_class(run.task_feature_lengths)
    shapes = plan.abstract_batch(converter, run.task_feature_lengths, run.batch_size, run.rows)
    rng = np.random.default_rng(0)
    vocab = run.model_config.encoder.vocab_size
    sharding = part.batch_sharding(mesh)
    local = {}
    for name, s in shapes.items():
        ids = rng.integers(2, vocab, size=s.shape, dtype=np.int32)
        ids[..., -max(1, s.shape[-1] // 4):] = 0  # some padding, as real batches have
        local[name] = ids
    batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
    jax.block_until_ready((state.params, state.opt_state, batch))
    _trim()
    rss_state = _status_bytes("VmRSS")

    step = jax.jit(make_train_step(model, state.tx, run.schedule, rules, jax.random.PRNGKey(1)),
                   in_shardings=(state.param_sharding, state.opt_sharding, sharding, None),
                   out_shardings=(state.param_sharding, state.opt_sharding, None), donate_argnums=(0, 1))
    start = time.time()
    with jax.set_mesh(mesh):  # as trainer._loop
        compiled = step.lower(state.params, state.opt_state, batch, jnp.int32(0)).compile()
    stats = compiled.memory_analysis()
    real = {"temp": stats.temp_size_in_bytes, "argument": stats.argument_size_in_bytes,
            "output": stats.output_size_in_bytes, "alias": stats.alias_size_in_bytes,
            "compile_seconds": time.time() - start}
    real["peak"] = real["argument"] + real["output"] - real["alias"] + real["temp"]
    out["real"] = real
    out["rss"] = {"before": rss0, "state": rss_state - rss0}
    if run_step:
        _trim()
        rss_pre = _status_bytes("VmRSS")
        _reset_peak()
        start = time.time()
        with jax.set_mesh(mesh):
            params, opt_state, metrics = compiled(state.params, state.opt_state, batch, jnp.int32(0))
            jax.block_until_ready((params, opt_state, metrics))
        out["rss"].update(step_seconds=time.time() - start, pre_step=rss_pre - rss0,
                          step_extra=_status_bytes("VmHWM") - rss_pre, loss=float(metrics["loss"]))
        out["rss"]["growth"] = out["rss"]["state"] + out["rss"]["step_extra"]
    gin.clear_config()
    return out


def child(args: argparse.Namespace) -> None:
    result = run_case(args.gin_file, args.binding, args.mesh, not args.no_step)
    print("RESULT " + json.dumps(result), flush=True)


def gib(n: float) -> str:
    return f"{n / GIB:.3f}"


def parent(args: argparse.Namespace) -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}"}
    cases = [c for c in CASES if not args.only or c[0] in args.only]
    known = {c[0] for c in CASES}
    for preset in [x for x in args.only or [] if x not in known]:  # e.g. mt5_tiny to try the script
        cases += [(preset, "data=8", []), (preset, "data=2,fsdp=4", FSDP)]
    print(f"global batch {args.batch} pairs, lengths {args.lengths}, bf16 + scan + full remat, {DEVICES} CPU devices")
    print("| model | mesh | plan args / temp / peak (GiB/dev) | compiled on real arrays args / temp / peak | "
          "measured RSS growth / dev (GiB) | real/plan peak | RSS/plan peak | within 10% | compile s | step s |")
    print("|---|---|---|---|---:|---:|---:|---|---:|---:|")
    for preset, mesh, extra in cases:
        bindings = FAST + extra + [f"t5_config.preset='{preset}'", f"BATCH_SIZE={args.batch}",
                                   f"TASK_FEATURE_LENGTHS={{'inputs': {args.lengths[0]}, 'targets': {args.lengths[1]}}}"]
        cmd = [sys.executable, __file__, "--child", "--gin_file", args.gin_file, "--mesh", mesh]
        cmd += [a for b in bindings for a in ("--binding", b)]
        if preset in (args.compile_only or []):
            cmd.append("--no_step")
        start = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"| {preset} | {mesh} | FAILED ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]} |",
                  flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        r.update(model=preset, mesh=mesh, wall=time.time() - start, batch=args.batch, lengths=args.lengths)
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(json.dumps(r) + "\n")
        p, c, m = r["plan"], r["real"], r["rss"]
        ratio_real = c["peak"] / p["peak"]
        if "growth" in m:
            per_dev = m["growth"] / DEVICES
            rss_text, ratio_rss = gib(per_dev), f"{per_dev / p['peak']:.3f}"
            ok = abs(ratio_real - 1) <= 0.10 and abs(per_dev / p["peak"] - 1) <= 0.10
            step_s = f"{m['step_seconds']:.0f}"
        else:
            rss_text, ratio_rss, step_s = f"(state only) {gib(m['state'] / DEVICES)}", "compile only", "—"
            ok = abs(ratio_real - 1) <= 0.10
        print(f"| {preset} | {mesh} | {gib(p['argument'])} / {gib(p['temp'])} / {gib(p['peak'])} | "
              f"{gib(c['argument'])} / {gib(c['temp'])} / {gib(c['peak'])} | {rss_text} | {ratio_real:.3f} | "
              f"{ratio_rss} | {'yes' if ok else '**no**'} | {p['compile_seconds']:.0f} + {c['compile_seconds']:.0f} | "
              f"{step_s} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no_step", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mesh", help=argparse.SUPPRESS)
    p.add_argument("--binding", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--gin_file", default="runs/swimx_xor.gin")
    p.add_argument("--only", nargs="*", default=None, help="model presets to run (mt5_base mt5_large mt5_xl)")
    p.add_argument("--compile_only", nargs="*", default=None, help="presets whose step is compiled, not run")
    p.add_argument("--batch", type=int, default=16, help="global batch (pairs)")
    p.add_argument("--lengths", type=int, nargs=2, default=[64, 256], help="query and passage lengths")
    p.add_argument("--json_out", default=None)
    args = p.parse_args()
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
