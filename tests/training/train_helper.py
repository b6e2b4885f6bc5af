"""Run the train job's gin parsing + train() in this process and dump losses and parameters to an .npz.

  python tests/training/train_helper.py OUT.npz [train job flags...]
Used by the tests to run training in subprocesses (simulated devices, two hosts, SIGKILL)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    import argparse
    from polyret.jobs import common
    parser = argparse.ArgumentParser()
    common.add_gin_flags(parser)
    for flag in ("--coordinator_address", "--num_processes", "--process_id"):
        parser.add_argument(flag, type=int if flag != "--coordinator_address" else str, default=None)
    args, bindings = common.parse_args_with_gin(parser, argv)
    common.initialize_distributed(False, args.coordinator_address, args.num_processes, args.process_id)
    import jax
    from flax import traverse_util
    from polyret.training.trainer import train_from_gin
    result = train_from_gin(args.gin_file, bindings, progress=False)
    if jax.process_index() == 0:
        flat = {}
        for key, value in traverse_util.flatten_dict(result.params).items():
            flat["/".join(key)] = np.asarray(value if value.is_fully_addressable else value.addressable_data(0))
        np.savez(out, losses=np.array(result.losses), devices=jax.device_count(), processes=jax.process_count(),
                 **flat)


if __name__ == "__main__":
    main()
