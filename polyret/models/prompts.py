"""A model's prompts: the text put before every query and every passage (e5's "query: " / "passage: ",
BGE's and GTE's instructions, Qwen3-Embedding's "Instruct: ...\\nQuery: "), as sentence-transformers applies
them in `encode_query` / `encode_document`.

They belong to the model: read on import from `config_sentence_transformers.json` (`prompts`,
`default_prompt_name`), kept in a polyret model folder as `prompts.json`, applied by every job that tokenizes
text for the model (train, encode, evaluate, mine_negatives, adapt, studies), and written back on export.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PROMPTS_FILE = "prompts.json"
ST_CONFIG = "config_sentence_transformers.json"
# sentence-transformers' encode_document looks these names up in this order.
_ST_DOCUMENT_NAMES = ("document", "passage", "corpus")


@dataclass(frozen=True)
class Prompts:
    query: str = ""
    passage: str = ""

    def __bool__(self) -> bool:
        return bool(self.query or self.passage)

    def override(self, query: str | None = None, passage: str | None = None) -> "Prompts":
        """These prompts with the given ones replaced (None keeps the model's; '' removes it)."""
        return replace(self, **{k: v for k, v in (("query", query), ("passage", passage)) if v is not None})

    def for_side(self, side: str) -> str:
        """'left' (queries) or 'right' (passages)."""
        return self.query if side == "left" else self.passage

    def to_sentence_transformers(self) -> dict[str, str]:
        """The `prompts` entry of config_sentence_transformers.json (encode_query / encode_document's names)."""
        return {k: v for k, v in (("query", self.query), ("document", self.passage)) if v}


def from_sentence_transformers(folder: str | os.PathLike) -> Prompts:
    """The prompts of a sentence-transformers folder: its 'query' and 'document' (or 'passage' / 'corpus')
    prompts, the default prompt where one of them is missing; none without the file."""
    config_file = Path(folder) / ST_CONFIG
    if not config_file.is_file():
        return Prompts()
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}: not valid JSON: {e}") from e
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"{config_file}: field 'prompts' must map prompt names to strings")
    default = prompts.get(config.get("default_prompt_name") or "", "")
    passage = next((prompts[n] for n in _ST_DOCUMENT_NAMES if n in prompts), default)
    return Prompts(query=prompts.get("query", default), passage=passage)


def read_prompts(folder: str | os.PathLike) -> Prompts:
    """`prompts.json` of a polyret model folder or MODEL_DIR; none if it has no such file."""
    prompts_file = Path(folder) / PROMPTS_FILE
    if not prompts_file.is_file():
        return Prompts()
    try:
        stored = json.loads(prompts_file.read_text())
        return Prompts(query=str(stored.get("query", "")), passage=str(stored.get("passage", "")))
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{prompts_file}: not a prompts file ({{'query': ..., 'passage': ...}}): {e}") from e


def write_prompts(folder: str | os.PathLike, prompts: Prompts) -> None:
    """Keep `prompts` in a model folder (no file when there are none)."""
    if prompts:
        (Path(folder) / PROMPTS_FILE).write_text(json.dumps(asdict(prompts), indent=2, ensure_ascii=False))


def choose_prompts(model_prompts: Prompts, query: str | None, passage: str | None, where: str) -> Prompts:
    """The model's prompts with a run's overrides; one warning when a model that has prompts runs without."""
    chosen = model_prompts.override(query, passage)
    dropped = [side for side in ("query", "passage") if getattr(model_prompts, side) and not getattr(chosen, side)]
    if dropped:
        logging.getLogger("polyret").warning(
            "%s: the model has a %s prompt (%s) but runs without it", where, " and ".join(dropped),
            ", ".join(repr(getattr(model_prompts, s)) for s in dropped))
    return chosen


def write_to_sentence_transformers(folder: str | os.PathLike, prompts: Prompts) -> None:
    """Set `prompts` in every config_sentence_transformers.json of an export (separate towers have two)."""
    for config_file in Path(folder).rglob(ST_CONFIG):
        config = json.loads(config_file.read_text())
        config["prompts"] = prompts.to_sentence_transformers()
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False))
