"""DeLong's AUROC variance and the paired DeLong test, by the fast midrank algorithm of Sun & Xu (2014).

Why: the bootstrap percentile interval of AUROC is fine for one model, but comparing two models on the same
cases needs the covariance of the two AUROCs, and DeLong gives it in closed form from *placement values*
(DeLong, DeLong & Clarke-Pearson 1988):

* for each positive case ``i``, ``V10[i]`` is the fraction of negatives it outranks (ties count 1/2);
* for each negative case ``j``, ``V01[j]`` is the fraction of positives that outrank it (ties count 1/2);
* AUROC is ``mean(V10) == mean(V01)`` (the Mann-Whitney U divided by ``m * n``);
* ``Var(AUROC) = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample (co)variances (ddof 1) of the placement
  values over the ``m`` positives and ``n`` negatives; for several score vectors on the same cases the same
  formula with covariance matrices gives their joint covariance.

Sun & Xu compute the placement values from midranks (``scipy.stats.rankdata`` with ``average``): for a
positive, ``V10 = (rank among all - rank among positives) / n``, which is exact with ties.

Intervals for a single AUROC are computed on the **logit scale** (delta method,
``se_logit = se / (A (1 - A))``) and transformed back, so they stay inside (0, 1) and are asymmetric near 1.
The paired difference is a plain normal interval, clipped to [-1, 1], with a two-sided z-test p-value.

At AUROC 0 or 1 every placement value is equal, so the DeLong variance is 0: the interval has zero width
and says nothing. :func:`exact_auroc_bound` then gives an honest one-sided bound instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.stats import rankdata

from workbench.errors import ValidationError

DEFAULT_LEVEL = 0.95
_ZERO = 1e-15  # variances at or below this are treated as exactly 0 (rounding of equal placement values)


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValidationError(f"confidence level must be strictly between 0 and 1, got {level!r}")
    return level


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + _check_level(level) / 2.0)


def validate_scores(y: Any, scores: Any, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Labels (0/1) and real-valued scores (any finite number: logits, probabilities) as 1-D arrays.

    Unlike :func:`workbench.evaluation.metrics.validate_binary`, scores need not lie in [0, 1]: AUROC only
    depends on their order, and raw logits are preferred because they do not saturate.
    """
    y_arr = np.asarray(y)
    s_arr = np.asarray(scores, dtype=np.float64)
    if y_arr.ndim != 1 or s_arr.ndim != 1:
        raise ValidationError(f"{what}: labels and scores must be 1-D, got {y_arr.shape} and {s_arr.shape}")
    if y_arr.shape[0] != s_arr.shape[0]:
        raise ValidationError(f"{what}: {y_arr.shape[0]} labels but {s_arr.shape[0]} scores")
    if y_arr.shape[0] == 0:
        raise ValidationError(f"{what}: no cases")
    try:
        y_num = y_arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what}: labels must be 0 or 1") from exc
    if not np.isin(y_num, (0.0, 1.0)).all():
        raise ValidationError(f"{what}: labels must be 0 or 1")
    if not np.isfinite(s_arr).all():
        raise ValidationError(f"{what}: {int((~np.isfinite(s_arr)).sum())} scores are NaN or infinite")
    return y_num.astype(np.int64), s_arr


def placement_values(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values ``(V10 per positive, V01 per negative)`` from midranks (ties count 1/2).

    Positives and negatives keep their input order. Raises ValidationError unless both classes are present.
    """
    y, s = validate_scores(y, scores)
    v10, v01 = _placements(y, s[None, :])
    return v10[0], v01[0]


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement values of each row of ``s`` (``k x N``): ``(k x m, k x n)``, midrank algorithm."""
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        raise ValidationError(f"AUROC needs positive and negative cases; got {m} positive and {n} negative")
    sx, sy = s[:, pos], s[:, ~pos]
    tz = rankdata(s, method="average", axis=1)
    tx = rankdata(sx, method="average", axis=1)
    ty = rankdata(sy, method="average", axis=1)
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, ~pos] - ty) / m
    return v10, v01


