"""Calibration measures with stratified bootstrap intervals: ECE (equal-width and equal-mass), MCE, Brier,
NLL, mean predicted probability against observed prevalence, and the calibration slope and intercept.

Every measure is written as a weighted statistic (see :mod:`workbench.evaluation.bootstrap`), so the point
estimate and the bootstrap use one formula. ECE with 15 equal-width bins equals
``netcal.metrics.ECE(bins=15).measure(p, y)``. For the equal-mass ECE the bin edges come from the full
sample and stay fixed across resamples (the interval reflects resampling of cases, not of edges).
Under the stratified bootstrap the prevalence is fixed, so its interval is the Wilson interval.

Reading an ECE needs its sample size: the plug-in binned ECE is biased upward (a perfectly calibrated model
on 400 cases shows ECE ~0.03-0.05). So next to it stand a debiased L2 ECE (Kumar, Liang & Ma 2019) and the
ECE a perfectly calibrated model would show with the same predictions and n (by simulation); :func:`read_ece`
turns them into one sentence. The calibration slope and intercept (Van Calster et al.; TRIPOD) are weighted
logistic regressions on logit(p), fitted by vectorised Newton-Raphson so they run inside the bootstrap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.calibration.reliability import DEFAULT_BINS, assign_bins, bin_edges
from workbench.calibration.slope import (
    _slope_reason,
    calibration_intercept_statistic,
    calibration_slope_statistic,
)
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    MAX_CHUNK_ELEMENTS,
    Statistic,
    bootstrap_distribution,
    percentile_interval,
    wilson_interval,
)
from workbench.evaluation.metrics import Estimate, interval_flag, validate_binary

NLL_EPS = 1e-7


# With more undefined (separated) resamples than this the bootstrap interval of the slope is not reported:
# the defined resamples alone would give a falsely narrow interval.
MAX_UNDEFINED_FRACTION = 0.05
NULL_SIMULATIONS = 200
NULL_QUANTILE = 0.95
INTERVAL_METHOD = "stratified bootstrap percentile"


def _bin_matrix(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = assign_bins(p, edges)
    onehot = np.zeros((p.shape[0], edges.shape[0] - 1))
    onehot[np.arange(p.shape[0]), idx] = 1.0
    return onehot


def _binned(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-case bin membership (one-hot) and its label- and prediction-weighted copies."""
    onehot = _bin_matrix(p, edges)
    return onehot, onehot * y[:, None], onehot * p[:, None]


