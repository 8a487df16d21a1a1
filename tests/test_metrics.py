"""Tests for heads.metrics: scipy agreement, hand-computed cases, orientation, fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from heads.metrics import compute_metrics, fit_logistic, summarize


def test_matches_scipy_on_random_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.7, size=40)
    m = compute_metrics(x, y)
    assert m["srcc"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert m["plcc"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert m["krcc"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((x - y) ** 2)))
    assert set(m) == {"srcc", "plcc", "krcc", "rmse"}


def test_hand_computed_values() -> None:
    # ranks of pred: 1,2,3,4; target ranks: 1,3,2,4 -> d^2 = 0+1+1+0 = 2
    # srcc = 1 - 6*2/(4*15) = 0.8; concordant 5, discordant 1 -> krcc = 4/6
    m = compute_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["srcc"] == pytest.approx(0.8)
    assert m["krcc"] == pytest.approx(4 / 6)
    assert m["plcc"] == pytest.approx(0.8)  # same values as the ranks
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))


def test_lower_better_flips_correlations() -> None:
    pred = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    dmos = 100 - 50 * pred + np.array([1.0, -2.0, 0.5, 0.0, 1.5])
    plain = compute_metrics(pred, dmos)
    flipped = compute_metrics(pred, dmos, lower_better=True)
    for key in ("srcc", "plcc", "krcc"):
        assert flipped[key] == pytest.approx(-plain[key])
        assert flipped[key] > 0.8
    assert flipped["rmse"] == pytest.approx(math.sqrt(np.mean((pred + dmos) ** 2)))


def test_monotone_nonlinear_predictor() -> None:
    x = np.linspace(-3.0, 3.0, 60)
    y = 1.0 + 4.0 * special.expit(2.5 * x)
    m4 = compute_metrics(x, y, logistic=4)
    m5 = compute_metrics(x, y, logistic=5)
    assert m4["srcc"] == pytest.approx(1.0)
    assert m4["krcc"] == pytest.approx(1.0)
    assert m4["plcc"] < 0.99
    assert m4["plcc_logistic"] == pytest.approx(1.0, abs=1e-6)
    assert m5["plcc_logistic"] == pytest.approx(1.0, abs=1e-4)


def test_logistic_on_decreasing_relation() -> None:
    x = np.linspace(0.0, 1.0, 50)
    dmos = 80 - 60 * special.expit(8 * (x - 0.5))
    m = compute_metrics(x, dmos, lower_better=True, logistic=4)
    assert m["srcc"] == pytest.approx(1.0)
    assert m["plcc_logistic"] == pytest.approx(1.0, abs=1e-6)


def test_constant_inputs_give_zero_correlation() -> None:
    m = compute_metrics([0.5] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert m["srcc"] == 0.0 and m["plcc"] == 0.0 and m["krcc"] == 0.0
    assert math.isfinite(m["rmse"])
    with pytest.warns(RuntimeWarning, match="logistic fit failed"):
        m = compute_metrics([0.5] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], logistic=4)
    assert m["plcc_logistic"] == 0.0


def test_failed_fit_falls_back_to_linear_plcc() -> None:
    assert fit_logistic([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    with pytest.raises(ValueError, match="logistic must be one of"):
        compute_metrics([1.0, 2.0], [1.0, 2.0], logistic=3)


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "pred has 3 values but target has 2"),
        ([1.0], [1.0], "at least 2 values"),
        ([1.0, float("nan")], [1.0, 2.0], "pred has a non-finite value at index 1"),
        ([1.0, 2.0], [1.0, float("inf")], "target has a non-finite value at index 1"),
    ],
)
def test_bad_inputs_raise(pred: list[float], target: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(pred, target)


def test_summarize_median_mean_std() -> None:
    runs = [{"srcc": v, "plcc": 2 * v} for v in (0.8, 0.9, 0.85, 0.7)]
    s = summarize(runs)
    assert s["srcc"]["median"] == pytest.approx(0.825)
    assert s["srcc"]["mean"] == pytest.approx(0.8125)
    assert s["srcc"]["std"] == pytest.approx(np.std([0.8, 0.9, 0.85, 0.7]))
    assert s["plcc"]["median"] == pytest.approx(1.65)
    assert s["srcc"]["n"] == 4


def test_summarize_errors() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        summarize([])
    with pytest.raises(ValueError, match="run 1 has keys"):
        summarize([{"srcc": 1.0}, {"plcc": 1.0}])
