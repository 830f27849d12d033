"""Binary classification metrics on (labels, scores), in plain numpy.

Conventions (matching the reference model card):

* a case is predicted positive when ``p >= threshold``;
* precision is 0 when nothing is predicted positive (the card's sweep rows above 0.6);
* metrics that are undefined on a split (sensitivity with no positives, AUROC with one class) are None
  with a reason, never a crash and never a silent 0.

Metrics needed with bootstrap intervals are also offered as *weighted statistics* (see
:mod:`workbench.evaluation.bootstrap`): functions of a ``(B, n)`` weight matrix returning ``(B,)`` values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import Statistic


def _opt_float(value: Any) -> float | None:
    """Python float, or None for None/NaN/inf (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def validate_binary(y: Any, p: Any, what: str = "split") -> tuple[np.ndarray, np.ndarray]:
    """Check and convert labels (0/1) and probabilities ([0, 1]) to int64 / float64 1-D arrays.

    Raises ValidationError naming the problem: empty input, length mismatch, labels other than 0/1,
    probabilities outside [0, 1] or not finite.
    """
    y_arr = np.asarray(y)
    p_arr = np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValidationError(
            f"{what}: labels and probabilities must be 1-D, got shapes {y_arr.shape} and {p_arr.shape}"
        )
    if y_arr.shape[0] != p_arr.shape[0]:
        raise ValidationError(f"{what}: {y_arr.shape[0]} labels but {p_arr.shape[0]} probabilities")
    if y_arr.shape[0] == 0:
        raise ValidationError(f"{what}: no cases")
    if y_arr.dtype == bool:
        y_arr = y_arr.astype(np.int64)
    try:
        y_num = y_arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what}: labels must be 0 or 1") from exc
    bad = ~np.isin(y_num, (0.0, 1.0))
    if bad.any():
        raise ValidationError(
            f"{what}: labels must be 0 or 1; found {np.unique(y_arr[bad])[:5].tolist()} ({int(bad.sum())} cases)"
        )
    if not np.isfinite(p_arr).all():
        raise ValidationError(f"{what}: {int((~np.isfinite(p_arr)).sum())} probabilities are NaN or infinite")
    if p_arr.min() < 0.0 or p_arr.max() > 1.0:
        raise ValidationError(
            f"{what}: probabilities must lie in [0, 1]; found range [{p_arr.min():.4g}, {p_arr.max():.4g}]"
        )
    return y_num.astype(np.int64), p_arr


def check_threshold(threshold: float) -> float:
    """Return the threshold as float, or raise ValidationError when it is outside [0, 1]."""
    try:
        t = float(threshold)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"threshold must be a number in [0, 1], got {threshold!r}") from exc
    if not 0.0 <= t <= 1.0 or not math.isfinite(t):
        raise ValidationError(f"threshold must be in [0, 1], got {threshold!r}")
    return t


