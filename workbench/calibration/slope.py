"""Calibration slope and intercept (Van Calster et al.; TRIPOD) as weighted logistic regressions on logit(p).

Fitted by vectorised Newton-Raphson over many weight rows at once, so the same formula gives the point
estimate and every bootstrap resample (see :mod:`workbench.evaluation.bootstrap`). A sample whose
classes are separated has no finite slope: its statistic is NaN and :func:`_slope_reason` says why.
"""

from __future__ import annotations

import numpy as np

from workbench.evaluation.bootstrap import (
    Statistic,
)

# Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit, so p in {0, 1} (isotonic output)
# stays finite in the slope/intercept fits. Local on purpose: the calibrators' clip may change independently.
LOGIT_EPS = 1e-7
NEWTON_MAX_ITER = 50
NEWTON_TOL = 1e-6
MAX_HALVINGS = 30


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
