"""Stage 2_generate/: SAP queries from the LLM server (resumable; usage counted)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.stage_files import stage_file
from polyret.io.fingerprint import digest
from polyret.io.formats import iter_records
from polyret.synthesis.filters import FilterConfig
from polyret.synthesis.generate import SapConfig, generate_sap
from polyret.synthesis.llm import BackendConfig, LLMUnreachable


class StopOnError:
    """A backend that stops the run at the first request that failed for good, naming the server and the
    HTTP status (the items of that chunk are not written, so a rerun asks for them again)."""

    def __init__(self, backend: Any, url: str):
        self.backend, self.url = backend, url

    @property
    def usage(self):
        return self.backend.usage

    def generate(self, prompts):
        completions = self.backend.generate(prompts)
        failed = next((c for c in completions if c.error is not None), None)
        if failed is not None:
            status = f"HTTP {failed.status}" if failed.status else "no HTTP status"
            reason = " ".join(failed.error.split())[:160]
            raise LLMUnreachable(f"the LLM server at {self.url} answered {status} ({reason})")
        return completions

    def close(self) -> None:
        getattr(self.backend, "close", lambda: None)()


def generate_stage(config: AdaptConfig, exemplars: list, folder: Path, upstream: str,
                   sample_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """SAP queries per language, one round per --queries_per_passage (later rounds sample, seed = round);
    -> (fingerprint, {round: generate_sap's progress})."""
    # Duplicates are dropped by the filter stage, per (query language, passage language): in a collection of
    # translations the same question asked of each language's copy is a different training pair.
    # Language ID chooses among the languages in play (queries, passages, English), not all 75 lingua knows:
    # among all of them short headings go astray ("Kernel parameters" -> Danish).
    passage_languages = {r["lang"] for lang in config.languages
                         for _, r in iter_records(sample_dir / f"{lang}.jsonl") if r.get("lang")}
    candidates = tuple(sorted(set(config.languages) | passage_languages | {"en"}))
    filters = FilterConfig(check_language=config.check_language, drop_duplicates=False, langid_candidates=candidates)
    fingerprint = {"upstream": upstream, "model": config.llm_model, "prompt_mode": config.prompt_mode,
                   "num_shots": config.num_shots, "exemplars": [dataclasses.asdict(e) for e in exemplars],
                   "queries_per_passage": config.queries_per_passage, "temperature": config.temperature,
                   "max_tokens": config.max_tokens, "filter": dataclasses.asdict(filters)}
    folder.mkdir(parents=True, exist_ok=True)
    stage_file(folder / "stage.json", fingerprint)
    progress = {}
    corpora = {lang: str(sample_dir / f"{lang}.jsonl") for lang in config.languages}
    sampled = max(sum(1 for _ in open(path, encoding="utf-8")) for path in corpora.values())  # every one of them
    for round_ in range(config.queries_per_passage):
        temperature = config.temperature if round_ == 0 else max(config.temperature, 0.7)
        backend_config = BackendConfig(kind="openai", model=config.llm_model, base_url=config.llm_base_url,
                                       api_key_env=config.api_key_env, max_concurrency=config.concurrency,
                                       max_retries=config.max_retries, timeout_s=config.timeout,
                                       initial_backoff_s=config.initial_backoff, max_tokens=config.max_tokens,
                                       temperature=temperature, seed=round_ or None)
        backend = StopOnError(backend_config.build(), config.llm_base_url or "https://api.openai.com/v1")
        sap = SapConfig(tuple(config.languages), "cross_lingual", sampled, config.seed, "en",
                        chunk_size=max(config.concurrency * 4, 16), prompt_mode=config.prompt_mode,
                        num_shots=config.num_shots)
        try:
            progress[round_] = generate_sap(corpora, exemplars, backend, sap, folder / f"queries_{round_}.jsonl",
                                            filters, None, {"stage": digest(fingerprint), "round": round_})
        finally:
            backend.close()
    return fingerprint, progress