@dataclass
class Estimate:
    """A metric value with optional intervals; ``value`` None means undefined, explained by ``reason``.

    ``low``/``high`` is the stratified bootstrap percentile interval; ``wilson_low``/``wilson_high`` the
    Wilson score interval and ``exact_low``/``exact_high`` the exact Clopper-Pearson interval (proportions
    only). ``flag`` is set (by :func:`interval_flag`) when the bootstrap interval is not evidence of
    precision: zero width, or pinned at 0 or 1 with the estimate on that boundary; it says what to read
    instead.
    """

    value: float | None
    low: float | None = None
    high: float | None = None
    wilson_low: float | None = None
    wilson_high: float | None = None
    reason: str | None = None
    exact_low: float | None = None
    exact_high: float | None = None
    flag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if k in _TEXT_FIELDS else _opt_float(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict`; keys missing from older reports (e.g. ``flag``) load as None."""
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})

    @classmethod
    def undefined(cls, reason: str) -> Estimate:
        return cls(value=None, reason=reason)


_TEXT_FIELDS = ("reason", "flag")
#: Interval widths at or below this are zero (percentiles of identical values can differ by rounding).
_ZERO_WIDTH = 1e-12


def exact_proportion_interval(successes: int, total: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval for ``successes / total``; None when ``total`` is 0.

    Used beside the Wilson interval for proportions at 0 or 1, where a bootstrap cannot vary the sample
    and the interval must come from the binomial model itself.
    """
    from scipy.stats import beta

    if not 0.0 < level < 1.0:
        raise ValidationError(f"confidence level must be strictly between 0 and 1, got {level!r}")
    k, n = int(successes), int(total)
    if n < 0 or k < 0 or k > n:
        raise ValidationError(f"exact interval needs 0 <= successes <= total, got {k} of {n}")
    if n == 0:
        return None
    alpha = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - alpha, k + 1, n - k))
    return low, high


def interval_flag(est: Estimate, instead: str) -> str | None:
    """Why ``est``'s bootstrap interval must not be read as evidence, or None when it may be.

    Flags a zero-width interval (the resamples cannot vary this sample, e.g. a perfectly separated split),
    an interval that touches 0 or 1 while the point estimate sits on that same boundary (the bootstrap
    cannot go past it, so the interval is one-sided by construction), and an interval that misses its own
    point estimate (a statistic biased under resampling, such as a binned ECE). ``instead`` is the short advice
    appended to the reason, e.g. which interval to read instead.
    """
    if est.value is None or est.low is None or est.high is None:
        return None
    if est.high - est.low <= _ZERO_WIDTH:
        why = f"zero-width interval [{est.low:.2f}, {est.high:.2f}]: the bootstrap cannot vary this sample"
    elif est.value in (0.0, 1.0) and est.value in (est.low, est.high):
        why = (
            f"at the boundary: the estimate {est.value:.2f} is on the edge of [0, 1] and the bootstrap "
            "interval cannot extend past it"
        )
    elif not est.low - _ZERO_WIDTH <= est.value <= est.high + _ZERO_WIDTH:
        why = (
            f"the estimate {est.value:.4f} lies outside its bootstrap interval [{est.low:.4f}, {est.high:.4f}]: "
            "the statistic is biased under resampling (a binned ECE grows when cases repeat)"
        )
    else:
        return None
    return f"{why}; {instead}" if instead else why


def _levels(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, start index of each distinct score (ascending) and positive mask in sorted order."""
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    return order, starts, (y[order] == 1)


def _level_weights(w: np.ndarray, order: np.ndarray, starts: np.ndarray, pos_sorted: np.ndarray):
    ws = w[:, order]
    wp = np.add.reduceat(np.where(pos_sorted, ws, 0.0), starts, axis=1)
    wn = np.add.reduceat(np.where(pos_sorted, 0.0, ws), starts, axis=1)
    return wp, wn


def auroc_statistic(y: np.ndarray, p: np.ndarray) -> Statistic:
    """Weighted AUROC (Mann-Whitney with ties counted half); NaN when a class has zero weight."""
    order, starts, pos_sorted = _levels(y, p)

    def stat(w: np.ndarray) -> np.ndarray:
        wp, wn = _level_weights(w, order, starts, pos_sorted)
        below = np.cumsum(wn, axis=1) - wn
        num = (wp * (below + 0.5 * wn)).sum(axis=1)
        den = wp.sum(axis=1) * wn.sum(axis=1)
        out = np.full(num.shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    return stat


def average_precision_statistic(y: np.ndarray, p: np.ndarray) -> Statistic:
    """Weighted average precision (sklearn's step-wise AUPRC, ties grouped); NaN without positives."""
    order, starts, pos_sorted = _levels(y, p)

    def stat(w: np.ndarray) -> np.ndarray:
        wp, wn = _level_weights(w, order, starts, pos_sorted)
        wp, wn = wp[:, ::-1], wn[:, ::-1]
        ctp = np.cumsum(wp, axis=1)
        flagged = ctp + np.cumsum(wn, axis=1)
        prec = np.zeros_like(ctp)
        np.divide(ctp, flagged, out=prec, where=flagged > 0)
        total = wp.sum(axis=1)
        out = np.full(total.shape, np.nan)
        np.divide((wp * prec).sum(axis=1), total, out=out, where=total > 0)
        return out

    return stat


def roc_auc(y: Any, p: Any) -> float | None:
    """Area under the ROC curve; None unless both classes are present."""
    y, p = validate_binary(y, p)
    value = float(auroc_statistic(y, p)(np.ones((1, y.shape[0])))[0])
    return value if math.isfinite(value) else None


def average_precision(y: Any, p: Any) -> float | None:
    """Average precision (area under the precision-recall curve, step-wise); None without positives."""
    y, p = validate_binary(y, p)
    value = float(average_precision_statistic(y, p)(np.ones((1, y.shape[0])))[0])
    return value if math.isfinite(value) else None


def roc_curve_points(y: Any, p: Any) -> dict[str, np.ndarray]:
    """ROC curve: false/true positive rates at each distinct score (descending), starting at (0, 0)."""
    y, p = validate_binary(y, p)
    order, starts, pos_sorted = _levels(y, p)
    wp, wn = _level_weights(np.ones((1, y.shape[0])), order, starts, pos_sorted)
    tps = np.r_[0.0, np.cumsum(wp[0, ::-1])]
    fps = np.r_[0.0, np.cumsum(wn[0, ::-1])]
    thresholds = np.r_[np.inf, p[order][starts][::-1]]
    n1, n0 = tps[-1], fps[-1]
    tpr = tps / n1 if n1 else np.full_like(tps, np.nan)
    fpr = fps / n0 if n0 else np.full_like(fps, np.nan)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}


def pr_curve_points(y: Any, p: Any) -> dict[str, np.ndarray]:
    """Precision-recall curve at each distinct score (descending), starting at recall 0, precision 1."""
    y, p = validate_binary(y, p)
    order, starts, pos_sorted = _levels(y, p)
    wp, wn = _level_weights(np.ones((1, y.shape[0])), order, starts, pos_sorted)
    tps = np.cumsum(wp[0, ::-1])
    fps = np.cumsum(wn[0, ::-1])
    n1 = tps[-1]
    recall = np.r_[0.0, tps / n1] if n1 else np.full(tps.shape[0] + 1, np.nan)
    precision = np.r_[1.0, tps / (tps + fps)]
    thresholds = np.r_[np.inf, p[order][starts][::-1]]
    return {"recall": recall, "precision": precision, "thresholds": thresholds}
