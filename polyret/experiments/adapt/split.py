"""Stage 4_split/: held-out synthetic queries and the SWIM-IR training file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.stage_files import read_jsonl, stage_dir, write_jsonl
from polyret.synthesis.filters import normalize_query


def _heldout(passage_id: str, fraction: float, seed: int) -> bool:
    h = hashlib.blake2b(f"{seed}\x1fheldout\x1f{passage_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") < fraction * 2 ** 64


def split_stage(config: AdaptConfig, folder: Path, upstream: str, filter_dir: Path) -> dict[str, Any]:
    """Held-out synthetic queries: every query of a held-out passage and of its translations (one `group`),
    so no held-out passage is trained on in any language; a training query with the text of a held-out one
    (asked of another language's copy) is dropped, so no held-out query is trained on either."""
    fingerprint = {"upstream": upstream, "heldout_fraction": config.heldout_fraction, "seed": config.seed,
                   "held_out_by": "group"}

    def build(tmp: Path) -> None:
        train, heldout = [], []
        for r in read_jsonl(filter_dir / "kept.jsonl"):
            unit = r.get("group", r["passage_id"])
            (heldout if _heldout(unit, config.heldout_fraction, config.seed) else train).append(r)
        asked = {(r["code"], normalize_query(r["query"])) for r in heldout}
        train = [r for r in train if (r["code"], normalize_query(r["query"])) not in asked]
        write_jsonl(tmp / "train.jsonl", [{"_id": r["_id"], "lang": r["lang"], "code": r["code"],
                                            "query": r["query"], "title": r["title"], "text": r["text"],
                                            "passage_id": r["passage_id"],
                                            **({"group": r["group"]} if "group" in r else {})} for r in train])
        write_jsonl(tmp / "heldout_queries.jsonl", [{"_id": r["_id"], "text": r["query"], "lang": r["code"]}
                                                     for r in heldout])
        with open(tmp / "heldout_qrels.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{r['_id']}\t{r['passage_id']}\t1\n" for r in heldout)

    stage_dir(folder, "adapt_split", fingerprint, build)
    return fingerprint
