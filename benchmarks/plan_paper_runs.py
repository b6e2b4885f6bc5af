"""`polyret plan` for every paper run on a realistic mesh: prints the README's markdown table.

  python benchmarks/plan_paper_runs.py [--only NAME ...] [--json_out rows.jsonl]

Each row runs `polyret plan --json` in a subprocess (it re-execs itself with N simulated CPU devices).
Rows marked "bf16+scan+remat" add t5_config/bert_config dtype='bfloat16', scan_layers=True and
remat_policy='full' (the settings a pod run should use); "as configured" leaves the gin alone (float32
activations, Python loop, no remat), to show what they save.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

FAST = ["dtype='bfloat16'", "scan_layers=True", "remat_policy='full'"]
FSDP = ["logical_axis_rules.preset='fsdp'"]


def _encoder(bindings: list[str], family: str) -> list[str]:
    return [f"{family}_config.{b}" for b in bindings]


# name, gin file, mesh, accelerator, extra bindings, note
ROWS = [
    ("swimx_xor (mT5-base, as configured)", "runs/swimx_xor.gin", "data=64", "tpu-v4", [], "as configured"),
    ("swimx_xor (mT5-base)", "runs/swimx_xor.gin", "data=64", "tpu-v4", _encoder(FAST, "t5"), "bf16+scan+remat"),
    ("swimx_miracl (mT5-base)", "runs/swimx_miracl.gin", "data=64", "tpu-v4", _encoder(FAST, "t5"), "bf16+scan+remat"),
    ("swimx_xtreme_up (mT5-base)", "runs/swimx_xtreme_up.gin", "data=16", "tpu-v4", _encoder(FAST, "t5"),
     "bf16+scan+remat"),
    ("swimx_mc4_pretrain (mT5-base)", "runs/swimx_mc4_pretrain.gin", "data=128", "tpu-v4", _encoder(FAST, "t5"),
     "bf16+scan+remat"),
    ("swimx_xor with mT5-large", "runs/swimx_xor.gin", "data=8,fsdp=8", "tpu-v4",
     _encoder(FAST, "t5") + ["t5_config.preset='mt5_large'"] + FSDP, "bf16+scan+remat, FSDP"),
    ("swimx_xor with mT5-XL", "runs/swimx_xor.gin", "data=8,fsdp=8", "tpu-v4",
     _encoder(FAST, "t5") + ["t5_config.preset='mt5_xl'"] + FSDP, "bf16+scan+remat, FSDP"),
    ("mtd_colbert (XLM-R-large, as configured)", "runs/mtd_colbert.gin", "data=8", "a100-80gb", [], "as configured"),
    ("mtd_colbert (XLM-R-large)", "runs/mtd_colbert.gin", "data=8", "a100-40gb", _encoder(FAST, "bert"),
     "bf16+scan+remat"),
    ("mtd_colbert_round_robin (XLM-R-large)", "runs/mtd_colbert_round_robin.gin", "data=8", "a100-40gb",
     _encoder(FAST, "bert"), "bf16+scan+remat"),
    ("retrofit_hard_negatives_lora (mT5-base)", "runs/retrofit_hard_negatives_lora.gin", "data=8", "a100-40gb",
     _encoder(FAST, "t5"), "bf16+scan+remat"),
]


def run_row(gin_file: str, mesh: str, accelerator: str, bindings: list[str]) -> dict:
    cmd = [sys.executable, "-m", "polyret.jobs.plan", f"--gin_file={gin_file}", "--mesh", mesh,
           "--accelerator", accelerator, "--json"] + [f"--gin.{b}" for b in bindings]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*", default=None, help="substrings of row names to run")
    p.add_argument("--json_out", default=None)
    args = p.parse_args()
    rows = [r for r in ROWS if not args.only or any(s in r[0] for s in args.only)]
    print("| run | settings | mesh | params (M) | per device: params / opt state / batch / activations+temp (GiB) "
          "| peak (GiB) | fits | compile (s) |")
    print("|---|---|---|---:|---|---:|---|---:|")
    for name, gin_file, mesh, accelerator, bindings, note in rows:
        start = time.time()
        r = run_row(gin_file, mesh, accelerator, bindings)
        r.update(name=name, mesh_text=mesh, note=note, wall=time.time() - start)
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(json.dumps(r) + "\n")
        verdict = "yes" if r["fits"][accelerator] else "**no**"
        print(f"| {name} | {note} | {mesh} | {r['num_params'] / 1e6:,.0f} | {gib(r['params'])} / "
              f"{gib(r['optimizer'])} / {gib(r['batch'])} / {gib(r['temp'])} | {gib(r['peak'])} | "
              f"{accelerator}: {verdict} | {r['compile_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
