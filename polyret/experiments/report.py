"""A study's report from stored per-query scores: report.json, report.md and PNG plots, plus the verdict on
the study's claim. Reusable by any tool with per-query scores per arm and seed (`build_report`).

Analysis (polyret.experiments.stats): per evaluation set and, with several sets, on all their topics pooled
(the primary analysis then; a query id asked of several collections is one topic, its scores averaged over
them), each arm's mean with a 95% CI over topics (seed-averaged) and over seeds; each
arm against the baseline by a paired t-test on seed-averaged per-query scores (Wilcoxon beside it), Holm-
corrected over the arms; TOST with the study's margin where the claim is equivalence or a plateau.
Verdicts: better -> reproduced when the arm beats the baseline significantly, not reproduced when it is
significantly worse or TOST-equivalent (margin given), else inconclusive; equivalent -> reproduced when every
pair of arms is TOST-equivalent, not reproduced when some pair differs significantly, else inconclusive;
plateau -> reproduced when every arm from `plateau_from` up is TOST-equivalent to the largest, not reproduced
when one of them is significantly worse than it, else inconclusive. Fewer than 10 distinct topics, or the same
difference on every topic, give inconclusive with the reason.

Seeds: beside the test on topic means (seed-averaged), the seed means are checked: with two seeds or more, every
seed's mean difference must have the sign of the topic-level difference, else the verdict is inconclusive (a
sign test is all that 2-5 seeds allow; it keeps an effect smaller than the seed-to-seed spread from passing).
"Equivalent" and "plateau" also need every arm to beat `reference` (the starting model, evaluated without
training) significantly: equivalence between arms that learned nothing is not a finding. With `paper_effect`
the report sets each arm's measured effect and CI beside the paper's (effect ratio = measured / paper, and
whether the paper's effect lies in the CI); a TOST margin not smaller than the paper's effect is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from polyret.experiments import stats as S
from polyret.io.outputs import atomic_write_text

POOLED = "all"


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """What the report needs to know about the study besides the scores."""

    name: str
    size: str
    claim: str
    paper_claim: str
    baseline: str | None
    arms: Sequence[str]
    seeds: Sequence[int]
    metric: str
    metrics: Sequence[str]
    tost_margin: float | None = None
    alpha: float = 0.05
    sweep: Mapping[str, float] = dataclasses.field(default_factory=dict)
    sweep_label: str = ""
    plateau_from: float | None = None
    notes: str = ""
    paper_effect: float | None = None  # the paper's reported difference (arm - baseline) on `metric`
    paper_effect_source: str = ""      # where the paper reports it (table or section, and its URL)
    reference: str | None = None       # an arm that is the starting model, evaluated without training
    # A paper that reports a relative gain ("5% to 25% in nDCG@20"): the fraction of the baseline's score; the
    # paper's effect is then that fraction of the baseline's measured mean.
    paper_relative_effect: float | None = None
    # Evaluation sets reported on their own, outside the pooled primary analysis: one index over every language's
    # collection (MLIR) asks the per-language sets' own topics again, so pooling it would count them twice.
    separate_sets: Sequence[str] = ()

    def __post_init__(self):
        if self.paper_effect is not None and self.paper_relative_effect is not None:
            raise ValueError(f"study {self.name}: set paper_effect or paper_relative_effect, not both")
        # Equivalence within a margin wider than the paper's effect cannot tell that effect from none.
        if (self.claim == "better" and self.tost_margin and self.paper_effect is not None
                and self.tost_margin >= abs(self.paper_effect)):
            raise ValueError(f"study {self.name}: tost_margin {self.tost_margin:g} is not smaller than the paper's "
                             f"effect {self.paper_effect:+g} ({self.paper_effect_source or 'source not given'}); "
                             "set a smaller margin")
        if self.reference is not None and self.reference not in self.arms:
            raise ValueError(f"study {self.name}: the reference {self.reference!r} is not one of the arms "
                             f"{list(self.arms)}")


def _matrices(scores: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]], metric: str,
              arms: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """-> (query ids, {arm: [seeds, queries]}) on the queries every arm and seed scored (one order for all)."""
    common = None
    for arm in arms:
        for per_seed in scores[arm].values():
            q = set(per_seed[metric])
            common = q if common is None else common & q
    qids = sorted(common or ())
    return qids, {arm: np.array([[scores[arm][s][metric][q] for q in qids] for s in sorted(scores[arm])])
                  for arm in arms}


def _pooled(scores: Mapping[str, Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]]], metric: str,
            arms: Sequence[str]) -> dict[str, np.ndarray]:
    """{arm: [seeds, topics]} over every set: a topic (a query id) asked of several collections counts once, with
    its scores averaged over them (the same English heading asked of the de, fr and ja copies is one topic)."""
    parts = [_matrices(scores[name], metric, arms) for name in sorted(scores)]
    topics = sorted({q for qids, _ in parts for q in qids})
    column = {q: i for i, q in enumerate(topics)}
    out = {}
    for arm in arms:
        total = sum_count = None
        for qids, matrices in parts:
            index = [column[q] for q in qids]
            seeds = matrices[arm].shape[0]
            if total is None:
                total, sum_count = np.zeros((seeds, len(topics))), np.zeros(len(topics))
            np.add.at(total, (slice(None), index), matrices[arm])
            np.add.at(sum_count, index, 1)
        out[arm] = total / sum_count
    return out


def analyse(matrices: Mapping[str, np.ndarray], spec: ReportSpec) -> dict[str, Any]:
    """Summaries, paired tests and TOST for one evaluation set (or the pooled sets) on one metric."""
    arms = list(spec.arms)
    out: dict[str, Any] = {"num_queries": int(next(iter(matrices.values())).shape[1]),  # distinct topics
                           "arms": {a: dataclasses.asdict(S.summarize(matrices[a])) for a in arms}}
    per_query = S.seed_averaged(matrices)
    if spec.baseline is not None:
        out["vs_baseline"] = [{**dataclasses.asdict(t), "seed_differences": _seed_differences(matrices, t.arm,
                                                                                             spec.baseline)}
                              for t in S.paired_tests(per_query, spec.baseline, spec.alpha)]
    if spec.reference is not None:
        out["vs_reference"] = [dataclasses.asdict(t) for t in S.paired_tests(per_query, spec.reference, spec.alpha)]
    if spec.tost_margin:
        if spec.claim == "equivalent":  # among the trained arms (the untrained reference is not one of them)
            pairs = list(itertools.combinations([a for a in arms if a != spec.reference], 2))
        else:
            pairs = [(a, spec.baseline) for a in arms if a != spec.baseline] if spec.baseline else []
        out["equivalence"] = [dataclasses.asdict(S.tost(per_query[a], per_query[b], spec.tost_margin, a, b,
                                                        spec.alpha)) for a, b in pairs]
        if spec.claim == "equivalent":  # every pair, for the verdict: Holm over all pairwise differences
            from statsmodels.stats.multitest import multipletests
            raw = [S._paired(per_query[a], per_query[b]) for a, b in pairs]  # noqa: SLF001
            adjusted = multipletests([r[4] for r in raw], alpha=spec.alpha, method=S.CORRECTION)[1]
            out["pairwise"] = [{"arm": a, "other": b, "difference": r[0], "p_value": r[4], "p_adjusted": float(p),
                                "significant": bool(p < spec.alpha)}
                               for (a, b), r, p in zip(pairs, raw, adjusted)]
    return out


def _seed_differences(matrices: Mapping[str, np.ndarray], arm: str, baseline: str) -> list[float]:
    """The arm's mean difference to the baseline within each seed (seeds paired by their order)."""
    a, b = matrices[arm], matrices[baseline]
    if a.shape[0] != b.shape[0]:
        return []
    return [float(x) for x in (a - b).mean(axis=1)]


