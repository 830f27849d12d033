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
# Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit, so p in {0, 1} (isotonic output)
# stays finite in the slope/intercept fits. Local on purpose: the calibrators' clip may change independently.
LOGIT_EPS = 1e-7
NEWTON_MAX_ITER = 50
NEWTON_TOL = 1e-6
MAX_HALVINGS = 30
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


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def _likelihood(w: np.ndarray, y: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted log-likelihood per row and the fitted probabilities, sharing one exp (stable for any eta)."""
    e = np.exp(-np.abs(eta))
    mu = np.where(eta >= 0, 1.0, e) / (1.0 + e)
    ll = (w * (y * eta - np.maximum(eta, 0.0) - np.log1p(e))).sum(axis=1)
    return ll, mu


def _both_classes(w: np.ndarray, y: np.ndarray) -> np.ndarray:
    pos = w @ y.astype(np.float64)
    return (pos > 0) & (pos < w.sum(axis=1))


def _separated(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rows where x separates the classes (completely or quasi-completely): the slope MLE is infinite."""
    present = w > 0
    neg = present & (y == 0)
    pos = present & (y == 1)
    max0 = np.where(neg, x, -np.inf).max(axis=1)
    min0 = np.where(neg, x, np.inf).min(axis=1)
    max1 = np.where(pos, x, -np.inf).max(axis=1)
    min1 = np.where(pos, x, np.inf).min(axis=1)
    return (max0 <= min1) | (max1 <= min0)


def fit_logistic_rows(
    w: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    free_slope: bool,
    start: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted maximum-likelihood logistic regression of y on x, one fit per row of ``w`` (B x n).

    ``free_slope``: fit ``logit P(y=1) = a + b x``; otherwise ``a + x`` (x an offset, slope fixed at 1).
    Damped Newton-Raphson from ``start`` (default (0, 1): perfect calibration), halving a step until the
    log-likelihood does not decrease; at most ``NEWTON_MAX_ITER`` iterations. Returns ``(a, b, converged)``;
    rows that did not converge (or whose information matrix is singular) hold NaN.
    """
    w = np.asarray(w, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    rows = w.shape[0]
    a = np.full(rows, float(start[0]))
    b = np.full(rows, float(start[1]) if free_slope else 1.0)
    ll, mu = _likelihood(w, y, a[:, None] + b[:, None] * x)
    converged = np.zeros(rows, dtype=bool)
    active = np.ones(rows, dtype=bool)
    for _ in range(NEWTON_MAX_ITER):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        sel = slice(None) if idx.size == rows else idx  # a view, not a copy, while every row is active
        ww, aa, bb, ll_old, m = w[sel], a[sel], b[sel], ll[sel], mu[sel]
        resid = ww * (y - m)
        info = ww * m * (1.0 - m)
        g0, h00 = resid.sum(axis=1), info.sum(axis=1)
        if free_slope:
            g1, h01, h11 = resid @ x, info @ x, info @ (x * x)
            det = h00 * h11 - h01 * h01
            ok = det > 1e-12 * np.maximum(h00 * h11, 1e-300)
            det = np.where(ok, det, 1.0)
            da = (h11 * g0 - h01 * g1) / det
            db = (h00 * g1 - h01 * g0) / det
        else:
            ok = h00 > 1e-300
            da = g0 / np.where(ok, h00, 1.0)
            db = np.zeros_like(da)
        # Converged when the full Newton step is negligible (judged before any damping).
        done = ok & (np.maximum(np.abs(da), np.abs(db)) < NEWTON_TOL * (1.0 + np.abs(aa) + np.abs(bb)))
        t = np.ones_like(da)
        for _ in range(MAX_HALVINGS):
            ll_new, mu_new = _likelihood(ww, y, (aa + t * da)[:, None] + (bb + t * db)[:, None] * x)
            worse = ll_new < ll_old - 1e-12 * np.abs(ll_old)
            if not worse.any():
                break
            t = np.where(worse, t / 2.0, t)
        a[sel] = aa + t * da
        b[sel] = bb + t * db
        ll[sel] = ll_new
        mu[sel] = mu_new
        converged[sel] = done
        active[sel] = ok & ~done
    a = np.where(converged, a, np.nan)
    b = np.where(converged, b, np.nan)
    return a, b, converged


def _warm_start(y: np.ndarray, x: np.ndarray, free_slope: bool) -> tuple[float, float]:
    """The full-sample fit (or (0, 1) when undefined): bootstrap fits start there and converge in a few steps."""
    a, b, ok = fit_logistic_rows(np.ones((1, y.shape[0])), y, x, free_slope)
    return (float(a[0]), float(b[0])) if ok[0] else (0.0, 1.0)


def calibration_slope_statistic(y: np.ndarray, p: np.ndarray) -> Statistic:
    """Weighted calibration slope: coefficient b of ``logit P(y=1) = a + b logit(p)`` (NaN when undefined:
    one class, or the predictions separate the classes so the slope is infinite)."""
    y = np.asarray(y, dtype=np.float64)
    x = _logit(p)
    start: list[tuple[float, float]] = []

    def stat(w: np.ndarray) -> np.ndarray:
        out = np.full(w.shape[0], np.nan)
        fit = _both_classes(w, y) & ~_separated(w, y, x)
        if fit.any():
            if not start:
                start.append(_warm_start(y, x, True) if _defined_slope(y, x) else (0.0, 1.0))
            out[fit] = fit_logistic_rows(w[fit], y, x, free_slope=True, start=start[0])[1]
        return out

    return stat


def calibration_intercept_statistic(y: np.ndarray, p: np.ndarray) -> Statistic:
    """Weighted calibration intercept: a of ``logit P(y=1) = a + logit(p)`` (slope fixed at 1, i.e.
    calibration-in-the-large on the log-odds scale; 0 when calibrated; NaN with one class)."""
    y = np.asarray(y, dtype=np.float64)
    x = _logit(p)
    start: list[tuple[float, float]] = []

    def stat(w: np.ndarray) -> np.ndarray:
        out = np.full(w.shape[0], np.nan)
        fit = _both_classes(w, y)
        if fit.any():
            if not start:
                start.append(_warm_start(y, x, False))
            out[fit] = fit_logistic_rows(w[fit], y, x, free_slope=False, start=start[0])[0]
        return out

    return stat


def _defined_slope(y: np.ndarray, x: np.ndarray) -> bool:
    ones = np.ones((1, y.shape[0]))
    return bool(_both_classes(ones, y)[0] and not _separated(ones, y, x)[0])


def _slope_reason(y: np.ndarray, p: np.ndarray, what: str) -> str:
    """Why the slope (or intercept) of this sample is undefined."""
    positives = int(y.sum())
    if positives == 0 or positives == y.shape[0]:
        return f"the {what} needs both classes; this split has {positives} positive of {y.shape[0]}"
    x = _logit(p)
    if what == "calibration slope" and np.ptp(x) == 0:
        return "all predictions are equal: no slope to fit"
    if what == "calibration slope" and _separated(np.ones((1, y.shape[0])), y, x)[0]:
        return (
            "the predictions separate the classes perfectly (no positive ranks below a negative): "
            "the slope is infinite, not estimable"
        )
    return f"the logistic fit did not converge in {NEWTON_MAX_ITER} iterations"


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
