"""Statistics of a study, from per-query scores: arm means with 95% confidence intervals, paired tests of
each arm against a baseline with a multiple-comparison correction, and equivalence by TOST.

Everything is computed by scipy and statsmodels (nothing hand-written): paired t-test
`scipy.stats.ttest_rel` (and `wilcoxon` beside it), TOST `statsmodels.stats.weightstats.ttost_paired`,
Holm's correction `statsmodels.stats.multitest.multipletests`. The unit of a paired test is the query:
each arm's score on a query is first averaged over the seeds, so seeds reduce noise without being
counted as independent samples. Used by `polyret study` and by any tool that compares run folders.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
CORRECTION = "holm"


# Per-arm scores: {seed: {qid: value}} for one metric on one evaluation set.
SeedScores = Mapping[int | str, Mapping[str, float]]


def score_matrix(scores: SeedScores, queries: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """-> (query ids, [seeds, queries] array). Every seed must have scored the same judged queries."""
    seeds = sorted(scores, key=str)
    qids = sorted(queries if queries is not None else scores[seeds[0]])
    for s in seeds:
        missing = [q for q in qids if q not in scores[s]]
        if missing:
            raise ValueError(f"seed {s}: no score for {len(missing)} queries (first {missing[0]!r})")
    return qids, np.array([[scores[s][q] for q in qids] for s in seeds], np.float64)


@dataclasses.dataclass(frozen=True)
class ArmSummary:
    mean: float
    ci_low: float      # 95% t-interval over queries of the seed-averaged per-query scores
    ci_high: float
    seed_means: list[float]
    seed_ci_low: float  # 95% t-interval over the seeds' means (nan with one seed)
    seed_ci_high: float
    num_queries: int
    num_seeds: int


def summarize(matrix: np.ndarray, confidence: float = 0.95) -> ArmSummary:
    per_query = matrix.mean(axis=0)
    ci = sps.ttest_1samp(per_query, 0.0).confidence_interval(confidence) if len(per_query) > 1 else None
    seed_means = matrix.mean(axis=1)
    seed_ci = (sps.ttest_1samp(seed_means, 0.0).confidence_interval(confidence)
               if len(seed_means) > 1 and np.ptp(seed_means) > 0 else None)
    mean = float(per_query.mean())
    return ArmSummary(mean, float(ci.low) if ci else math.nan, float(ci.high) if ci else math.nan,
                      [float(x) for x in seed_means],
                      float(seed_ci.low) if seed_ci else (mean if len(seed_means) > 1 else math.nan),
                      float(seed_ci.high) if seed_ci else (mean if len(seed_means) > 1 else math.nan),
                      matrix.shape[1], matrix.shape[0])


@dataclasses.dataclass(frozen=True)
class PairedTest:
    arm: str
    baseline: str
    difference: float   # mean over queries of (arm - baseline), seed-averaged
    ci_low: float       # 95% CI of the difference (paired t)
    ci_high: float
    t_statistic: float
    p_value: float      # two-sided paired t-test
    p_adjusted: float   # Holm over the comparisons of one family
    wilcoxon_p: float   # two-sided Wilcoxon signed-rank (nan when every difference is 0)
    significant: bool   # p_adjusted < alpha


def _constant(d: np.ndarray) -> bool:
    """The same difference on every query, up to float rounding."""
    return bool(np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())))


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float, float, float]:
    d = a - b
    if _constant(d):  # constant differences: the t statistic is undefined; no evidence either way
        return float(d.mean()), float(d[0]), float(d[0]), math.nan, 1.0, math.nan
    t = sps.ttest_rel(a, b)
    ci = t.confidence_interval(0.95)
    try:
        w = float(sps.wilcoxon(a, b).pvalue)
    except ValueError:
        w = math.nan
    return float(d.mean()), float(ci.low), float(ci.high), float(t.statistic), float(t.pvalue), w


def paired_tests(per_query: Mapping[str, np.ndarray], baseline: str, alpha: float = ALPHA,
                 method: str = CORRECTION) -> list[PairedTest]:
    """Each arm against `baseline` on seed-averaged per-query scores ({arm: [queries]}, same query order):
    paired t-test (and Wilcoxon), p-values corrected together by `method` (statsmodels multipletests)."""
    from statsmodels.stats.multitest import multipletests

    arms = [a for a in per_query if a != baseline]
    raw = [_paired(per_query[a], per_query[baseline]) for a in arms]
    if not arms:
        return []
    reject, adjusted, _, _ = multipletests([r[4] for r in raw], alpha=alpha, method=method)
    return [PairedTest(a, baseline, r[0], r[1], r[2], r[3], r[4], float(p), r[5], bool(rej))
            for a, r, p, rej in zip(arms, raw, adjusted, reject)]


@dataclasses.dataclass(frozen=True)
class EquivalenceTest:
    arm: str
    other: str
    difference: float
    margin: float       # equivalence bounds are (-margin, +margin) on the metric's scale
    p_value: float      # TOST: the larger of the two one-sided p-values
    equivalent: bool    # p_value < alpha


def tost(a: np.ndarray, b: np.ndarray, margin: float, arm: str = "", other: str = "",
         alpha: float = ALPHA) -> EquivalenceTest:
    """Two one-sided paired t-tests of |mean(a - b)| < margin (statsmodels ttost_paired)."""
    from statsmodels.stats.weightstats import ttost_paired

    d = a - b
    if _constant(d):  # no variance: equivalent exactly when the constant difference is inside the bounds
        p = 0.0 if abs(d[0]) < margin else 1.0
    else:
        p = float(ttost_paired(a, b, -margin, margin)[0])
    return EquivalenceTest(arm, other, float(d.mean()), margin, p, p < alpha)


def seed_averaged(matrices: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {arm: m.mean(axis=0) for arm, m in matrices.items()}
