"""Import a T5X (msgpack or Orbax) or Hugging Face T5/mT5 checkpoint into a polyret checkpoint folder.

  python -m polyret.jobs.import_checkpoint --t5x PATH --output_dir DIR
  python -m polyret.jobs.import_checkpoint --hf PATH --output_dir DIR
"""

from __future__ import annotations

import argparse
import sys

from polyret.jobs import common
from polyret.models import conversion


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="polyret import_checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_gin_flags(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--t5x", help="T5X checkpoint folder (checkpoint_N)")
    src.add_argument("--hf", help="Hugging Face T5/mT5 folder (config.json + safetensors), sentence-transformers ok")
    p.add_argument("--output_dir", required=True, help="polyret checkpoint folder to write")
    p.add_argument("--tower", choices=["dual_encoder", "colbert"], default=None,
                   help="default: colbert for a polyret ColBERT export, else dual_encoder")
    p.add_argument("--pooling", choices=["mean", "first"], default=None,
                   help="dual encoder pooling (default: from the sentence-transformers layout, else mean)")
    p.add_argument("--no_l2_norm", action="store_true", help="dual encoder without L2 normalisation")
    p.add_argument("--projection_dim", type=int, default=None,
                   help="ColBERT projection size when the checkpoint has none (default 128)")
    p.add_argument("--spm_model", default=None, help="SentencePiece model to store with the checkpoint")
    args, args.gin_bindings = common.parse_args_with_gin(p, argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return common.run_main("import_checkpoint", lambda: import_checkpoint(args))


def import_checkpoint(args) -> None:
    common.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
    params, config = conversion.import_checkpoint(
        t5x_path=args.t5x, hf_path=args.hf, tower=args.tower, pooling=args.pooling, l2_norm=not args.no_l2_norm,
        projection_dim=args.projection_dim)
    out = conversion.save_imported(params, config, args.output_dir, args.hf, args.spm_model)
    print(f"wrote {out} ({config.__class__.__name__}, {config.encoder.num_layers} layers, d_model "
          f"{config.encoder.d_model})")


if __name__ == "__main__":
    sys.exit(main())
