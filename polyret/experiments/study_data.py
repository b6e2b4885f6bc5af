"""Data the shipped studies need beyond the registered tasks: the template data with English -> X qrels (the
MTD test direction), and hard negatives mined with a stage's checkpoint (the template's, or any BEIR folder's
judged split). Referenced from the study files (`Study.setup`, `Prepared.fn`); the real-text (Debian) variants
live in `polyret.experiments.study_debian`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import gin

from polyret.io.formats import read_id_text, read_qrels
from polyret.io.outputs import atomic_write_text


@gin.configurable
def study_template_data(data_dir: str | os.PathLike, num_entities: int = 60) -> Path:
    """The template data (`template_data_setup`) plus qrels/test/en-X.txt: English test queries judged
    against the X corpus (the same person and fact), for every X."""
    from polyret.seqio_tasks.template_tasks import template_data_setup
    from polyret.seqio_tasks.templates import LANGUAGES

    root = Path(data_dir)
    spm = template_data_setup(root, num_entities=num_entities)
    english = read_qrels(root / "qrels" / "test" / "en.mono.txt")
    for lang in LANGUAGES:
        target = root / "qrels" / "test" / f"en-{lang}.txt"
        if lang == "en" or target.exists():
            continue
        lines = [f"{q} 0 {d[:-len('-en')]}-{lang} {rel}\n" for q, docs in sorted(english.items())
                 for d, rel in sorted(docs.items())]
        atomic_write_text(target, "".join(lines))
    return spm


@gin.configurable
def mine_template_negatives(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike,
                            data_dir: str | os.PathLike, languages: Sequence[str] = ("en", "de", "fr", "ru", "ja", "zh", "ar"),
                            num_negatives: int = 3, depth: int = 30) -> list[Path]:
    """Hard negatives for the template training queries, mined with the checkpoint (monolingual and
    cross-lingual, as the demo's round 2): files mined_<section>_<lang>.jsonl for `demo_round2_setup`."""
    from polyret.retrieval.encode import TowerEncoder

    return mine_with_encoder(TowerEncoder.from_checkpoint(checkpoint_dir), Path(data_dir), Path(out_dir), languages,
                             num_negatives, depth)


def mine_with_encoder(encoder: Any, data_dir: Path, out_dir: Path, languages: Sequence[str], num_negatives: int = 3,
                      depth: int = 30) -> list[Path]:
    """`mine_template_negatives` with an encoder already loaded (the demo's round 1)."""
    from polyret.retrieval.mining import mine_hard_negatives, write_jsonl
    from polyret.retrieval.pipeline import encode_and_search

    files = []
    for section in ("mono", "xling"):
        for lang in languages:
            if section == "xling" and lang == "en":
                continue
            corpus = read_id_text(data_dir / "corpus" / f"{lang if section == 'mono' else 'en'}.jsonl")
            queries = read_id_text(data_dir / "queries" / "train" / f"{lang}.jsonl")
            qrels = read_qrels(data_dir / "qrels" / "train" / f"{lang}.{section}.txt")
            run = encode_and_search(encoder, corpus, queries, depth, 32, 48, measure_recall=False).run
            rows, _ = mine_hard_negatives(run, qrels, queries, corpus, num_negatives=num_negatives, rank_start=0,
                                          rank_end=depth, relative_threshold=None, margin=None)
            files.append(write_jsonl(rows, out_dir / f"mined_{section}_{lang}.jsonl"))
    return files


@gin.configurable
def mine_beir_negatives(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, data_dir: str | os.PathLike,
                        folder: str = "train", split: str = "train", num_negatives: int = 3, depth: int = 30,
                        query_max_length: int = 64, passage_max_length: int = 256) -> Path:
    """Hard negatives for a BEIR folder's judged `split` queries, mined with the checkpoint among the folder's
    corpus (`folder` relative to the study's data folder, or absolute): OUT_DIR/mined_<split>.jsonl, for
    `mined_data_setup`. Any judged-relevant passage is never a negative."""
    from polyret.retrieval.encode import TowerEncoder
    return mine_with(TowerEncoder.from_checkpoint(checkpoint_dir), Path(data_dir) / folder, split,
                     Path(out_dir) / f"mined_{split}.jsonl", num_negatives, depth, query_max_length,
                     passage_max_length)


def mine_with(encoder: Any, beir_dir: str | os.PathLike, split: str, out_file: str | os.PathLike,
              num_negatives: int, depth: int, query_max_length: int, passage_max_length: int) -> Path:
    """`mine_beir_negatives` with an encoder already loaded (one load for several folders)."""
    from polyret.io.benchmarks import load_beir
    from polyret.retrieval.mining import mine_hard_negatives, write_jsonl
    from polyret.retrieval.pipeline import encode_and_search

    bench = load_beir(beir_dir, split)
    queries = {q: bench.queries[q] for q in bench.qrels}
    run = encode_and_search(encoder, dict(bench.corpus), queries, depth, query_max_length, passage_max_length,
                            measure_recall=False).run
    rows, _ = mine_hard_negatives(run, bench.qrels, queries, dict(bench.corpus), num_negatives=num_negatives,
                                  rank_start=0, rank_end=depth, relative_threshold=None, margin=None)
    return write_jsonl(rows, out_file)
