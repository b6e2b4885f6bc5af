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
import sys
from pathlib import Path

from polyret.jobs import common


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="polyret train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_gin_flags(p)
    p.add_argument("--multihost", action="store_true", help="call jax.distributed.initialize()")
    p.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-host)")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    args, bindings = common.parse_args_with_gin(p, argv)

    def body() -> None:
        if not args.gin_file:
            raise common.UsageError("give at least one --gin_file (see polyret/gin_configs/runs/)")
        common.setup_logging(None)  # before TensorFlow and JAX are imported; the file once MODEL_DIR is known
        common.initialize_distributed(args.multihost, args.coordinator_address, args.num_processes, args.process_id)
        import jax

        from polyret.configuration import bound_value, parse_gin
        from polyret.training.trainer import train
        parse_gin(args.gin_file, bindings, args.gin_search_paths)  # run_main clears gin afterwards
        # Library logs (absl, orbax, TensorFlow) go to a file beside the checkpoints, one per process.
        name = "train.log" if jax.process_count() == 1 else f"train.process{jax.process_index()}.log"
        model_dir = bound_value("train.model_dir")  # None: train() names the missing binding
        common.setup_logging(Path(model_dir) / name if model_dir else None)
        train()

    # A non-finite loss is reported in one line (its exact step, the last good checkpoint kept), not a traceback.
    return common.run_main("train", body, extra_expected=(FloatingPointError,))


if __name__ == "__main__":
    sys.exit(main())