def delong_covariance(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` score vectors on the same cases and their ``k x k`` DeLong covariance matrix.

    ``scores`` is ``(k, N)`` (or ``(N,)`` for one vector). The covariance is NaN when a class has fewer than
    2 cases (a sample variance needs 2).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y, _ = validate_scores(y, s[0])
    for row in s[1:]:
        validate_scores(y, row)
    v10, v01 = _placements(y, s)
    m, n = v10.shape[1], v01.shape[1]
    aucs = v10.mean(axis=1)
    k = s.shape[0]
    if m < 2 or n < 2:
        return aucs, np.full((k, k), np.nan)
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, cov


def exact_auroc_bound(
    auroc: float, positives: int, negatives: int, level: float = DEFAULT_LEVEL
) -> float | None:
    """Honest one-sided bound for an AUROC observed at exactly 1 (lower bound) or 0 (upper bound).

    With ``k = min(positives, negatives)`` disjoint positive-negative pairs, the pairs are independent and
    each is concordant with probability at most the true AUROC ``A``; all of them were concordant, which has
    probability at most ``A ** k``. So ``A >= alpha ** (1 / k)`` with confidence ``1 - alpha``, where
    ``alpha = (1 - level) / 2`` (the one-sided half of a two-sided ``level`` interval). Conservative, but
    valid for any score distribution, unlike the zero-width DeLong and bootstrap intervals. None unless
    ``auroc`` is 0 or 1 and both classes are present.
    """
    alpha = (1.0 - _check_level(level)) / 2.0
    k = min(int(positives), int(negatives))
    if k < 1:
        return None
    bound = alpha ** (1.0 / k)
    if auroc == 1.0:
        return bound
    if auroc == 0.0:
        return 1.0 - bound
    return None


@dataclass(frozen=True)
class DelongAUROC:
    """AUROC with its DeLong standard error and logit-scale interval; ``value`` None when undefined.

    ``flag`` says why the interval is not evidence (zero variance); ``exact_bound`` is then the one-sided
    bound of :func:`exact_auroc_bound` (a lower bound at AUROC 1, an upper bound at AUROC 0).
    """

    value: float | None
    variance: float | None = None
    se: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = DEFAULT_LEVEL
    positives: int = 0
    negatives: int = 0
    method: str = "DeLong (Sun & Xu midranks), logit-scale interval"
    flag: str | None = None
    exact_bound: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and inf become None)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, float):
                v = v if math.isfinite(v) else None
            out[k] = v
        return out


def _logit_interval(auc: float, se: float, z: float) -> tuple[float, float]:
    """Back-transformed ``logit(auc) +/- z * se / (auc (1 - auc))``, clipped to [0, 1]."""
    if se <= 0.0 or auc <= 0.0 or auc >= 1.0:
        return auc, auc
    centre = math.log(auc / (1.0 - auc))
    half = z * se / (auc * (1.0 - auc))

    def expit(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))

    return max(0.0, expit(centre - half)), min(1.0, expit(centre + half))


def delong_auroc(y: Any, scores: Any, level: float = DEFAULT_LEVEL) -> DelongAUROC:
    """AUROC of ``scores`` with its DeLong variance and a logit-scale ``level`` interval.

    Undefined (value None with a reason) without both classes; interval None with a reason when a class has
    a single case. A zero variance (AUROC 0 or 1, or all placement values equal) gives a zero-width interval
    with a ``flag``, plus the exact one-sided bound at AUROC 0 or 1.
    """
    y, s = validate_scores(y, scores)
    level = _check_level(level)
    m = int(y.sum())
    n = int(y.shape[0]) - m
    if m == 0 or n == 0:
        missing = "positive" if m == 0 else "negative"
        return DelongAUROC(value=None, level=level, positives=m, negatives=n, reason=f"no {missing} cases")
    aucs, cov = delong_covariance(y, s)
    auc, var = float(aucs[0]), float(cov[0, 0])
    if not math.isfinite(var):
        return DelongAUROC(
            value=auc,
            level=level,
            positives=m,
            negatives=n,
            exact_bound=exact_auroc_bound(auc, m, n, level),
            reason=(
                "the DeLong variance needs at least 2 positive and 2 negative cases "
                f"({m} positive, {n} negative)"
            ),
        )
    var = 0.0 if var <= _ZERO else var
    se = math.sqrt(var)
    low, high = _logit_interval(auc, se, _z(level))
    flag = None
    bound = exact_auroc_bound(auc, m, n, level)
    if var == 0.0:
        flag = (
            f"zero DeLong variance: the sample ({m} positive, {n} negative) cannot show the uncertainty of "
            f"AUROC {auc:.2f}"
        )
        if bound is not None:
            side = "lower" if auc == 1.0 else "upper"
            pct = 100.0 * (1.0 - (1.0 - level) / 2.0)
            flag += (
                f"; exact one-sided {pct:g}% {side} bound {bound:.2f} "
                f"(from {min(m, n)} independent positive-negative pairs, conservative)"
            )
    return DelongAUROC(
        value=auc,
        variance=var,
        se=se,
        low=low,
        high=high,
        level=level,
        positives=m,
        negatives=n,
        flag=flag,
        exact_bound=bound,
    )


def delong_paired_test(y: Any, scores_a: Any, scores_b: Any, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Paired DeLong test of AUROC(a) - AUROC(b) on the same cases.

    Returns a JSON-safe dict: ``auroc_a``, ``auroc_b``, ``delta``, ``se``, ``low``/``high`` (plain normal
    ``level`` interval, clipped to [-1, 1]), ``z``, ``p_value`` (two-sided), ``level``, ``n``, ``positives``,
    ``negatives`` and ``reason`` (None, or why ``se``/``p_value`` are None). When the variance of the
    difference is 0 the p-value is 1 for equal AUROCs and None otherwise (the sample cannot show the
    uncertainty, e.g. both perfect or one constant).
    """
    y, a = validate_scores(y, scores_a, what="scores a")
    _, b = validate_scores(y, scores_b, what="scores b")
    level = _check_level(level)
    m = int(y.sum())
    n = int(y.shape[0]) - m
    out: dict[str, Any] = {
        "auroc_a": None,
        "auroc_b": None,
        "delta": None,
        "se": None,
        "low": None,
        "high": None,
        "z": None,
        "p_value": None,
        "level": level,
        "n": int(y.shape[0]),
        "positives": m,
        "negatives": n,
        "reason": None,
    }
    if m == 0 or n == 0:
        out["reason"] = f"AUROC is undefined: {m} positive and {n} negative cases"
        return out
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    delta = float(aucs[0] - aucs[1])
    out.update(auroc_a=float(aucs[0]), auroc_b=float(aucs[1]), delta=delta)
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if not math.isfinite(var):
        out["reason"] = f"the DeLong variance needs at least 2 positive and 2 negative cases ({m}, {n})"
        return out
    if var <= _ZERO:
        out.update(se=0.0, low=delta, high=delta)
        if abs(delta) <= 1e-12:
            out.update(z=0.0, p_value=1.0, reason="the two scores give identical placement values")
        else:
            out["reason"] = "the variance of the difference is 0: this sample cannot show its uncertainty"
        return out
    se = math.sqrt(var)
    z = delta / se
    half = _z(level) * se
    out.update(
        se=se,
        low=max(-1.0, delta - half),
        high=min(1.0, delta + half),
        z=z,
        p_value=min(1.0, 2.0 * NormalDist().cdf(-abs(z))),
    )
    return out