def ece_statistic(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> Statistic:
    """Weighted ECE: sum over bins of |observed positives - sum of predictions| / total weight."""
    onehot, a_y, a_p = _binned(y, p, edges)

    def stat(w: np.ndarray) -> np.ndarray:
        return np.abs(w @ a_y - w @ a_p).sum(axis=1) / w.sum(axis=1)

    return stat


def mce_statistic(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> Statistic:
    """Weighted MCE: largest |observed frequency - mean prediction| over non-empty bins."""
    onehot, a_y, a_p = _binned(y, p, edges)

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


def ece_debiased_statistic(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> Statistic:
    """Weighted debiased L2 (RMS) ECE of Kumar, Liang & Ma (2019, "Verified Uncertainty Calibration").

    Per bin the squared gap (observed - mean predicted)^2 is reduced by the variance of the observed
    frequency, ybar (1 - ybar) / (n_b - 1), which is what makes the plug-in estimate biased upward; bins with
    fewer than 2 cases contribute 0 (as in the authors' code). The count-weighted mean over bins estimates
    the squared calibration error and may be negative; the statistic is its square root clipped at 0.
    """
    square = ece_debiased_squared_statistic(y, p, edges)
    return lambda w: np.sqrt(np.maximum(square(w), 0.0))


def ece_debiased_squared_statistic(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> Statistic:
    """Weighted debiased squared L2 ECE (unclipped, may be negative); see :func:`ece_debiased_statistic`."""
    onehot, a_y, a_p = _binned(y, p, edges)

    def stat(w: np.ndarray) -> np.ndarray:
        counts = w @ onehot
        usable = counts >= 2
        safe = np.where(usable, counts, 2.0)
        ybar = (w @ a_y) / safe
        pbar = (w @ a_p) / safe
        term = np.where(usable, (ybar - pbar) ** 2 - ybar * (1.0 - ybar) / (safe - 1.0), 0.0)
        return (counts * term).sum(axis=1) / w.sum(axis=1)

    return stat


def ece_null_distribution(
    p: np.ndarray, edges: np.ndarray, n_sim: int = NULL_SIMULATIONS, seed: int = 0
) -> np.ndarray:
    """Plug-in ECE of a perfectly calibrated model with these predictions: labels drawn y* ~ Bernoulli(p),
    ``n_sim`` times with a fixed seed; returns the ``(n_sim,)`` simulated ECE values."""
    p = np.asarray(p, dtype=np.float64)
    n = p.shape[0]
    onehot = _bin_matrix(p, edges)
    expected = p @ onehot
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_CHUNK_ELEMENTS // max(n, 1))
    out = []
    for start in range(0, n_sim, chunk):
        b = min(chunk, n_sim - start)
        y_sim = (rng.random((b, n)) < p).astype(np.float64)
        out.append(np.abs(y_sim @ onehot - expected).sum(axis=1) / n)
    return np.concatenate(out)


def calibration_slope(y: Any, p: Any) -> float | None:
    """Calibration slope (1 when calibrated, < 1 overconfident, > 1 underconfident); None when undefined."""
    y, p = validate_binary(y, p)
    value = _point(calibration_slope_statistic(y, p), y.shape[0])
    return value if np.isfinite(value) else None


def calibration_intercept(y: Any, p: Any) -> float | None:
    """Calibration intercept with the slope fixed at 1 (0 when calibrated, > 0 under-predicts risk)."""
    y, p = validate_binary(y, p)
    value = _point(calibration_intercept_statistic(y, p), y.shape[0])
    return value if np.isfinite(value) else None


def ece_debiased(y: Any, p: Any, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """Debiased L2 (RMS) calibration error (Kumar et al. 2019); see :func:`ece_debiased_statistic`."""
    y, p = validate_binary(y, p)
    return _point(ece_debiased_statistic(y, p, bin_edges(p, n_bins, strategy)), y.shape[0])


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
        est.flag = interval_flag(
            est, "for ECE, read ece_debiased and ece_null (a perfectly calibrated model's ECE)"
        )
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
    where ``measures`` maps ``ece``, ``ece_quantile``, ``ece_debiased``, ``mce``, ``mce_quantile``,
    ``brier``, ``nll``, ``mean_predicted``, ``observed_prevalence`` (Wilson), ``calibration_in_the_large``
    (mean predicted minus prevalence), ``calibration_slope``, ``calibration_intercept`` and ``ece_null``
    to :class:`~workbench.evaluation.metrics.Estimate` dicts. Extra keys: the MCE entries carry
    ``bin_counts`` and the worst ``bin``; ``ece_debiased`` its ``squared`` value (unclipped) and
    ``error: 'L2'``; the slope and intercept ``interval`` (how it was computed) and
    ``undefined_resamples``; ``ece_null`` (``value`` mean, ``high`` 95th percentile of the plug-in ECE of a
    perfectly calibrated model with these predictions) carries ``n``, ``n_sim`` and ``quantile``.
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
        "ece_debiased": ece_debiased_statistic(y, p, edges_u),
        "mce": mce_statistic(y, p, edges_u),
        "mce_quantile": mce_statistic(y, p, edges_q),
        "brier": brier_statistic(y, p),
        "nll": nll_statistic(y, p),
        "mean_predicted": mean_statistic(p),
        "calibration_in_the_large": mean_statistic(p - prevalence),
        "calibration_slope": calibration_slope_statistic(y, p),
        "calibration_intercept": calibration_intercept_statistic(y, p),
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
    measures["ece_debiased"].update(
        squared=_opt(_point(ece_debiased_squared_statistic(y, p, edges_u), n)), error="L2"
    )
    for key, what in (
        ("calibration_slope", "calibration slope"),
        ("calibration_intercept", "calibration intercept"),
    ):
        _finish_logistic(measures[key], boot[key], y, p, what)
    null = ece_null_distribution(p, edges_u, seed=seed)
    measures["ece_null"] = Estimate(
        value=float(null.mean()), high=float(np.quantile(null, NULL_QUANTILE))
    ).to_dict() | {"n": n, "n_sim": int(null.shape[0]), "quantile": NULL_QUANTILE}
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


def _opt(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _finish_logistic(
    entry: dict[str, Any], samples: np.ndarray, y: np.ndarray, p: np.ndarray, what: str
) -> None:
    """Add the interval method, the undefined resamples, and the reason when undefined or too unstable."""
    undefined = int((~np.isfinite(samples)).sum())
    entry.update(interval=INTERVAL_METHOD, undefined_resamples=undefined)
    if entry["value"] is None:
        entry.update(low=None, high=None, reason=_slope_reason(y, p, what))
    elif undefined > MAX_UNDEFINED_FRACTION * samples.shape[0]:
        entry.update(
            low=None,
            high=None,
            reason=f"no interval: the {what} is undefined (classes separated) in {undefined} of "
            f"{samples.shape[0]} bootstrap resamples",
        )


def read_ece(measures: dict[str, Any], digits: int = 3) -> str:
    """One sentence reading the plug-in ECE against what a perfectly calibrated model shows at this n.

    Accepts the ``measures`` map of :func:`measure_calibration` (or its whole output). Without a stored
    reference level (measures from before it existed) the sentence says so instead of judging.
    """
    m = measures.get("measures", measures)
    ece_value = (m.get("ece") or {}).get("value")
    if ece_value is None:
        return "ECE not available"
    null = m.get("ece_null") or {}
    p95, n = null.get("high"), null.get("n")
    text = f"ECE {ece_value:.{digits}f}"
    if p95 is None or n is None:
        return f"{text}: no reference level stored (recalibrate to compare with a perfectly calibrated model)"
    pct = int(round(100 * float(null.get("quantile", NULL_QUANTILE))))
    if ece_value > p95:
        return (
            f"{text} exceeds the {pct}th percentile ({p95:.{digits}f}) of a perfectly calibrated model "
            f"at this n (n={n})"
        )
    return f"{text} is within what a perfectly calibrated model shows on n={n} ({pct}th pct {p95:.{digits}f})"
