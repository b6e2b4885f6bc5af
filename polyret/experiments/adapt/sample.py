"""Stage 1_sample/: passages sampled uniformly per query language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.corpus import Corpus
from polyret.experiments.adapt.stage_files import stage_dir, write_jsonl
from polyret.synthesis.sampling import sample_key


def sample_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str) -> dict[str, Any]:
    """Up to --max_passages passages per query language, uniformly at random (bottom-k on
    `sampling.sample_key`, the sample `sample_passages` draws), one JSONL per language."""
    fingerprint = {"upstream": upstream, "max_passages": config.max_passages, "seed": config.seed,
                   "languages": list(config.languages)}

    def build(tmp: Path) -> None:
        for lang in config.languages:
            ids = sorted(corpus.texts, key=lambda p: (sample_key(config.seed, lang, p), p))[:config.max_passages]
            write_jsonl(tmp / f"{lang}.jsonl", [{"_id": p, **corpus.records[p], "lang": corpus.languages[p]}
                                                 for p in ids])

    stage_dir(folder, "adapt_sample", fingerprint, build)
    return fingerprint