MIN_TOPICS = 10  # fewer distinct topics than this: no verdict


def _seeds_disagree(test: Mapping[str, Any]) -> bool:
    """The test on seed means beside the one on topic means: with two seeds or more, every seed's difference
    must have the sign of the topic-level difference."""
    diffs = test.get("seed_differences") or []
    return len(diffs) >= 2 and any(np.sign(d) != np.sign(test["difference"]) for d in diffs)


def _not_learned(analysis: Mapping[str, Any], spec: ReportSpec) -> str | None:
    """Why an equivalence or plateau verdict cannot stand: no reference arm, or an arm that does not beat it."""
    if spec.reference is None:
        return "no untrained reference arm, so whether any arm learned is not tested"
    weak = [t["arm"] for t in analysis.get("vs_reference", []) if not (t["significant"] and t["difference"] > 0)]
    if weak:
        return f"{', '.join(weak)} do not beat the untrained reference {spec.reference} significantly"
    return None


def paper_comparison(analysis: Mapping[str, Any], spec: ReportSpec) -> list[dict[str, Any]]:
    """Each arm's measured effect against the baseline beside the paper's: the effect ratio (measured / paper,
    repro_eval's effect ratio) and whether the paper's effect lies in the measured 95% CI. A relative effect
    becomes the paper's absolute one at the baseline's measured mean."""
    if spec.paper_effect is None and spec.paper_relative_effect is None:
        return []
    paper = spec.paper_effect
    if paper is None:
        paper = spec.paper_relative_effect * analysis["arms"][spec.baseline]["mean"]
    rows = []
    for t in analysis.get("vs_baseline", []):
        rows.append({"arm": t["arm"], "measured": t["difference"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                     "paper": paper, "paper_relative": spec.paper_relative_effect, "source": spec.paper_effect_source,
                     "effect_ratio": t["difference"] / paper if paper else math.nan,
                     "paper_in_ci": bool(t["ci_low"] <= paper <= t["ci_high"])})
    return rows


def verdict(analysis: Mapping[str, Any], spec: ReportSpec) -> tuple[str, str]:
    """-> (reproduced | not reproduced | inconclusive | n/a, one line saying why)."""
    if analysis["num_queries"] < MIN_TOPICS:
        return "inconclusive", f"only {analysis['num_queries']} distinct topics (at least {MIN_TOPICS} needed)"
    tests = {t["arm"]: t for t in analysis.get("vs_baseline", [])}
    constant = [a for a, t in tests.items() if math.isnan(t["t_statistic"])]
    if spec.claim == "better" and constant:
        return "inconclusive", (f"{', '.join(constant)} - {spec.baseline}: the same difference on every topic (no "
                                "variance to test)")
    equiv = analysis.get("equivalence", [])
    if spec.claim == "better":
        lines, states = [], []
        for arm, t in tests.items():
            tost = next((e for e in equiv if e["arm"] == arm), None)
            if _seeds_disagree(t):
                states.append("inconclusive")
            elif t["significant"] and t["difference"] > 0:
                states.append("reproduced")
            elif (t["significant"] and t["difference"] < 0) or (tost and tost["equivalent"]):
                states.append("not reproduced")
            else:
                states.append("inconclusive")
            seeds = t.get("seed_differences") or []
            lines.append(f"{arm} - {spec.baseline} = {t['difference']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}], "
                         f"p={t['p_value']:.3g} (Holm {t['p_adjusted']:.3g})"
                         + (f", TOST(+-{spec.tost_margin}) p={tost['p_value']:.3g}" if tost else "")
                         + (f", per seed {', '.join(f'{d:+.4f}' for d in seeds)}" if len(seeds) > 1 else "")
                         + (" (seeds disagree in sign)" if _seeds_disagree(t) else ""))
        state = states[0] if len(set(states)) == 1 else "inconclusive"
        return state, "; ".join(lines)
    if spec.claim == "equivalent":
        pairwise = analysis.get("pairwise", [])
        why = "; ".join(f"{e['arm']} vs {e['other']}: diff {e['difference']:+.4f}, TOST(+-{e['margin']}) "
                        f"p={e['p_value']:.3g}" for e in equiv)
        if equiv and all(e["equivalent"] for e in equiv):
            blocked = _not_learned(analysis, spec)
            return ("inconclusive", f"{why} (equivalent, but {blocked})") if blocked else ("reproduced", why)
        if any(p["significant"] for p in pairwise):
            return "not reproduced", why + " (a pair differs significantly)"
        return "inconclusive", why
    if spec.claim == "plateau":
        upper = [a for a in spec.arms
                 if a not in (spec.baseline, spec.reference) and spec.sweep[a] >= spec.plateau_from]
        eq = {e["arm"]: e for e in equiv}
        why = "; ".join(f"{a} (x={spec.sweep[a]:g}) - {spec.baseline}: {tests[a]['difference']:+.4f}, "
                        f"TOST(+-{spec.tost_margin}) p={eq[a]['p_value']:.3g}" for a in upper)
        if upper and all(eq[a]["equivalent"] for a in upper):
            blocked = _not_learned(analysis, spec)
            return ("inconclusive", f"{why} (a plateau, but {blocked})") if blocked else ("reproduced", why)
        if any(tests[a]["significant"] and tests[a]["difference"] < 0 for a in upper):
            return "not reproduced", why
        return "inconclusive", why
    return "n/a", "the study states no claim"


def build_report(scores: Mapping[str, Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]]],
                 spec: ReportSpec, shared: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """scores: {eval set: {arm: {seed: {metric: {qid: value}}}}} -> the report as a JSON-able dict."""
    sets = sorted(scores)
    pooled = [name for name in sets if name not in spec.separate_sets]
    primary_set = POOLED if len(pooled) > 1 else pooled[0]
    results: dict[str, Any] = {}
    for metric in spec.metrics:
        per_set = {name: analyse(_matrices(scores[name], metric, spec.arms)[1], spec) for name in sets}
        if len(pooled) > 1:
            per_set[POOLED] = analyse(_pooled({name: scores[name] for name in pooled}, metric, spec.arms), spec)
        results[metric] = per_set
    primary = results[spec.metric][primary_set]
    state, why = verdict(primary, spec)
    return {"study": dataclasses.asdict(spec), "eval_sets": sets, "pooled_sets": pooled, "primary_set": primary_set,
            "verdict": state, "verdict_reason": why, "paper_comparison": paper_comparison(primary, spec),
            "shared_settings": dict(shared or {}), "results": results}


