"""Encode a corpus with a checkpoint into resumable shards (ids + vectors).

  python -m polyret.jobs.encode --checkpoint CKPT --corpus corpus.jsonl --output_dir embeddings/
Run it again after an interruption: finished shards are kept, the rest are encoded.
"""

from __future__ import annotations

import argparse
import sys

from polyret.io.formats import read_id_text
from polyret.jobs import common


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="polyret encode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_gin_flags(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--corpus", required=True, help="JSONL {_id|docid, title, text} or TSV id<TAB>text")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--side", choices=["left", "right"], default="right", help="right: passages, left: queries")
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--shard_size", type=int, default=10000)
    p.add_argument("--batch_size", type=int, default=64)
    args, bindings = common.parse_args_with_gin(p, argv)

    def body() -> None:
        common.parse_gin(args.gin_file, bindings, args.gin_search_paths)
        from polyret.retrieval.encode import TowerEncoder, encode_corpus_to_shards
        corpus = read_id_text(args.corpus, with_title=args.side == "right")
        encoder = TowerEncoder.from_checkpoint(args.checkpoint, args.batch_size)
        out = encode_corpus_to_shards(encoder, corpus, args.output_dir, args.max_length, args.shard_size, args.side)
        print(f"wrote {out}")

    return common.run_main("encode", body)


if __name__ == "__main__":
    sys.exit(main())
