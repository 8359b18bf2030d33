"""The statistics of a comparison: the spread of a group of runs, and tests of the difference
between two groups. Distributions come from `scipy.stats`; nothing here imports MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """n values: their mean, sample standard deviation (ddof=1), the Student's t confidence
    interval of the mean, min and max. With n = 1 there is no std and no interval (None)."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None
    min: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    """Summary of `values` (at least one)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("no values to summarise")
    mean = float(a.mean())
    if a.size == 1:
        return Summary(1, mean, None, None, mean, mean)
    std = float(a.std(ddof=1))
    sem = std / math.sqrt(a.size)
    if sem == 0:
        ci = (mean, mean)
    else:
        low, high = stats.t.interval(CONFIDENCE, a.size - 1, loc=mean, scale=sem)
        ci = (float(low), float(high))
    return Summary(int(a.size), mean, std, ci, float(a.min()), float(a.max()))


@dataclass(frozen=True)
class Test:
    """A difference A - B with its confidence interval and the test's two-sided p-value.

    `name` says which test ("paired t-test over 5 seeds", …); p is None when the test cannot
    be computed (then `why` says so); ci is None when there is no interval.
    """

    name: str
    diff: float
    ci: tuple[float, float] | None
    p: float | None
    why: str = ""


def _ci(result) -> tuple[float, float]:
    interval = result.confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high)


def paired_t(a: Sequence[float], b: Sequence[float]) -> Test:
    """Paired t-test of a[i] - b[i] (the same seeds, in the same order)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(np.mean(a - b))
    name = f"paired t-test over {len(a)} seeds"
    if np.all(a - b == (a - b)[0]):  # no spread: t is undefined
        return Test(name, diff, (diff, diff), None, "the difference is the same for every seed")
    result = stats.ttest_rel(a, b)
    return Test(name, diff, _ci(result), float(result.pvalue))


def welch_t(a: Sequence[float], b: Sequence[float]) -> Test:
    """Welch's t-test (unequal variances) of mean(a) - mean(b)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    name = f"Welch's t-test, n={len(a)} vs n={len(b)}"
    if a.std() == 0 and b.std() == 0:
        return Test(name, diff, (diff, diff), None, "every run of each side has the same value")
    result = stats.ttest_ind(a, b, equal_var=False)
    return Test(name, diff, _ci(result), float(result.pvalue))


def mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> Test:
    """McNemar's exact test on two classifiers' per-example correctness (same examples).

    The difference is accuracy(A) - accuracy(B); its interval is the Wald interval of a
    difference of paired proportions.
    """
    right_a, right_b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    n = right_a.size
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(~right_a & right_b))
    diff = (only_a - only_b) / n
    name = f"McNemar's exact test on {n} test examples"
    if only_a + only_b == 0:
        return Test(name, 0.0, (0.0, 0.0), 1.0)
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    return Test(name, diff, (diff - z * se, diff + z * se), p)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None)."""
    known = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    m = len(known)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def format_p(p: float | None) -> str:
    if p is None:
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
