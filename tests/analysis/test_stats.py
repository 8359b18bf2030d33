"""The comparison's statistics, against scipy.stats on fixed numbers and one example by hand."""

import math

import numpy as np
import pytest
from scipy import stats as sp

from pipeline.analysis import stats

A = [0.9728, 0.9741, 0.9719, 0.9733, 0.9722]  # five seeds of one configuration
B = [0.9233, 0.9240, 0.9221, 0.9245, 0.9230]  # the same seeds of another


def test_summary_by_hand():
    # 1, 2, 3: mean 2, std 1 (ddof=1), sem 1/sqrt(3); t(0.975, 2) = 4.302652729749464.
    s = stats.summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std, s.min, s.max) == (3, 2.0, 1.0, 1.0, 3.0)
    half = 4.302652729749464 / math.sqrt(3)
    assert s.ci == pytest.approx((2 - half, 2 + half), abs=1e-9)


def test_summary_matches_scipy():
    s = stats.summarize(A)
    assert s.std == pytest.approx(np.std(A, ddof=1))
    low, high = sp.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=sp.sem(A))
    assert s.ci == pytest.approx((low, high))


def test_one_value_has_no_spread_and_no_interval():
    s = stats.summarize([0.9])
    assert (s.n, s.std, s.ci, s.min, s.max) == (1, None, None, 0.9, 0.9)
    with pytest.raises(ValueError):
        stats.summarize([])


def test_paired_t_by_hand_and_against_scipy():
    # Differences 1, 2, 3: mean 2, sd 1, t = 2 / (1/sqrt(3)) = 3.4641; two-sided p with 2 df.
    t = stats.paired_t([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert t.diff == 2.0
    assert t.p == pytest.approx(2 * sp.t.sf(2 * math.sqrt(3), 2))
    assert t.p == pytest.approx(0.07417990022744862, rel=1e-9)
    half = 4.302652729749464 / math.sqrt(3)
    assert t.ci == pytest.approx((2 - half, 2 + half))
    ref = sp.ttest_rel(A, B)
    t = stats.paired_t(A, B)
    assert t.p == pytest.approx(ref.pvalue)
    assert t.ci == pytest.approx(tuple(ref.confidence_interval()))
    assert t.name == "paired t-test over 5 seeds"


def test_welch_by_hand_and_against_scipy():
    # a = 1, 2, 3 (var 1), b = 2, 4, 6, 8 (var 6.667): se^2 = 1/3 + 6.667/4 = 2.0;
    # t = (2 - 5) / sqrt(2); Welch–Satterthwaite df = 2^2 / ((1/3)^2/2 + (5/3)^2/3) = 3.9706.
    t = stats.welch_t([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    df = 4 / ((1 / 3) ** 2 / 2 + (5 / 3) ** 2 / 3)
    assert t.diff == -3.0
    assert t.p == pytest.approx(2 * sp.t.sf(3 / math.sqrt(2), df))
    ref = sp.ttest_ind(A, B[:4], equal_var=False)
    got = stats.welch_t(A, B[:4])
    assert got.p == pytest.approx(ref.pvalue)
    assert got.ci == pytest.approx(tuple(ref.confidence_interval()))


def test_no_spread_is_said_not_divided_by_zero():
    t = stats.paired_t([0.5, 0.6], [0.4, 0.5])
    assert t.p is None and t.ci == (pytest.approx(0.1), pytest.approx(0.1))
    assert "same for every seed" in t.why


def test_mcnemar_by_hand_and_against_scipy():
    # 100 examples: A alone right on 9, B alone right on 1, both right on 80, both wrong on 10.
    right_a = np.array([True] * 9 + [False] * 1 + [True] * 80 + [False] * 10)
    right_b = np.array([False] * 9 + [True] * 1 + [True] * 80 + [False] * 10)
    t = stats.mcnemar(right_a, right_b)
    assert t.diff == pytest.approx(0.08)
    # Exact: two-sided binomial of 1 in 10 at 1/2 = 2 * (1 + 10) / 1024.
    assert t.p == pytest.approx(22 / 1024)
    assert t.p == pytest.approx(sp.binomtest(9, 10, 0.5).pvalue)
    se = math.sqrt(10 - 64 / 100) / 100
    assert t.ci == pytest.approx((0.08 - 1.959963984540054 * se, 0.08 + 1.959963984540054 * se))
    same = stats.mcnemar(right_a, right_a)
    assert (same.diff, same.p) == (0.0, 1.0)


def test_holm_by_hand():
    # p 0.01, 0.04, 0.03 over m = 3: sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04) = 0.06.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, None, 0.6]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert stats.holm([]) == []


def test_p_formats():
    assert stats.format_p(0.0004) == "p < 0.001"
    assert stats.format_p(0.6234) == "p = 0.623"
    assert stats.format_p(None) == "p undefined"
