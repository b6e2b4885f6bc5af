"""The study report counts each topic once: one evaluation set asked of three collections (the same query ids,
the same scores) gives the p-value of the single set (scipy's paired t-test on it, computed here), not a smaller
one; fewer than 10 topics and a constant difference give 'inconclusive' with the reason."""

import dataclasses

import numpy as np
import pytest
from scipy import stats as sps

from polyret.experiments.report import ReportSpec, build_report

SPEC = ReportSpec(name="t", size="ci", claim="better", paper_claim="new beats base", baseline="base", arms=("base", "new"), seeds=(0, 1),
                  metric="nDCG@10", metrics=("nDCG@10",))


def _scores(base: np.ndarray, new: np.ndarray) -> dict:
    """{arm: {seed: {metric: {qid: value}}}}, two seeds (seed 1 = seed 0 + a small shift)."""
    return {arm: {seed: {"nDCG@10": {f"q{i}": float(v + 0.01 * seed) for i, v in enumerate(values)}}
                  for seed in (0, 1)} for arm, values in (("base", base), ("new", new))}


def test_one_set_asked_of_three_collections_is_one_set():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 40)
    new = base + rng.normal(0.02, 0.08, 40)
    one = build_report({"en-de": _scores(base, new)}, SPEC)
    three = build_report({name: _scores(base, new) for name in ("en-de", "en-fr", "en-ja")}, SPEC)
    single = one["results"]["nDCG@10"]["en-de"]["vs_baseline"][0]
    pooled = three["results"]["nDCG@10"]["all"]["vs_baseline"][0]
    reference = sps.ttest_rel(new + 0.005, base + 0.005).pvalue  # seed-averaged per-topic scores
    assert single["p_value"] == pytest.approx(reference, rel=1e-9)
    assert pooled["p_value"] == pytest.approx(reference, rel=1e-9)
    assert three["results"]["nDCG@10"]["all"]["num_queries"] == 40


def test_topics_in_several_collections_are_averaged_once_each():
    base = {"en-de": {"a": 0.2, "b": 0.4}, "en-fr": {"a": 0.6, "c": 0.8}}
    scores = {name: {arm: {0: {"nDCG@10": dict(v)}} for arm in ("base", "new")} for name, v in base.items()}
    report = build_report(scores, SPEC)
    assert report["results"]["nDCG@10"]["all"]["num_queries"] == 3  # a, b, c
    assert report["results"]["nDCG@10"]["all"]["arms"]["base"]["mean"] == pytest.approx((0.4 + 0.4 + 0.8) / 3)


def test_a_separate_set_is_reported_on_its_own_and_left_out_of_the_pooled_analysis():
    """One index over every collection (MLIR) asks the per-language topics again: its scores must not enter the
    pooled primary test, whose p stays scipy's on the per-language set alone."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, 40)
    new = base + rng.normal(0.02, 0.08, 40)
    merged = _scores(base, base - 0.3)  # a very different result, on the same topics
    spec = dataclasses.replace(SPEC, separate_sets=("en-all",))
    report = build_report({"en-de": _scores(base, new), "en-fr": _scores(base, new), "en-all": merged}, spec)
    assert report["pooled_sets"] == ["en-de", "en-fr"] and report["primary_set"] == "all"
    pooled = report["results"]["nDCG@10"]["all"]["vs_baseline"][0]
    assert pooled["p_value"] == pytest.approx(sps.ttest_rel(new + 0.005, base + 0.005).pvalue, rel=1e-9)
    assert report["results"]["nDCG@10"]["en-all"]["vs_baseline"][0]["difference"] == pytest.approx(-0.3)
    # With one pooled set left, it is the primary set itself.
    alone = build_report({"en-de": _scores(base, new), "en-all": merged}, spec)
    assert alone["primary_set"] == "en-de" and "all" not in alone["results"]["nDCG@10"]


@pytest.mark.parametrize("n, shift, expected", [(8, 0.1, "fewer"), (30, 0.1, "same difference")])
def test_degenerate_data_is_inconclusive(n, shift, expected):
    base = np.linspace(0.1, 0.9, n)
    report = build_report({"s": _scores(base, base + shift)}, SPEC)
    assert report["verdict"] == "inconclusive"
    assert expected in report["verdict_reason"] or (expected == "fewer" and "distinct topics" in report["verdict_reason"])
