"""Memory plan of a training run for a mesh, before a pod is booked (no weights, no data).

  polyret plan --gin_file=runs/swimx_xor.gin --mesh data=8,fsdp=8 --accelerator tpu-v4 \
      --gin.logical_axis_rules.preset="'fsdp'" --gin.t5_config.dtype="'bfloat16'" \
      --gin.t5_config.scan_layers=True --gin.t5_config.remat_policy="'full'"

Compiles the trainer's step for the mesh on simulated CPU devices (re-running itself with
XLA_FLAGS=--xla_force_host_platform_device_count=N when needed) and prints per-device parameters,
optimizer state, batch and XLA's temporaries (activations), and whether the peak fits --accelerator.
REQUIRED macros that do not change shapes (MODEL_DIR, data paths, VOCABULARY) may stay unset.
Accelerators: tpu-v4, tpu-v5e, tpu-v5p, a100-40gb, a100-80gb, h100-80gb, h200-141gb.

--remat_policy auto --accelerator X plans the step under each remat policy, cheapest in compute first
(none, dots_saveable, offload_dots, full), stops at the first whose peak fits X and prints it with the
gin binding to use; --remat_policy NAME plans with that policy instead of the run's.
"""

from __future__ import annotations

import json
import math
import os
import sys

from polyret.jobs import common
from polyret.models.layer_stack import REMAT_POLICIES

_FLAG = "--xla_force_host_platform_device_count"


def _ensure_devices(count: int, argv: list[str]) -> None:
    """Re-exec this job with enough simulated CPU devices (JAX reads XLA_FLAGS once, at start-up)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if f"{_FLAG}=" in flags and int(flags.split(f"{_FLAG}=")[1].split()[0]) >= count:
        return
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": " ".join([f for f in flags.split() if not f.startswith(_FLAG)] + [f"{_FLAG}={count}"])}
    os.execve(sys.executable, [sys.executable, "-m", "polyret.jobs.plan", *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = common.parser("polyret plan", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--mesh", required=True, help="AXIS=SIZE,... over data, fsdp, model (missing axes are 1)")
    p.add_argument("--accelerator", default=None, help="say whether the peak fits this accelerator's memory")
    p.add_argument("--rows", type=common.at_least(1), default=None,
                   help="passages per query (distillation; default %%MTD_PASSAGES) or hard negatives per query "
                        "(default 7)")
    p.add_argument("--remat_policy", default=None, choices=["auto", *REMAT_POLICIES],
                   help="plan with this remat policy; 'auto' (with --accelerator): the cheapest that fits")
    p.add_argument("--corpus_size", type=common.at_least(1), default=1_000_000,
                   help="passages of the ScaNN index whose bytes a dual encoder's plan gives at each vector width "
                        "(the full one and a MatryoshkaLoss's dims)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON line")
    args, bindings = common.parse_args_with_gin(p, argv)

    def body() -> None:
        from polyret.training import plan
        if not args.gin_file:
            raise common.UsageError("give the run's --gin_file (see polyret/gin_configs/runs/)")
        try:
            mesh = plan.parse_mesh(args.mesh)
        except plan.ConfigError as e:
            raise common.UsageError(f"--mesh: {e}") from None
        if args.accelerator is not None and args.accelerator not in plan.ACCELERATORS:
            raise common.UsageError(f"--accelerator {args.accelerator!r} is not one of {', '.join(plan.ACCELERATORS)}")
        if args.remat_policy == "auto" and args.accelerator is None:
            raise common.UsageError("--remat_policy auto needs --accelerator (the memory the policy must fit)")
        _ensure_devices(math.prod(mesh.values()), argv)
        result = plan.plan_run(args.gin_file, bindings, mesh, args.gin_search_paths or (), args.rows,
                               args.remat_policy, args.accelerator, args.corpus_size)
        if args.remat_policy == "auto":
            _print_auto(*result, args.accelerator, args.json)
        elif args.json:
            row = {k: v for k, v in vars(result).items()}
            row["peak"] = result.peak
            if args.accelerator:
                row["fits"] = {args.accelerator: result.fits(args.accelerator)}
            print(json.dumps(row))
        else:
            print(result.summary(args.accelerator))

    return common.run_main("plan", body)


def _print_auto(chosen: str | None, plans: dict, accelerator: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"remat_policy": chosen, "accelerator": accelerator,
                          "peaks": {policy: result.peak for policy, result in plans.items()}}))
        return
    for policy, result in plans.items():
        verdict = "fits" if result.fits(accelerator) else "does not fit"
        print(f"remat_policy {policy!r}: peak per device {result.peak / 2**30:.2f} GiB, {verdict}")
    if chosen is None:
        print(f"no remat policy fits {accelerator}: shard more (fsdp), shrink the batch, or use a larger chip")
        return
    print(f"\nchosen: remat_policy {chosen!r} (bind it on the encoder config, e.g. "
          f"--gin.t5_config.remat_policy=\"'{chosen}'\")\n")
    print(plans[chosen].summary(accelerator))


if __name__ == "__main__":
    sys.exit(main())
