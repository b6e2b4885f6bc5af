"""Train a retriever, configured by gin (t5x conventions).

  python -m polyret.jobs.train --gin_file=runs/swimx_xor.gin \
      --gin.MODEL_DIR="'/ckpt/swimx'" --gin.MIXTURE_OR_TASK_NAME="'swim_ir_cross_lingual'" \
      --gin.TRAIN_STEPS=100000 --gin.INITIAL_CHECKPOINT_PATH="'/ckpt/mt5_base_imported'"

Gin files are looked up in --gin_search_paths and in polyret's own gin_configs/ (shipped with the package).
Multi-host (TPU pod slice, SLURM, several GPU hosts): add --multihost; jax.distributed.initialize() then
reads the cluster from the environment, or pass --coordinator_address, --num_processes and --process_id.
Run the same command on every host; each reads its own shard of the data.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import gin

from polyret import GIN_CONFIGS_DIR


def parse_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="polyret train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    p.add_argument("--gin_search_paths", default="", help="comma-separated folders to find gin files in")
    p.add_argument("--multihost", action="store_true", help="call jax.distributed.initialize()")
    p.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-host)")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    args, rest = p.parse_known_args(argv)
    bindings = []
    for item in rest:
        if not item.startswith("--gin."):
            p.error(f"unknown flag {item!r} (gin bindings are written --gin.NAME=VALUE)")
        bindings.append(item[len("--gin."):])
    return args, bindings


def initialize_distributed(args: argparse.Namespace) -> None:
    if not (args.multihost or args.coordinator_address):
        return
    import jax
    # CPU hosts need a collectives backend (no effect on TPU/GPU); must be set before the backend starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                               process_id=args.process_id)


def resolve_gin_file(name: str, search_paths: list[str]) -> str:
    """A gin file as given, or found under a search path or polyret's own gin_configs/."""
    for folder in ["", *search_paths, str(GIN_CONFIGS_DIR)]:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise IOError(f"gin file {name!r} not found (looked in ., {', '.join(search_paths + [str(GIN_CONFIGS_DIR)])})")


def parse_gin(files: list[str], bindings: list[str], search_paths: list[str]) -> None:
    files = [resolve_gin_file(f, search_paths) for f in files]
    for path in search_paths + [str(GIN_CONFIGS_DIR)]:
        gin.add_config_file_search_path(path)
    # gin logs an error for every search-path miss before it finds a file; a real miss still raises.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    finally:
        root.setLevel(level)
    gin.finalize()


def main(argv: list[str] | None = None) -> int:
    args, bindings = parse_flags(sys.argv[1:] if argv is None else argv)
    if not args.gin_file:
        print("polyret train: give at least one --gin_file (see polyret/gin_configs/runs/)", file=sys.stderr)
        return 2
    initialize_distributed(args)
    import polyret.training.trainer  # noqa: F401  (registers the configurables the gin files name)
    try:
        parse_gin(args.gin_file, bindings, [p for p in args.gin_search_paths.split(",") if p])
    except (ValueError, KeyError, IOError) as e:
        print(f"polyret train: gin configuration error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    from polyret.training.trainer import ConfigError, train
    try:
        train()
    except ConfigError as e:
        print(f"polyret train: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
