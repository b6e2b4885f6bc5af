"""The one-line stops and warnings: exemplars for every query language, the base tokenizer's unknown-token
rate, enough pairs to train on, a usable --labels reranker."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Sequence

from polyret.experiments.adapt.config import MULTILINGUAL_BASE, AdaptConfig
from polyret.experiments.adapt.report import filter_acceptance
from polyret.models.model_folder import stored_tokenizer
from polyret.retrieval.tokenize import Tokenizer
from polyret.synthesis.exemplars import DEFAULT_EXEMPLARS, exemplars_for, read_exemplars


def check_languages(config: AdaptConfig) -> list:
    """The exemplars for every query language, or one line naming the languages the file does not cover
    (before any request)."""
    path = config.exemplars or DEFAULT_EXEMPLARS
    exemplars = read_exemplars(path, "en")
    covered = sorted({e.query_language for e in exemplars})
    missing = [lang for lang in config.languages if lang not in covered]
    if missing:
        raise ValueError(f"--languages: {', '.join(missing)} not covered by the prompt exemplars {path} (they have "
                         f"queries in {', '.join(covered)}); add exemplars for {', '.join(missing)} with --exemplars")
    chosen = []
    for lang in config.languages:
        shots = exemplars_for(exemplars, lang, "en", path)
        if config.num_shots is not None and len(shots) < config.num_shots:
            raise ValueError(f"--num_shots {config.num_shots}: {path} has only {len(shots)} exemplars for {lang}")
        chosen += shots
    return chosen


UNK_WARNING_RATE = 0.02


def unknown_token_warning(base_dir: Path, texts: Sequence[str], sample: int = 500) -> str | None:
    """A warning when the base's tokenizer maps more than 2% of a sample of the passages' tokens to its unknown
    token (all-MiniLM-L6-v2's English WordPiece on Japanese, say); None otherwise."""
    tokenizer = Tokenizer(stored_tokenizer(base_dir))
    unk = tokenizer.hf.unk_id if tokenizer.hf is not None else None
    if unk is None:  # SentencePiece with byte fallback, bytes: nothing is unknown
        return None
    rows = tokenizer.encode(list(texts)[:sample], 10 ** 6)
    total = sum(len(r) for r in rows)
    rate = sum(r.count(unk) for r in rows) / max(total, 1)
    if rate <= UNK_WARNING_RATE:
        return None
    return (f"the base's tokenizer does not know {rate:.0%} of the passages' tokens ({MULTILINGUAL_BASE} covers "
            f"about 100 languages: --base {MULTILINGUAL_BASE}, pip install 'polyret[e5]')")


def check_enough_pairs(config: AdaptConfig, out: Path, train_dir: Path) -> None:
    """Stop in one line, before the training that reads train_dir/train.jsonl, when fewer training pairs
    survived than one batch holds."""
    kept = sum(1 for _ in open(train_dir / "train.jsonl", encoding="utf-8"))
    if kept >= config.batch_size:
        return
    acceptance = filter_acceptance(config, out / "1_sample", out / "2_generate", out / "3_filter")
    requested = sum(a["requested"] for a in acceptance.values())
    reasons = collections.Counter()
    for a in acceptance.values():
        reasons.update(a["dropped"])
        reasons["round_trip"] += a["after_sap_filters_and_duplicates"] - a["kept"]
    later_drops = train_dir / "dropped.jsonl"  # written by a filter after the split (round 1's round trip)
    if later_drops.exists():
        reasons["round_trip"] += sum(1 for _ in open(later_drops, encoding="utf-8"))
    why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common() if n)
    raise ValueError(f"{kept} of {requested} synthetic queries kept for training ({why or 'none dropped'}), fewer "
                     f"than one batch (--batch_size {config.batch_size}); see "
                     f"{train_dir if later_drops.exists() else out / '3_filter'}")


def labels_checkpoint(labels: str) -> str:
    """'cross_encoder:CKPT' -> CKPT (a polyret cross-encoder checkpoint), or one line saying what is wrong."""
    kind, _, path = labels.partition(":")
    if kind != "cross_encoder" or not path:
        raise ValueError(f"--labels {labels!r}: expected cross_encoder:CHECKPOINT (a polyret cross-encoder)")
    if not (Path(path) / "model_config.json").is_file():
        raise ValueError(f"--labels: {path} is not a polyret checkpoint (no model_config.json); import a "
                         "cross-encoder with `polyret import_checkpoint --tower cross_encoder` or train one")
    return path
