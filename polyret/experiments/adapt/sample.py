"""Stage 1_sample/: passages sampled uniformly per query language and passage language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.corpus import Corpus
from polyret.experiments.adapt.stage_files import stage_dir, write_jsonl
from polyret.synthesis.sampling import sample_key


def sample_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str) -> dict[str, Any]:
    """For each query language, up to --max_passages passages of each passage language, uniformly at random
    (bottom-k on `sampling.sample_key`, the sample `sample_passages` draws), one JSONL per query language."""
    fingerprint = {"upstream": upstream, "max_passages": config.max_passages, "seed": config.seed,
                   "languages": list(config.languages), "per": "passage language"}

    def build(tmp: Path) -> None:
        for lang in config.languages:
            ids = [p for members in corpus.partitions().values()
                   for p in sorted(members, key=lambda p: (sample_key(config.seed, lang, p), p))[:config.max_passages]]
            write_jsonl(tmp / f"{lang}.jsonl", [{"_id": p, **corpus.records[p], "lang": corpus.languages[p]}
                                                 for p in ids])

    stage_dir(folder, "adapt_sample", fingerprint, build)
    return fingerprint
