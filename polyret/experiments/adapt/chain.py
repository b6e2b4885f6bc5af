"""The chain: every stage in order, each skipped when its output is already there."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from polyret.experiments.adapt.base import import_base
from polyret.experiments.adapt.checks import (
    check_enough_pairs,
    check_languages,
    labels_checkpoint,
    unknown_token_warning,
)
from polyret.experiments.adapt.config import AdaptConfig, default_base
from polyret.experiments.adapt.corpus import read_corpus, warn_language_mismatch
from polyret.experiments.adapt.evaluate import (
    SYSTEMS,
    best_round,
    eval_sets,
    evaluate_stage,
    format_table,
    significance,
)
from polyret.experiments.adapt.filter import filter_stage, round_trip_stage
from polyret.experiments.adapt.generate import generate_stage
from polyret.experiments.adapt.mine import mine_stage
from polyret.experiments.adapt.report import example_queries, filter_acceptance, llm_usage, write_report
from polyret.experiments.adapt.sample import sample_stage
from polyret.experiments.adapt.split import split_stage
from polyret.experiments.adapt.stage_files import stage_dir
from polyret.experiments.adapt.train import train_stage
from polyret.io.fingerprint import digest, read_json, texts_fingerprint
from polyret.models.model_folder import load_model, load_prompts
from polyret.models.prompts import write_to_sentence_transformers
from polyret.models.retrieval_model import build_model

log = logging.getLogger(__name__)
STAGES = ("base", "sample", "generate", "filter", "split", "round 1", "mine", "round 2", "evaluate", "export")
PROMPTAGATOR_STAGES = STAGES[:6] + ("round-trip filter",) + STAGES[6:]


class StageClock:
    """One line per stage as it starts ("[i/n] ..."), and the seconds each took in this run (a stage an
    earlier run finished takes about none)."""

    def __init__(self, names: tuple[str, ...]):
        self.names, self.seconds = names, {}
        self.current, self.since = None, 0.0

    def start(self, name: str, text: str) -> None:
        self._close()
        self.current, self.since = name, time.monotonic()
        print(f"[{self.names.index(name) + 1}/{len(self.names)}] {text}", flush=True)

    def _close(self) -> None:
        if self.current is not None:
            self.seconds[self.current] = round(time.monotonic() - self.since, 1)

    def stop(self) -> dict[str, float]:
        self._close()
        self.current = None
        return dict(self.seconds)


def run_adapt(config: AdaptConfig) -> dict[str, Any]:
    out = Path(config.output_dir).absolute()
    if bool(config.eval_queries) != bool(config.eval_qrels):
        raise ValueError("--eval_queries and --eval_qrels go together")
    if not 0 < config.heldout_fraction < 1:
        raise ValueError(f"--heldout_fraction must be between 0 and 1, got {config.heldout_fraction}")
    exemplars = check_languages(config)  # before anything is read or requested
    if config.labels:
        labels_checkpoint(config.labels)
    corpus = read_corpus(config.corpus)
    warning = warn_language_mismatch(corpus, config.languages)
    if warning:
        log.warning(warning)
    promptagator = config.round_trip == "round1"
    clock = StageClock(PROMPTAGATOR_STAGES if promptagator else STAGES)
    say = clock.start

    collection_languages = sorted(set(corpus.languages.values()))
    say("base", f"base model {config.base or default_base(collection_languages)}")
    base, base_fp = import_base(config, out, collection_languages)
    unknown = unknown_token_warning(base, random.Random(config.seed).sample(list(corpus.texts.values()),
                                                                            min(500, len(corpus.texts))))
    if unknown:
        log.warning(unknown)
    corpus_fp = {"corpus": texts_fingerprint(corpus.texts), "languages": digest(corpus.languages),
                 **({"groups": digest(corpus.groups)} if corpus.groups else {})}
    say("sample", f"sampling up to {config.max_passages} passages of each passage language -> {out / '1_sample'}")
    fp = sample_stage(corpus, config, out / "1_sample", digest(corpus_fp))
    say("generate", f"generating queries with {config.llm_model} at {config.llm_base_url} -> {out / '2_generate'}")
    fp, progress = generate_stage(config, exemplars, out / "2_generate", digest(fp), out / "1_sample")
    filtering = "duplicates" if promptagator else f"round-trip filter (base model or BM25 top {config.filter_top_k})"
    say("filter", f"{filtering} -> {out / '3_filter'}")
    fp = filter_stage(corpus, config, out / "3_filter", digest({"generate": fp, "base": base_fp}),
                      out / "2_generate", base, out / "vectors" / "base")
    say("split", f"holding out {config.heldout_fraction:.0%} of the passages' queries -> {out / '4_split'}")
    split_fp = split_stage(config, out / "4_split", digest(fp), out / "3_filter")
    check_enough_pairs(config, out, out / "4_split")
    say("round 1", f"training round 1 ({config.round1_steps} steps) -> {out / '5_round1'}")
    r1_fp = train_stage(config, out / "5_round1", digest({"split": split_fp, "base": base_fp}), base,
                        out / "4_split" / "train.jsonl", config.round1_steps, 0)
    train_dir, mine_upstream = out / "4_split", r1_fp
    if promptagator:
        say("round-trip filter", f"round-trip filter (round 1 top {config.filter_top_k}) -> {out / '5b_round_trip'}")
        mine_upstream = round_trip_stage(corpus, config, out / "5b_round_trip", digest(r1_fp), out / "4_split",
                                         out / "5_round1", out / "vectors" / "round_1")
        train_dir = out / "5b_round_trip"
        check_enough_pairs(config, out, train_dir)
    scoring = " and scoring them with the reranker" if config.labels else ""
    say("mine", f"mining hard negatives with round 1{scoring} -> {out / '6_mine'}")
    mine_fp = mine_stage(corpus, config, out / "6_mine", digest(mine_upstream), train_dir, out / "5_round1",
                         out / "vectors" / "round_1")
    margin_mse = ", MarginMSE on the reranker scores" if config.labels else ""
    say("round 2", f"training round 2 on the mined negatives ({config.round2_steps} steps{margin_mse}) -> "
                   f"{out / '7_round2'}")
    r2_fp = train_stage(config, out / "7_round2", digest(mine_fp), out / "5_round1",
                        out / "6_mine" / "mined.jsonl", config.round2_steps, config.num_negatives,
                        scored=bool(config.labels))
    say("evaluate", f"evaluating {', '.join(SYSTEMS)} -> {out / '8_evaluate'}")
    sets = eval_sets(config, corpus, out / "4_split")
    eval_fp = {"sets": {n: digest([s.queries, s.qrels]) for n, s in sets.items()}, "corpus": corpus_fp}
    results = evaluate_stage(corpus, config, out / "8_evaluate", digest(r2_fp), sets,
                             {"base": base, "BM25": None, "round 1": out / "5_round1", "round 2": out / "7_round2"},
                             eval_fp, out / "vectors")
    best = best_round(results)
    say("export", f"exporting {best} -> {out / 'model'}")
    best_dir = out / ("5_round1" if best == "round 1" else "7_round2")

    def export(tmp: Path) -> None:
        params, model_config, tokenizer = load_model(best_dir)
        build_model(model_config).export_hf(params, tmp, tokenizer, config.passage_max_length)
        write_to_sentence_transformers(tmp, load_prompts(best_dir))

    stage_dir(out / "model", "hf_export", {"upstream": digest(r2_fp), "best": best}, export)
    table = format_table(results, sets)
    report = write_report(out, config, base, table, best, llm_usage(config, progress),
                          filter_acceptance(config, out / "1_sample", out / "2_generate", out / "3_filter"),
                          example_queries(out / "3_filter", config.languages), results,
                          read_json(out / "6_mine" / "counts.json") or {}, significance(results, sets),
                          clock.stop())
    print(table)
    print(f"report: {report}; model: {out / 'model'}")
    return {"metrics": results, "best": best, "report": report}
