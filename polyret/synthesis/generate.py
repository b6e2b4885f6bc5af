"""SAP query generation end to end on one machine: sample passages, prompt, parse, filter, write.

`SapGenerator` turns one sampled passage plus the LLM's reply into a SWIM-IR record or a drop reason;
the Beam pipeline (beam_sap.py) uses the same class, so both write the same records. `generate_sap`
runs it in chunks with `ResumableFiles`: a killed run restarted with the same settings continues where
it stopped and ends with the same file as an uninterrupted run.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm import tqdm

from polyret.io import preemption
from polyret.io.languages import language_name
from polyret.synthesis.exemplars import Exemplar, exemplars_for
from polyret.synthesis.filters import FilterConfig, QueryFilter, filter_fingerprint
from polyret.synthesis.llm import Completion, Messages, Usage
from polyret.synthesis.resumable import ResumableFiles
from polyret.synthesis.sampling import sample_passages
from polyret.synthesis.sap import PROMPT_MODES, ParseFailure, build_prompt, parse_direct_reply, parse_reply

MODES = ("cross_lingual", "monolingual")
log = logging.getLogger(__name__)


@dataclasses.dataclass
class SapConfig:
    languages: tuple[str, ...]
    mode: str = "cross_lingual"  # cross_lingual: English passages; monolingual: passages in the language
    passages_per_language: int = 1000
    seed: int = 0
    source_language: str = "en"  # the passages' language in cross-lingual mode
    chunk_size: int = 64  # prompts between two checkpoints of the output
    prompt_mode: str = "summarize_then_ask"  # or "direct" (SWIM-X's ablation: no summary)
    num_shots: int | None = None  # exemplars per prompt (None: every exemplar of the language)

    def __post_init__(self):
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r}")
        if self.num_shots is not None and self.num_shots < 0:
            raise ValueError(f"num_shots must be at least 0, got {self.num_shots}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.languages:
            raise ValueError("no target languages")

    def passage_language(self, query_language: str) -> str:
        return self.source_language if self.mode == "cross_lingual" else query_language


class SapGenerator:
    """Prompt for a work item, and the record (or drop reason) its reply gives."""

    def __init__(self, exemplars: Sequence[Exemplar], config: SapConfig, query_filter: QueryFilter,
                 exemplar_path: str | os.PathLike = "exemplars"):
        self.config = config
        self.filter = query_filter
        # Checked up front: a missing language fails before any request is made.
        self.shots = {lang: exemplars_for(list(exemplars), lang, config.passage_language(lang), exemplar_path)
                      for lang in config.languages}
        if config.num_shots is not None:
            short = {lang: len(s) for lang, s in self.shots.items() if len(s) < config.num_shots}
            if short:
                lang, have = next(iter(short.items()))
                raise ValueError(f"--num_shots {config.num_shots}: {exemplar_path} has only {have} exemplars "
                                 f"for {lang}")
            self.shots = {lang: s[:config.num_shots] for lang, s in self.shots.items()}

    def prompt(self, item: Mapping[str, Any]) -> Messages:
        return build_prompt(self.shots[item["language"]], item["title"], item["text"], item["language"],
                            self.config.prompt_mode)

    def record(self, item: Mapping[str, Any], completion: Completion) -> tuple[dict[str, Any] | None, str | None]:
        """(SWIM-IR record, None) or (None, drop reason). Duplicates are the caller's last check."""
        if completion.error is not None:
            return None, "llm_error"
        try:
            parse = parse_direct_reply if self.config.prompt_mode == "direct" else parse_reply
            summary, query = parse(completion.text)
        except ParseFailure as e:
            return None, e.reason
        lang = item["language"]
        reason = self.filter.reject_reason(query, item["text"], lang)
        if reason is not None:
            return None, reason
        return {"_id": f"{item['passage_id']}-{lang}", "lang": language_name(lang), "code": lang,
                "query": query, "title": item["title"], "text": item["text"], "summary": summary,
                "passage_id": item["passage_id"]}, None


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def corpus_fingerprint(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Identity of a corpus given as a file or a glob over shards (sizes + content hashes), so that a
    resume over changed passages is refused instead of mixing two corpora in one output."""
    from polyret.io.fingerprint import file_fingerprint
    files = sorted(glob.glob(os.fspath(path))) or [os.fspath(path)]
    return [file_fingerprint(f) for f in files if os.path.isfile(f)]


def generate_sap(corpora: Mapping[str, str | os.PathLike], exemplars: Sequence[Exemplar], backend: Any,
                 config: SapConfig, output: str | os.PathLike, filter_config: FilterConfig | None = None,
                 safety: Callable[[str], bool] | None = None, fingerprint: Mapping[str, Any] | None = None,
                 exemplar_path: str | os.PathLike = "exemplars") -> dict[str, Any]:
    """Writes SWIM-IR JSONL to `output` (+ `.rejected.jsonl` with raw replies of dropped items, and a
    `.state.json`); returns the run summary. Resumes a run killed earlier with the same settings."""
    output = Path(output)
    generator = SapGenerator(exemplars, config, QueryFilter(filter_config, safety), exemplar_path)
    items = sample_passages(corpora, config.languages, config.passages_per_language, config.seed)
    settings = {"config": dataclasses.asdict(config), "corpora": {k: os.fspath(v) for k, v in corpora.items()},
                "corpus_files": {k: corpus_fingerprint(v) for k, v in corpora.items()},
                "filter": filter_fingerprint(filter_config), **(fingerprint or {})}
    files = ResumableFiles({"records": output, "rejected": output.with_name(output.name + ".rejected.jsonl")},
                           output.with_name(output.name + ".state.json"), settings)
    progress = {"done": 0, "kept": 0, "dropped": {}, "usage": {}, "seconds": 0.0, **files.progress}
    if files.complete:
        log.info("%s is complete (%d records); nothing to do", output, progress["kept"])
        return progress
    generator.filter.mark_seen((r["query"], r["code"]) for r in map(json.loads, files.lines("records")))
    dropped, usage = collections.Counter(progress["dropped"]), Usage(**progress["usage"])
    start, seconds = time.monotonic(), progress["seconds"]
    # SIGTERM/SIGINT: the chunk in flight is finished and recorded, then the run stops (rerun to resume).
    with preemption.graceful_stop(), tqdm(total=len(items), initial=progress["done"], desc="SAP",
                                          unit="passage") as bar:
        for begin in range(progress["done"], len(items), config.chunk_size):
            chunk = items[begin:begin + config.chunk_size]
            before = dataclasses.replace(backend.usage)
            completions = backend.generate([generator.prompt(item) for item in chunk])
            kept, rejected = [], []
            for item, completion in zip(chunk, completions):
                record, reason = generator.record(item, completion)
                if (record is not None and generator.filter.config.drop_duplicates
                        and generator.filter.is_duplicate(record["query"], record["code"])):
                    record, reason = None, "duplicate"
                if record is None:
                    dropped[reason] += 1
                    rejected.append(_json({"passage_id": item["passage_id"], "code": item["language"],
                                           "reason": reason, "reply": completion.text, "error": completion.error}))
                else:
                    kept.append(_json(record))
            usage.add(backend.usage.since(before))
            progress = {"done": begin + len(chunk), "kept": progress["kept"] + len(kept), "dropped": dict(dropped),
                        "usage": dataclasses.asdict(usage), "seconds": seconds + time.monotonic() - start}
            files.append({"records": kept, "rejected": rejected}, progress)
            bar.update(len(chunk))
            bar.set_postfix(kept=progress["kept"], dropped=sum(dropped.values()))
            preemption.stop_if_requested(f"stopped after {progress['done']} of {len(items)} passages; "
                                         f"everything written to {output} is kept; rerun the same command to "
                                         "resume")
    files.finish()
    log.info("SAP: %s", summary_line(progress))
    return progress


def summary_line(progress: Mapping[str, Any]) -> str:
    usage = progress.get("usage", {})
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(progress.get("dropped", {}).items())) or "none"
    return (f"{progress['done']} passages, {progress['kept']} queries kept, dropped: {dropped}; "
            f"{usage.get('requests', 0)} requests ({usage.get('retries', 0)} retries), "
            f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens; "
            f"{progress.get('seconds', 0.0):.1f} s")
