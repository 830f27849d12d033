"""Calibration measures with stratified bootstrap intervals: ECE (equal-width and equal-mass), MCE, Brier,
NLL, and mean predicted probability against observed prevalence.

Every measure is written as a weighted statistic (see :mod:`workbench.evaluation.bootstrap`), so the point
estimate and the bootstrap use one formula. ECE with 15 equal-width bins equals
``netcal.metrics.ECE(bins=15).measure(p, y)``. For the equal-mass ECE the bin edges come from the full
sample and stay fixed across resamples (the interval reflects resampling of cases, not of edges).
Under the stratified bootstrap the prevalence is fixed, so its interval is the Wilson interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.calibration.reliability import DEFAULT_BINS, assign_bins, bin_edges
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    Statistic,
    bootstrap_distribution,
    percentile_interval,
    wilson_interval,
)
from workbench.evaluation.metrics import Estimate, validate_binary

NLL_EPS = 1e-7


def _bin_matrix(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = assign_bins(p, edges)
    onehot = np.zeros((p.shape[0], edges.shape[0] - 1))
    onehot[np.arange(p.shape[0]), idx] = 1.0
    return onehot


def ece_statistic(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> Statistic:
    """Weighted ECE: sum over bins of |observed positives - sum of predictions| / total weight."""
    onehot = _bin_matrix(p, edges)
    a_y = onehot * y[:, None]
    a_p = onehot * p[:, None]

    def stat(w: np.ndarray) -> np.ndarray:
        return np.abs(w @ a_y - w @ a_p).sum(axis=1) / w.sum(axis=1)

    return stat


def mce_statistic(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> Statistic:
    """Weighted MCE: largest |observed frequency - mean prediction| over non-empty bins."""
    onehot = _bin_matrix(p, edges)
    a_y = onehot * y[:, None]
    a_p = onehot * p[:, None]

    def stat(w: np.ndarray) -> np.ndarray:
        counts = w @ onehot
        gap = np.zeros_like(counts)
        np.divide(np.abs(w @ a_y - w @ a_p), counts, out=gap, where=counts > 0)
        return gap.max(axis=1)

    return stat


def brier_statistic(y: np.ndarray, p: np.ndarray) -> Statistic:
    sq = (p - y) ** 2
    return lambda w: (w @ sq) / w.sum(axis=1)


def nll_statistic(y: np.ndarray, p: np.ndarray) -> Statistic:
    q = np.clip(p, NLL_EPS, 1.0 - NLL_EPS)
    loss = -(y * np.log(q) + (1 - y) * np.log1p(-q))
    return lambda w: (w @ loss) / w.sum(axis=1)


def mean_statistic(values: np.ndarray) -> Statistic:
    values = np.asarray(values, dtype=np.float64)
    return lambda w: (w @ values) / w.sum(axis=1)


def _point(stat: Statistic, n: int) -> float:
    return float(stat(np.ones((1, n)))[0])


def ece(y: Any, p: Any, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """Expected calibration error of positive-class probabilities (count-weighted mean |gap| per bin)."""
    y, p = validate_binary(y, p)
    return _point(ece_statistic(y, p, bin_edges(p, n_bins, strategy)), y.shape[0])


def mce(y: Any, p: Any, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> dict[str, Any]:
    """Maximum calibration error with the bin counts: ``{'value', 'bin', 'bin_counts', 'edges'}``.

    Read it with the counts: the worst bin often holds only a handful of cases.
    """
    y, p = validate_binary(y, p)
    edges = bin_edges(p, n_bins, strategy)
    onehot = _bin_matrix(p, edges)
    counts = onehot.sum(axis=0)
    gap = np.zeros_like(counts)
    np.divide(np.abs(onehot.T @ y - onehot.T @ p), counts, out=gap, where=counts > 0)
    worst = int(np.argmax(gap))
    return {
        "value": float(gap[worst]),
        "bin": worst,
        "bin_count": int(counts[worst]),
        "bin_counts": [int(c) for c in counts],
        "edges": [float(e) for e in edges],
    }


def brier(y: Any, p: Any) -> float:
    """Mean squared error of the probabilities."""
    y, p = validate_binary(y, p)
    return _point(brier_statistic(y, p), y.shape[0])


def nll(y: Any, p: Any) -> float:
    """Mean negative log-likelihood (log loss), probabilities clipped to [1e-7, 1 - 1e-7]."""
    y, p = validate_binary(y, p)
    return _point(nll_statistic(y, p), y.shape[0])


def _estimate(point: float, samples: np.ndarray, level: float) -> Estimate:
    est = Estimate(value=float(point))
    ci = percentile_interval(samples, level)
    if ci is not None:
        est.low, est.high = ci
    return est


def measure_calibration(
    y: Any,
    p: Any,
    split: str,
    n_bins: int = DEFAULT_BINS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """All calibration measures for one named split, with stratified bootstrap intervals (JSON-safe).

    Returns ``{'split', 'n', 'positives', 'negatives', 'n_bins', 'n_boot', 'seed', 'level', 'measures'}``
    where ``measures`` maps ``ece``, ``ece_quantile``, ``mce``, ``mce_quantile``, ``brier``, ``nll``,
    ``mean_predicted``, ``observed_prevalence`` (Wilson) and ``calibration_in_the_large`` (mean predicted
    minus prevalence) to :class:`~workbench.evaluation.metrics.Estimate` dicts; the MCE entries also carry
    ``bin_counts`` and the worst ``bin``.
    """
    y, p = validate_binary(y, p, what=f"split '{split}'")
    n = int(y.shape[0])
    positives = int(y.sum())
    edges_u = bin_edges(p, n_bins, "uniform")
    edges_q = bin_edges(p, n_bins, "quantile")
    prevalence = positives / n
    stats: dict[str, Statistic] = {
        "ece": ece_statistic(y, p, edges_u),
        "ece_quantile": ece_statistic(y, p, edges_q),
        "mce": mce_statistic(y, p, edges_u),
        "mce_quantile": mce_statistic(y, p, edges_q),
        "brier": brier_statistic(y, p),
        "nll": nll_statistic(y, p),
        "mean_predicted": mean_statistic(p),
        "calibration_in_the_large": mean_statistic(p - prevalence),
    }
    boot = bootstrap_distribution(y, stats, n_boot=n_boot, seed=seed)
    measures: dict[str, Any] = {
        name: _estimate(_point(fn, n), boot[name], level).to_dict() for name, fn in stats.items()
    }
    for key, strategy in (("mce", "uniform"), ("mce_quantile", "quantile")):
        detail = mce(y, p, n_bins, strategy)
        measures[key].update(
            bin=detail["bin"], bin_count=detail["bin_count"], bin_counts=detail["bin_counts"]
        )
    wi = wilson_interval(positives, n, level)
    measures["observed_prevalence"] = Estimate(
        value=prevalence, wilson_low=wi[0] if wi else None, wilson_high=wi[1] if wi else None
    ).to_dict()
    return {
        "split": split,
        "n": n,
        "positives": positives,
        "negatives": n - positives,
        "n_bins": int(n_bins),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "measures": measures,
    }
