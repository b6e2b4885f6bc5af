"""Stage 8_evaluate/: every system on every query set, per language pair, and the topic-level tests."""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.corpus import Corpus
from polyret.experiments.adapt.search import bm25_searcher, by_partition, model_searcher
from polyret.experiments.adapt.stage_files import stage_file
from polyret.experiments.stats import paired_tests
from polyret.io.fingerprint import read_json
from polyret.io.formats import DataError, read_id_text, read_languages, read_qrels
from polyret.io.outputs import atomic_write_text
from polyret.io.runs import write_trec_run
from polyret.retrieval import metrics as M
from polyret.synthesis.filters import normalize_query

METRICS = ("nDCG@10", "R@100")
SYSTEMS = ("base", "BM25", "round 1", "round 2")


@dataclasses.dataclass
class EvalSet:
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    groups: dict[str, str]  # query id -> table row: 'query language-passage language' ('-all': one index)
    whole_collection: bool = False  # searched over every language's passages at once (MLIR), not per language


def stem(name: str) -> str:
    """A system's or set's name as part of a file name ('round 1' -> round_1, 'real, one index' -> real_one_index)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def eval_sets(config: AdaptConfig, corpus: Corpus, split_dir: Path) -> dict[str, EvalSet]:
    """The held-out synthetic queries (and the real ones, if given), each searched within the language of
    its relevant passages; a query relevant in several languages counts once in each (as `id@lang`, judged
    on that language's passages). In a collection of several languages each set also gets a row searched
    over the whole collection at once ('NAME, one index'), as its users search it (MLIR)."""
    sets = {}
    files = {"synthetic": (split_dir / "heldout_queries.jsonl", split_dir / "heldout_qrels.tsv")}
    if config.eval_queries:
        files["real"] = (Path(config.eval_queries), Path(config.eval_qrels))
    for name, (qfile, rfile) in files.items():
        qrels = {q: d for q, d in read_qrels(rfile).items() if any(v > 0 for v in d.values())}
        if not qrels:
            continue
        queries = read_id_text(qfile, with_title=False)
        missing = sorted(set(qrels) - set(queries))
        if missing:
            raise DataError(rfile, None, f"judged query {missing[0]!r} is not in {qfile}")
        unknown = sorted({d for docs in qrels.values() for d in docs} - set(corpus.texts))
        if unknown:
            raise DataError(rfile, None, f"judged passage {unknown[0]!r} is not in the corpus")
        query_langs = read_languages(qfile)
        per_language = EvalSet({}, {}, {})
        for q, docs in qrels.items():
            by_lang: dict[str, dict[str, int]] = collections.defaultdict(dict)
            for d, v in docs.items():
                by_lang[corpus.languages[d]][d] = v
            relevant_in = [lang for lang, judged in sorted(by_lang.items()) if any(v > 0 for v in judged.values())]
            for lang in relevant_in:
                key = q if len(relevant_in) == 1 else f"{q}@{lang}"
                per_language.queries[key], per_language.qrels[key] = queries[q], by_lang[lang]
                per_language.groups[key] = f"{query_langs.get(q, '?')}-{lang}"
        sets[name] = per_language
        if len(corpus.partitions()) > 1:
            # Over the whole collection a passage's translations (its group) answer the query as well.
            whole = {q: {**{t: v for d, v in docs.items() if v > 0 for t in corpus.translations(d)}, **docs}
                     for q, docs in qrels.items()}
            sets[f"{name}, one index"] = EvalSet({q: queries[q] for q in qrels}, whole,
                                                 {q: f"{query_langs.get(q, '?')}-all" for q in qrels}, True)
    return sets


def evaluate_stage(corpus: Corpus, config: AdaptConfig, folder: Path, upstream: str, sets: Mapping[str, EvalSet],
                   models: Mapping[str, Path | None], eval_fingerprint: Mapping[str, Any],
                   vectors: Path) -> dict[str, Any]:
    """Every system on every set, per language pair; one result file per system (a rerun after a kill
    keeps the systems already evaluated). A model's passage vectors are read from (or written to)
    vectors/<system>."""
    folder.mkdir(parents=True, exist_ok=True)
    stage_file(folder / "stage.json", {"upstream": upstream, **eval_fingerprint})
    results = {}
    for system, checkpoint in models.items():
        path = folder / f"{stem(system)}.json"
        cached = read_json(path)
        if cached is not None:
            results[system] = cached
            continue
        search = bm25_searcher(corpus) if checkpoint is None else \
            model_searcher(corpus, config, checkpoint, vectors / stem(system))
        # Every set's queries in one search per partition (ids tagged with the set).
        per_language, passage_of = {}, {}
        for name, s in sets.items():
            for q, text in s.queries.items():
                if not s.whole_collection:
                    per_language[f"{name}\x1f{q}"] = text
                    passage_of[f"{name}\x1f{q}"] = [d for d, v in s.qrels[q].items() if v > 0]
        every_run = by_partition(corpus, per_language, passage_of, search, 100)
        for name, s in sets.items():
            if s.whole_collection:
                every_run.update({f"{name}\x1f{q}": r for q, r in search(list(corpus.texts), s.queries, 100).items()})
        table = {}
        for name, s in sets.items():
            run = {q: every_run[f"{name}\x1f{q}"] for q in s.queries if f"{name}\x1f{q}" in every_run}
            write_trec_run(run, folder / f"{stem(system)}.{stem(name)}.trec", tag=stem(system))
            table[name] = M.evaluate(s.qrels, run, list(METRICS), query_languages=s.groups)
            table[name]["count"] = dict(collections.Counter(s.groups.values()))
            table[name]["per_query"] = M.per_query(s.qrels, run, [METRICS[0]])[METRICS[0]]
        atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True))
        results[system] = table
    return results


def format_table(results: Mapping[str, Any], sets: Mapping) -> str:
    lines = ["| queries | pair | n | " + " | ".join(f"{s} {m}" for s in SYSTEMS for m in METRICS) + " |",
             "|---|---|---:|" + "---:|" * (len(SYSTEMS) * len(METRICS))]
    for name in sets:
        counts = results[SYSTEMS[0]][name]["count"]
        for group in sorted(counts) + (["all"] if len(counts) > 1 else []):
            n = sum(counts.values()) if group == "all" else counts[group]
            cells = []
            for m in METRICS:
                best = max(results[s][name][group][m] for s in SYSTEMS)
                for s in SYSTEMS:
                    value = results[s][name][group][m]
                    cells.append((s, m, f"**{value:.3f}**" if value == best else f"{value:.3f}"))
            ordered = [c for s in SYSTEMS for m in METRICS for (s2, m2, c) in cells if (s2, m2) == (s, m)]
            lines.append(f"| {name} | {group} | {n} | " + " | ".join(ordered) + " |")
    return "\n".join(lines)


def significance(results: Mapping[str, Any], sets: Mapping) -> list[dict[str, Any]]:
    """Each round against the base model and against BM25 on every query set: paired t-test over the topics'
    nDCG@10 (and Wilcoxon), Holm-corrected over the two rounds (polyret.experiments.stats). A topic is a query
    text: the same question asked of several languages' copies counts once, its scores averaged."""
    rows = []
    for name, eval_set in sets.items():
        queries = eval_set.queries
        topics: dict[str, list[str]] = collections.defaultdict(list)
        for q in sorted(results["base"][name]["per_query"]):
            topics[normalize_query(queries.get(q, q))].append(q)
        scores = {s: np.array([np.mean([results[s][name]["per_query"][q] for q in members])
                               for members in topics.values()]) for s in SYSTEMS}
        for baseline in ("base", "BM25"):
            family = {s: scores[s] for s in (baseline, "round 1", "round 2")}
            for t in paired_tests(family, baseline):
                rows.append({"queries": name, "topics": len(topics), **dataclasses.asdict(t)})
    return rows


def format_significance(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| queries | distinct topics | system | against | nDCG@10 difference | 95% CI | p (Holm) | Wilcoxon p |",
             "|---|---:|---|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['queries']} | {r['topics']} | {r['arm']} | {r['baseline']} | {r['difference']:+.3f} | "
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['p_adjusted']:.2g} | {r['wilcoxon_p']:.2g} |")
    return "\n".join(lines)


def best_round(results: Mapping[str, Any]) -> str:
    """The round with the higher nDCG@10 on the held-out synthetic queries (never chosen on real ones)."""
    if "synthetic" not in results["round 1"]:  # nothing held out (a tiny collection): the later round
        return "round 2"
    score = {r: results[r]["synthetic"]["all"]["nDCG@10"] for r in ("round 1", "round 2")}
    return max(score, key=lambda r: (score[r], r))  # a tie goes to round 2
