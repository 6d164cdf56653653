"""The statistics behind verdicts."""

from __future__ import annotations

import math

import pytest

from nnmark.verify import stats


def test_binomial_p_value_and_threshold_agree():
    n, p0, alpha = 100, 0.1, 1e-6
    k = stats.binomial_threshold(n, p0, alpha)
    assert stats.binomial_p_value(k, n, p0) <= alpha < stats.binomial_p_value(k - 1, n, p0)
    assert stats.binomial_p_value(0, n, p0) == 1.0


def test_p0_bounds_every_calibration_model_and_grows_with_spread():
    tight = stats.bound_p0([0.02, 0.03, 0.02, 0.025], 200).p0
    spread = stats.bound_p0([0.0, 0.1, 0.02, 0.2], 200).p0
    assert tight >= 0.03 and spread >= 0.2
    assert spread > tight


def test_p0_covers_the_spread_seen_between_clean_models():
    # measured: 7 clean digit-cnns sent 200 letters to class 0 at rates 0.06..0.28; a bound from any
    # two of them must still not accuse the 0.28 one at alpha 1e-6
    rates = [0.06, 0.09, 0.12, 0.15, 0.19, 0.23, 0.28]
    for i in range(len(rates) - 1):
        p0 = stats.bound_p0(rates[i : i + 2], 200).p0
        assert stats.binomial_p_value(round(0.28 * 200), 200, p0) > 1e-6


def test_zhang_threshold_and_first_hit():
    assert stats.zhang_threshold_found(28, 40, 0.3) and not stats.zhang_threshold_found(27, 40, 0.3)
    assert math.isclose(stats.first_hit_accuracy(1, 0.8), 0.8)
    assert math.isclose(stats.first_hit_accuracy(3, 0.5), 0.875)


def test_fisher_detects_more_hits_on_keys():
    assert stats.fisher_greater(20, 20, 0, 20) < 1e-9
    assert stats.fisher_greater(5, 20, 5, 20) > 0.4


@pytest.mark.parametrize(("rate", "expected"), [(1.0, True), (0.0, False)])
def test_sprt_decides(rate, expected):
    t = stats.Sprt(p0=0.1, p1=0.8, alpha=1e-6)
    decision = None
    for i in range(200):
        decision = t.update(i < rate * 200)
        if decision is not None:
            break
    assert decision is expected
    assert t.n < 30
