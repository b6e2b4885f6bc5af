"""`verdict()` through `build_report` on a table of constructed cases, each built so its verdict is known:
clear effects, seeds that disagree, equivalence with and without an untrained reference arm that the others
beat, a plateau, constant differences, a TOST margin wider than the paper's effect, and the effect set against
the paper's (ratio and CI)."""

import numpy as np
import pytest

from polyret.experiments.report import ReportSpec, build_report, markdown

N = 60
RNG = np.random.default_rng(0)
BASE = RNG.uniform(0.2, 0.7, N)


def _arm(offsets_by_seed, noise=0.03, seed=0):
    """{seed: {metric: {qid: value}}}: BASE + the seed's offset + per-topic noise."""
    rng = np.random.default_rng(seed)
    return {s: {"nDCG@10": {f"q{i}": float(v) for i, v in enumerate(BASE + off + rng.normal(0, noise, N))}}
            for s, off in enumerate(offsets_by_seed)}


def _spec(claim, arms, **kw):
    defaults = dict(name="t", size="ci", claim=claim, paper_claim="", baseline=arms[0], arms=tuple(arms),
                    seeds=(0, 1, 2), metric="nDCG@10", metrics=("nDCG@10",))
    return ReportSpec(**{**defaults, **kw})


def _verdict(arms: dict, spec: ReportSpec):
    report = build_report({"set": arms}, spec)
    return report["verdict"], report["verdict_reason"], report


CASES = [
    # (case, claim, {arm: per-seed offsets}, spec extras, expected verdict, a phrase of the reason)
    ("clear gain, seeds agree", "better", {"base": [0, 0, 0], "new": [0.05, 0.06, 0.04]}, {}, "reproduced", "new - base"),
    ("gain on topics, one seed the other way", "better", {"base": [0, 0, 0], "new": [0.09, 0.06, -0.01]}, {},
     "inconclusive", "seeds disagree"),
    ("clear loss", "better", {"base": [0, 0, 0], "new": [-0.06, -0.05, -0.07]}, {}, "not reproduced", "new - base"),
    ("no difference, inside the margin", "better", {"base": [0, 0, 0], "new": [0.001, -0.001, 0.0]},
     {"tost_margin": 0.03}, "not reproduced", "TOST"),
    ("arms equivalent, no reference arm", "equivalent", {"a": [0, 0, 0], "b": [0.001, 0, -0.001]},
     {"tost_margin": 0.03, "baseline": None}, "inconclusive", "no untrained reference"),
    ("arms equivalent, both beat the untrained start", "equivalent",
     {"start": [-0.2, -0.2, -0.2], "a": [0, 0, 0], "b": [0.001, 0, -0.001]},
     {"tost_margin": 0.03, "baseline": None, "reference": "start"}, "reproduced",
     "a vs b"),
    ("arms equivalent to an untrained start that is as good", "equivalent",
     {"start": [0, 0.001, 0], "a": [0, 0, 0], "b": [0.001, 0, -0.001]},
     {"tost_margin": 0.03, "baseline": None, "reference": "start"}, "inconclusive",
     "do not beat"),
    ("plateau, every arm beats the untrained start", "plateau",
     {"all": [0, 0, 0], "half": [0.001, -0.001, 0], "start": [-0.2, -0.2, -0.2]},
     {"tost_margin": 0.03, "reference": "start",
      "sweep": {"all": 1.0, "half": 0.5}, "plateau_from": 0.5}, "reproduced", "half"),
    ("plateau of arms that learned nothing", "plateau",
     {"all": [0, 0, 0], "half": [0.001, -0.001, 0], "start": [0, 0.001, -0.001]},
     {"tost_margin": 0.03, "reference": "start",
      "sweep": {"all": 1.0, "half": 0.5}, "plateau_from": 0.5}, "inconclusive", "do not beat"),
]


@pytest.mark.parametrize("case, claim, offsets, extra, expected, phrase", CASES, ids=[c[0] for c in CASES])
def test_verdict_table(case, claim, offsets, extra, expected, phrase):
    arms = {arm: _arm(off, seed=i) for i, (arm, off) in enumerate(offsets.items())}
    spec = _spec(claim, list(offsets), **extra)
    state, reason, _ = _verdict(arms, spec)
    assert (state, phrase in reason) == (expected, True), reason


def test_constant_difference_is_inconclusive():
    arms = {"base": {0: {"nDCG@10": {f"q{i}": float(v) for i, v in enumerate(BASE)}}},
            "new": {0: {"nDCG@10": {f"q{i}": float(v + 0.1) for i, v in enumerate(BASE)}}}}
    state, reason, _ = _verdict(arms, _spec("better", ["base", "new"], seeds=(0,)))
    assert state == "inconclusive" and "same difference" in reason


def test_a_margin_wider_than_the_papers_effect_is_refused():
    with pytest.raises(ValueError, match="not smaller than the paper's effect"):
        _spec("better", ["base", "new"], tost_margin=0.02, paper_effect=0.016, paper_effect_source="Table 3")


def test_the_effect_is_set_against_the_papers():
    arms = {"base": _arm([0, 0, 0], seed=0), "new": _arm([0.05, 0.05, 0.05], seed=1)}
    spec = _spec("better", ["base", "new"], paper_effect=0.04, paper_effect_source="Table 2", tost_margin=0.01)
    _, _, report = _verdict(arms, spec)
    row = report["paper_comparison"][0]
    test = report["results"]["nDCG@10"]["set"]["vs_baseline"][0]
    assert row["effect_ratio"] == pytest.approx(test["difference"] / 0.04)
    assert row["paper_in_ci"] == (test["ci_low"] <= 0.04 <= test["ci_high"])
    assert row["source"] == "Table 2"


def test_a_relative_effect_is_the_papers_fraction_of_the_baselines_mean():
    """MTD reports "5% to 25% in nDCG@20": +5% of the baseline arm's measured mean is the paper's effect."""
    arms = {"base": _arm([0, 0, 0], seed=0), "new": _arm([0.05, 0.05, 0.05], seed=1)}
    spec = _spec("better", ["base", "new"], paper_relative_effect=0.05, paper_effect_source="abstract")
    _, _, report = _verdict(arms, spec)
    base_mean = np.mean([np.mean(list(s["nDCG@10"].values())) for s in arms["base"].values()])
    row = report["paper_comparison"][0]
    assert row["paper"] == pytest.approx(0.05 * base_mean)
    test = report["results"]["nDCG@10"]["set"]["vs_baseline"][0]
    assert row["effect_ratio"] == pytest.approx(test["difference"] / (0.05 * base_mean))
    assert "(+5% of the baseline)" in markdown(report)
    with pytest.raises(ValueError, match="not both"):
        _spec("better", ["base", "new"], paper_effect=0.01, paper_relative_effect=0.05)
