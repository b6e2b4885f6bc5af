"""Export a polyret checkpoint to a Hugging Face + sentence-transformers folder (LoRA merged first).

  python -m polyret.jobs.export_hf --checkpoint DIR --output_dir DIR

The export is written beside --output_dir and swapped in when complete: a killed export leaves the
previous one in place. --output_dir may be new, empty or an earlier export; `--overwrite` also replaces
another polyret output there, never a folder with other files (nor the checkpoint being exported).
"""

from __future__ import annotations

import os
import sys

from polyret.io import outputs
from polyret.jobs import common
from polyret.models.model_folder import load_model, load_prompts
from polyret.models.retrieval_model import export_hf


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret export_hf", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--checkpoint", required=True, help="polyret checkpoint folder")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--spm_model", default=None,
                   help="tokenizer to export: a SentencePiece model file, a Hugging Face tokenizer folder, or "
                        "'byte' for ByT5 (default: the one stored in the checkpoint)")
    p.add_argument("--max_seq_length", type=common.at_least(1), default=512)
    common.add_truncate_dim_flag(p)
    common.add_overwrite_flag(p)
    args, bindings = common.parse_args_with_gin(p, argv)
    common.setup_logging(f"{args.output_dir.rstrip('/')}.log", only_if_warned=True)

    def body() -> None:
        common.parse_gin(args.gin_file, bindings, args.gin_search_paths)
        spm = None if args.spm_model in (None, "byte") else args.spm_model
        # Before loading anything: a file, a foreign folder or the checkpoint's own folder is refused.
        outputs.check_target(args.output_dir, "hf_export", args.overwrite, inputs=[args.checkpoint, spm])
        if spm is not None and not os.path.exists(spm):
            raise common.UsageError(f"--spm_model {spm}: no such file or folder")
        params, config, stored_spm = load_model(args.checkpoint)
        with outputs.allow_overwrite(*([args.output_dir] if args.overwrite else [])):
            out = export_hf(params, config, args.output_dir, tokenizer=args.spm_model or stored_spm,
                            max_seq_length=args.max_seq_length, prompts=load_prompts(args.checkpoint),
                            truncate_dim=args.truncate_dim)
        print(f"wrote {out}")

    return common.run_main("export_hf", body)


if __name__ == "__main__":
    sys.exit(main())
