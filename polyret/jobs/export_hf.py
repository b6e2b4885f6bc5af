"""Export a polyret checkpoint to a Hugging Face + sentence-transformers folder (LoRA merged first).

  python -m polyret.jobs.export_hf --checkpoint DIR --output_dir DIR
"""

from __future__ import annotations

import argparse
import sys

from polyret.jobs import common
from polyret.models.checkpoint import load_model
from polyret.models.hf import export_hf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="polyret export_hf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_gin_flags(p)
    p.add_argument("--checkpoint", required=True, help="polyret checkpoint folder")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--spm_model", default=None,
                   help="SentencePiece model for the tokenizer (default: the one stored in the checkpoint); "
                        "'byte' for ByT5")
    p.add_argument("--max_seq_length", type=int, default=512)
    args, bindings = common.parse_args_with_gin(p, argv)

    def body() -> None:
        common.parse_gin(args.gin_file, bindings, args.gin_search_paths)
        params, config, stored_spm = load_model(args.checkpoint)
        out = export_hf(params, config, args.output_dir, tokenizer=args.spm_model or stored_spm,
                        max_seq_length=args.max_seq_length)
        print(f"wrote {out}")

    return common.run_main("export_hf", body)


if __name__ == "__main__":
    sys.exit(main())
