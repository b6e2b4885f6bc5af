"""Encode a corpus with a checkpoint into resumable shards (ids + vectors).

  python -m polyret.jobs.encode --checkpoint CKPT --corpus corpus.jsonl --output_dir embeddings/
Run it again after an interruption: finished shards are kept, the rest are encoded.
"""

from __future__ import annotations

import sys

from polyret.io.fingerprint import checkpoint_step
from polyret.io.formats import read_id_text
from polyret.jobs import common


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret encode", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--corpus", help="JSONL/parquet {_id|docid, title, text} or TSV (id text [title])")
    p.add_argument("--dataset", help="ir_datasets id or a BEIR / MIRACL / XOR-Retrieve folder instead of --corpus "
                                     "(--side left encodes its queries)")
    p.add_argument("--split", help="--dataset folder's split")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--side", choices=["left", "right"], default="right", help="right: passages, left: queries")
    p.add_argument("--max_length", type=common.at_least(2), default=256)
    p.add_argument("--shard_size", type=common.at_least(1), default=10000)
    p.add_argument("--batch_size", type=common.at_least(1), default=64)
    common.add_prompt_flags(p)
    common.add_truncate_dim_flag(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace embeddings of another corpus/checkpoint/settings in --output_dir (written beside "
                        "it and swapped in when complete)")
    args, bindings = common.parse_args_with_gin(p, argv)
    common.setup_logging(f"{args.output_dir.rstrip('/')}.log", only_if_warned=True)
    if bool(args.corpus) == bool(args.dataset):
        p.error("give --corpus or --dataset (one of them)")

    def body() -> None:
        common.parse_gin(args.gin_file, bindings, args.gin_search_paths)
        from polyret.retrieval.encode import TowerEncoder, encode_corpus_to_shards
        if args.dataset:
            from polyret.io.benchmarks import load_benchmark
            bench = load_benchmark(args.dataset, args.split)
            corpus = bench.corpus if args.side == "right" else bench.queries
        else:
            corpus = read_id_text(args.corpus, with_title=args.side == "right")
        encoder = TowerEncoder.from_checkpoint(args.checkpoint, args.batch_size, args.query_prompt,
                                               args.passage_prompt, args.truncate_dim)
        # Recorded with the shards: a resume with another corpus, checkpoint or settings is refused.
        source = {"checkpoint_step": checkpoint_step(args.checkpoint)}
        out = encode_corpus_to_shards(encoder, corpus, args.output_dir, args.max_length, args.shard_size, args.side,
                                      fingerprint=source, overwrite=args.overwrite)
        print(f"wrote {out}")

    return common.run_main("encode", body)


if __name__ == "__main__":
    sys.exit(main())
