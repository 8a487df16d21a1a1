"""Evaluation metrics for IQA: SRCC, PLCC, KRCC, RMSE and the logistic-fitted PLCC.

Conventions follow the common IQA protocol (hyperIQA, pyiqa's benchmark notes, VQEG
FR-TV Phase II report):

* ``srcc`` = Spearman rank correlation, ``plcc`` = Pearson correlation on the raw
  predictions (no nonlinear correction, as most papers report), ``krcc`` = Kendall's
  tau-b, all from :mod:`scipy.stats`.
* ``plcc_logistic`` (optional) = Pearson correlation after fitting the VQEG
  4-parameter logistic ``(b1 - b2) * expit((x - b3) / b4) + b2`` or the 5-parameter
  logistic ``b1 * (expit(b2 * (x - b3)) - 0.5) + b4 * x + b5`` with
  :func:`scipy.optimize.curve_fit`. The predictions are standardised before the fit
  (an affine change the logistic parameters absorb) so the optimiser is well scaled.
  When the fit fails the linear PLCC is reported instead, with a warning.

Orientation: ``pred`` is a quality prediction (higher = better). With
``lower_better=True`` (DMOS labels) the target is negated before every metric, so a good
predictor reports positive correlations and ``rmse`` is measured against ``-target``.

Deviation: a correlation that is undefined because one input is constant (scipy returns
NaN) is reported as 0.0, so a collapsed model scores "no correlation" instead of
poisoning the median over repeats with NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

METRIC_KEYS = ("srcc", "plcc", "krcc", "rmse")
LOGISTIC_KINDS = (4, 5)


def _as_vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)  # (N,)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} has a non-finite value at index {bad}: {arr[bad]}")
    return arr


def _checked_pair(
    pred: ArrayLike, target: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x, y = _as_vector(pred, "pred"), _as_vector(target, "target")
    if x.shape != y.shape:
        raise ValueError(f"pred has {x.size} values but target has {y.size}")
    if x.size < 2:
        raise ValueError(f"need at least 2 values to correlate, got {x.size}")
    return x, y


def _is_constant(x: NDArray[np.float64]) -> bool:
    return bool(np.ptp(x) == 0.0)


def _correlation(
    fn: Callable[..., object], x: NDArray[np.float64], y: NDArray[np.float64]
) -> float:
    """Correlation statistic of ``fn(x, y)``; 0.0 when either input is constant."""
    if _is_constant(x) or _is_constant(y):
        return 0.0
    value = float(fn(x, y).statistic)  # type: ignore[attr-defined]
    return 0.0 if math.isnan(value) else value


def logistic4(x: NDArray[np.float64], b1: float, b2: float, b3: float, b4: float) -> NDArray:
    """VQEG 4-parameter logistic: ``b2`` to ``b1`` around ``b3`` with scale ``b4``."""
    return (b1 - b2) * special.expit((x - b3) / b4) + b2


def logistic5(
    x: NDArray[np.float64], b1: float, b2: float, b3: float, b4: float, b5: float
) -> NDArray:
    """5-parameter logistic with a linear term (Sheikh et al. 2006, LIVE)."""
    return b1 * (special.expit(b2 * (x - b3)) - 0.5) + b4 * x + b5


def _initial_params(x: NDArray[np.float64], y: NDArray[np.float64], kind: int) -> list[float]:
    if kind == 4:
        return [float(y.max()), float(y.min()), float(x.mean()), float(x.std()) / 4 or 1.0]
    sign = 1.0 if np.corrcoef(x, y)[0, 1] >= 0 else -1.0
    return [sign * float(np.ptp(y)), 1.0, 0.0, 0.0, float(y.mean())]


def fit_logistic(pred: ArrayLike, target: ArrayLike, kind: int = 4) -> NDArray[np.float64] | None:
    """Map ``pred`` onto ``target`` with a fitted logistic.

    Args:
        pred: predictions.
        target: labels (in the orientation the mapping should reproduce).
        kind: 4 or 5 parameters.

    Returns:
        The fitted values for ``pred``, or None when the fit does not converge.
    """
    if kind not in LOGISTIC_KINDS:
        raise ValueError(f"logistic must be one of {LOGISTIC_KINDS} or None, got {kind!r}")
    x, y = _checked_pair(pred, target)
    if _is_constant(x) or _is_constant(y):
        return None
    z = (x - x.mean()) / x.std()
    fn = logistic4 if kind == 4 else logistic5
    try:
        with warnings.catch_warnings():
            # an exact fit leaves no residual to estimate a covariance from: not a failure
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = optimize.curve_fit(fn, z, y, p0=_initial_params(z, y, kind), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    fitted = np.asarray(fn(z, *params), dtype=np.float64)
    return fitted if np.all(np.isfinite(fitted)) else None


def compute_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    lower_better: bool = False,
    logistic: int | None = None,
) -> dict[str, float]:
    """SRCC, PLCC, KRCC and RMSE of quality predictions against labels.

    Args:
        pred: predicted quality, higher = better, shape (N,).
        target: labels, shape (N,), in the dataset's own orientation.
        lower_better: True for DMOS-style labels; the target is negated first.
        logistic: 4 or 5 to add ``plcc_logistic``; None to skip the fit.

    Returns:
        ``{"srcc", "plcc", "krcc", "rmse"}`` (+ ``"plcc_logistic"``) as floats.

    Raises:
        ValueError: on a length mismatch, fewer than 2 values or a non-finite value.
    """
    x, y = _checked_pair(pred, target)
    if lower_better:
        y = -y
    out = {
        "srcc": _correlation(stats.spearmanr, x, y),
        "plcc": _correlation(stats.pearsonr, x, y),
        "krcc": _correlation(stats.kendalltau, x, y),
        "rmse": float(np.sqrt(np.mean((x - y) ** 2))),
    }
    if logistic is not None:
        fitted = fit_logistic(x, y, logistic)
        if fitted is None:
            warnings.warn(
                f"{logistic}-parameter logistic fit failed; plcc_logistic = linear PLCC",
                RuntimeWarning,
                stacklevel=2,
            )
            out["plcc_logistic"] = out["plcc"]
        else:
            out["plcc_logistic"] = _correlation(stats.pearsonr, fitted, y)
    return out


def summarize(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, mean and (population) std of each metric over repeated runs.

    Papers report the median over the 10 random splits; mean and std come along.

    Args:
        runs: one metrics dict per repeat, all with the same keys.

    Returns:
        ``{key: {"median", "mean", "std", "n"}}``.

    Raises:
        ValueError: when ``runs`` is empty or the runs disagree on their keys.
    """
    if not runs:
        raise ValueError("summarize needs at least one run")
    keys = list(runs[0])
    for i, run in enumerate(runs):
        if set(run) != set(keys):
            raise ValueError(f"run {i} has keys {sorted(run)}, run 0 has {sorted(keys)}")
    summary = {}
    for key in keys:
        values = np.array([run[key] for run in runs], dtype=np.float64)
        summary[key] = {
            "median": float(np.median(values)),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "n": float(values.size),
        }
    return summary
