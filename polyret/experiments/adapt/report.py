"""report.md / report.json: results, LLM usage, filter acceptance, example queries, settings."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.evaluate import format_significance
from polyret.experiments.adapt.stage_files import read_jsonl
from polyret.io.outputs import atomic_write_text


def filter_acceptance(config: AdaptConfig, sample_dir: Path, generate_dir: Path, filter_dir: Path) -> dict[str, Any]:
    requested = {lang: sum(1 for _ in open(sample_dir / f"{lang}.jsonl", encoding="utf-8")) * config.queries_per_passage
                 for lang in config.languages}
    generated = collections.Counter(r["code"] for round_ in range(config.queries_per_passage)
                                    for r in read_jsonl(generate_dir / f"queries_{round_}.jsonl"))
    dropped = collections.defaultdict(collections.Counter)  # SAP's filters' reasons, then the duplicates
    for round_ in range(config.queries_per_passage):
        for r in read_jsonl(generate_dir / f"queries_{round_}.jsonl.rejected.jsonl"):
            dropped[r["code"]][r["reason"]] += 1
    for r in read_jsonl(filter_dir / "dropped.jsonl"):
        if r["reason"] == "duplicate":
            dropped[r["code"]]["duplicate"] += 1
    kept = collections.Counter(r["code"] for r in read_jsonl(filter_dir / "kept.jsonl"))
    unique = {lang: generated[lang] - dropped[lang]["duplicate"] for lang in config.languages}
    return {lang: {"requested": requested[lang], "after_sap_filters_and_duplicates": unique[lang],
                   "kept": kept[lang],
                   "round_trip_rate": kept[lang] / unique[lang] if unique[lang] else 0.0,
                   "rate": kept[lang] / requested[lang] if requested[lang] else 0.0,
                   "dropped": dict(sorted(dropped[lang].items()))} for lang in config.languages}


def llm_usage(config: AdaptConfig, progress: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    total = collections.Counter()
    for p in progress.values():
        total.update(p.get("usage", {}))
    cost = (total["prompt_tokens"] * config.price_per_million_prompt_tokens
            + total["completion_tokens"] * config.price_per_million_completion_tokens) / 1e6
    return {**{k: total[k] for k in ("requests", "retries", "failures", "prompt_tokens", "completion_tokens")},
            "cost": round(cost, 6)}


def example_queries(filter_dir: Path, languages: Sequence[str], n: int = 10) -> dict[str, list[dict[str, Any]]]:
    rows = read_jsonl(filter_dir / "kept.jsonl")
    out = {}
    for lang in languages:
        mine = [r for r in rows if r["code"] == lang]
        random.Random(0).shuffle(mine)
        out[lang] = [{"query": r["query"], "passage_id": r["passage_id"], "passage": r["text"][:160]}
                     for r in mine[:n]]
    return out


def report_settings(config: AdaptConfig, base: Path) -> dict[str, Any]:
    settings = dataclasses.asdict(config)
    settings["base"] = str(base)  # api_key_env names the variable; the key itself is never read here
    return settings


def write_report(out: Path, config: AdaptConfig, base: Path, table: str, best: str, usage: Mapping,
                 acceptance: Mapping, examples: Mapping, results: Mapping, mined: Mapping,
                 tests: Sequence[Mapping[str, Any]], stage_seconds: Mapping[str, float]) -> Path:
    lines = ["# polyret adapt report", "", "## Results", "",
             "nDCG@10 and R@100 per query set and language pair (query language-passage language); every query "
             "searched among the passages of its passage's language (a query relevant in several languages "
             "counts in each), and in the 'one index' rows among the whole collection at once. Synthetic: "
             "held-out generated queries (their passages, and their translations, were never trained on). Best "
             "per metric in bold.", "", table, "",
             f"Exported: {best} -> `{out / 'model'}` (chosen on the held-out synthetic queries).", "",
             "Each round against the base model and BM25, nDCG@10 per topic (a question asked of several "
             "languages' copies counts once, its scores averaged): paired t-test, Holm-corrected over "
             "the two rounds (Wilcoxon signed-rank beside it).", "", format_significance(tests), "",
             "## LLM usage", "",
             f"{usage['requests']} requests ({usage['retries']} retries, {usage['failures']} failures), "
             f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, "
             f"cost {usage['cost']:.4f} (at {config.price_per_million_prompt_tokens} / "
             f"{config.price_per_million_completion_tokens} per million prompt / completion tokens).", "",
             "## Filter acceptance per language", "",
             "| language | passages asked | after SAP filters and duplicates | after round-trip (top "
             f"{config.filter_top_k}) | rate | round-trip rate | dropped before round-trip |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for lang, a in acceptance.items():
        dropped = ", ".join(f"{n} {r}" for r, n in a["dropped"].items()) or "none"
        lines.append(f"| {lang} | {a['requested']} | {a['after_sap_filters_and_duplicates']} | {a['kept']} | "
                     f"{a['rate']:.1%} | {a['round_trip_rate']:.1%} | {dropped} |")
    if config.round_trip == "round1":
        kept, dropped = (len(read_jsonl(out / "5b_round_trip" / f)) for f in ("train.jsonl", "dropped.jsonl"))
        lines += ["", f"The table's round trip is duplicates only: the round-trip filter asked round 1, trained on "
                      f"every synthetic training query (Promptagator), and kept {kept} of {kept + dropped} (its "
                      f"top {config.filter_top_k}); round 2 mined from those."]
    lines += ["", f"Hard negatives mined with round 1: {mined.get('rows', 0)} queries with "
                  f"{config.num_negatives} negatives each.", "", "## Example queries", ""]
    for lang, rows in examples.items():
        lines.append(f"### {lang}")
        lines.append("")
        lines += [f"- {r['query']}  — `{r['passage_id']}`: {' '.join(r['passage'].split())[:100]}…" for r in rows]
        lines.append("")
    settings = report_settings(config, base)
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=1, sort_keys=True), "```", "",
              "## Time per stage (this run; a stage an earlier run finished takes about none)", "",
              "| stage | seconds |", "|---|---:|", *(f"| {k} | {v:.1f} |" for k, v in stage_seconds.items()), ""]
    atomic_write_text(out / "report.json", json.dumps(
        {"metrics": results, "best": best, "significance": tests, "usage": usage, "acceptance": acceptance,
         "examples": examples, "settings": settings, "stage_seconds": dict(stage_seconds)}, indent=1,
        sort_keys=True, ensure_ascii=False))
    return atomic_write_text(out / "report.md", "\n".join(lines))