# ------------------------------------------------------------------------------------------------ writing

def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def arm_table(report: Mapping[str, Any], set_name: str | None = None) -> str:
    """One row per arm: the primary metric's mean and CIs on the primary set (or `set_name`), and the test against
    the baseline."""
    spec = report["study"]
    analysis = report["results"][spec["metric"]][set_name or report["primary_set"]]
    tests = {t["arm"]: t for t in analysis.get("vs_baseline", [])}
    equiv = {e["arm"]: e for e in analysis.get("equivalence", []) if e["other"] == spec["baseline"]}
    head = (f"| arm | {spec['metric']} | 95% CI (topics) | 95% CI (seeds) | seeds | vs {spec['baseline']} | "
            "p (t) | p Holm | p (Wilcoxon) | TOST p |")
    lines = [head, "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for arm in spec["arms"]:
        a = analysis["arms"][arm]
        t, e = tests.get(arm), equiv.get(arm)
        test = (f"{t['difference']:+.4f} | {t['p_value']:.3g} | {t['p_adjusted']:.3g} | {_fmt(t['wilcoxon_p'])}"
                if t else "baseline | | |")
        tost_p = f"{e['p_value']:.3g}" if e else ""
        lines.append(f"| {arm} | {_fmt(a['mean'])} | [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}] | "
                     f"[{_fmt(a['seed_ci_low'])}, {_fmt(a['seed_ci_high'])}] | {a['num_seeds']} | {test} | {tost_p} |")
    return "\n".join(lines)


def markdown(report: Mapping[str, Any]) -> str:
    spec = report["study"]
    out = [f"# Study {spec['name']} (size {spec['size']})", ""]
    if spec["paper_claim"]:
        out += [f"Paper's claim: {spec['paper_claim']}", ""]
    out += [f"Claim tested: **{spec['claim']}** on {spec['metric']} "
            f"({'pooled over ' + ', '.join(report['pooled_sets']) if report['primary_set'] == POOLED else report['primary_set']}); "
            f"seeds {list(spec['seeds'])}; alpha {spec['alpha']}"
            + (f"; TOST margin +-{spec['tost_margin']}" if spec["tost_margin"] else ""), "",
            f"**Verdict: {report['verdict']}** — {report['verdict_reason']}", ""]
    if spec["notes"]:
        out += [f"Setting: {spec['notes']}", ""]
    if report.get("paper_comparison"):
        out += ["## Against the paper's effect", "",
                "| arm | measured [95% CI] | paper | effect ratio | paper's effect in CI |", "|---|---|---:|---:|---|"]
        for r in report["paper_comparison"]:
            out.append(f"| {r['arm']} | {r['measured']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
                       f"{r['paper']:+.4f}" + (f" ({r['paper_relative']:+.0%} of the baseline)"
                                               if r.get("paper_relative") is not None else "")
                       + f" | {r['effect_ratio']:.2f} | {'yes' if r['paper_in_ci'] else 'no'} |")
        out += ["", f"Paper's effect: {spec['paper_effect_source'] or 'source not given'}", ""]
    out += ["## Arms (primary set)", "", arm_table(report), ""]
    for name in spec["separate_sets"]:
        out += [f"## Arms on {name} (reported on its own, not pooled)", "", arm_table(report, name), ""]
    if report["shared_settings"]:
        params = list(next(iter(report["shared_settings"].values())))
        out += ["## Settings of each arm (shared ones must be equal)", "",
                "| arm | " + " | ".join(params) + " |", "|---|" + "---|" * len(params)]
        for arm, values in report["shared_settings"].items():
            out.append(f"| {arm} | " + " | ".join(str(values[p]).replace("|", "\\|") for p in params) + " |")
        out.append("")
    out += ["## Every metric and evaluation set (mean [95% CI over topics]; 'all': each topic once)", "",
            "| metric | set | distinct topics | " + " | ".join(spec["arms"]) + " |", "|---|---|---:|" + "---:|" * len(spec["arms"])]
    for metric, per_set in report["results"].items():
        for name, a in per_set.items():
            out.append(f"| {metric} | {name} | {a['num_queries']} | " + " | ".join(
                f"{_fmt(a['arms'][arm]['mean'])} [{_fmt(a['arms'][arm]['ci_low'])}, {_fmt(a['arms'][arm]['ci_high'])}]"
                for arm in spec["arms"]) + " |")
    out += ["", "Method: per-query scores averaged over seeds; paired t-test (scipy.stats.ttest_rel) and Wilcoxon "
            "(scipy.stats.wilcoxon) of each arm against the baseline, Holm-corrected over the arms "
            "(statsmodels multipletests); TOST by statsmodels ttost_paired. Per-query scores and TREC runs: "
            "runs/ARM/seedS/eval/."]
    return "\n".join(out) + "\n"


def plots(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """arms.png (means with 95% CIs over queries, per set) and, for a sweep, sweep.png (metric vs x)."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display
    import matplotlib.pyplot as plt

    spec = report["study"]
    metric = spec["metric"]
    written = []
    per_set = report["results"][metric]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(spec["arms"]) * len(per_set)), 3.5))
    width = 0.8 / len(spec["arms"])
    for i, arm in enumerate(spec["arms"]):
        xs = np.arange(len(per_set)) + i * width
        means = [per_set[s]["arms"][arm]["mean"] for s in per_set]
        err = [[m - per_set[s]["arms"][arm]["ci_low"] for s, m in zip(per_set, means)],
               [per_set[s]["arms"][arm]["ci_high"] - m for s, m in zip(per_set, means)]]
        ax.bar(xs, means, width, yerr=np.nan_to_num(err), capsize=3, label=arm)
    ax.set_xticks(np.arange(len(per_set)) + 0.4 - width / 2, list(per_set))
    ax.set_ylabel(metric)
    ax.set_title(f"{spec['name']} ({spec['size']}): mean, 95% CI over queries")
    ax.legend(fontsize="small")
    fig.tight_layout()
    written.append(out_dir / "arms.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    if spec["sweep"]:
        primary = per_set[report["primary_set"]]
        arms = sorted(spec["sweep"], key=lambda a: spec["sweep"][a])
        xs = [spec["sweep"][a] for a in arms]
        means = np.array([primary["arms"][a]["mean"] for a in arms])
        low = np.array([primary["arms"][a]["ci_low"] for a in arms])
        high = np.array([primary["arms"][a]["ci_high"] for a in arms])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar(xs, means, yerr=np.nan_to_num([means - low, high - means]), marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(spec["sweep_label"] or "x")
        ax.set_ylabel(metric)
        ax.set_title(f"{spec['name']} ({spec['size']}): {metric} vs {spec['sweep_label'] or 'x'}")
        fig.tight_layout()
        written.append(out_dir / "sweep.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> tuple[str, list[Path]]:
    """report.json, report.md and the plots under out_dir -> (markdown, plot paths)."""
    out_dir = Path(out_dir)
    text = markdown(report)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1, default=float) + "\n")
    atomic_write_text(out_dir / "report.md", text)
    return text, plots(report, out_dir)
