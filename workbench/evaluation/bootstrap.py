"""Confidence intervals: Wilson score intervals, Clopper-Pearson bounds and a stratified bootstrap.

Splits in this project may hold as few as 4 positives, so every point estimate is shown with an interval.
The bootstrap is *stratified*: positives and negatives are resampled separately, so every resample keeps the
split's class counts and metrics that need both classes (AUROC, AUPRC, sensitivity) stay defined.

Resamples are represented as a weight matrix ``W`` of shape ``(B, n)``: ``W[b, i]`` is how many times case
``i`` was drawn in resample ``b``. A statistic is then a function ``W -> (B,)`` written with matrix products,
which makes 1000 resamples of 1000 cases take milliseconds. Calling the same function with ``W = ones((1, n))``
gives the point estimate, so point estimate and bootstrap always use the same formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from statistics import NormalDist

import numpy as np

from workbench.errors import ValidationError

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
# Largest weight matrix (elements) built at once; bigger bootstraps are processed in chunks of resamples.
MAX_CHUNK_ELEMENTS = 1 << 22

Statistic = Callable[[np.ndarray], np.ndarray]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValidationError(f"confidence level must be strictly between 0 and 1, got {level!r}")


def wilson_interval(successes: int, total: int, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """Wilson score interval for a proportion ``successes / total``; None when ``total`` is 0.

    Preferred over the normal approximation because it stays inside [0, 1] and behaves well for the tiny
    counts (e.g. 1 of 4 positives found) that clinical splits produce.
    """
    _check_level(level)
    successes, total = int(successes), int(total)
    if total < 0 or successes < 0 or successes > total:
        raise ValidationError(f"Wilson interval needs 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    phat = successes / total
    denom = 1.0 + z * z / total
    centre = (phat + z * z / (2.0 * total)) / denom
    half = z / denom * math.sqrt(phat * (1.0 - phat) / total + z * z / (4.0 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson_lower(successes: int, total: int, level: float = DEFAULT_LEVEL) -> float | None:
    """One-sided Clopper-Pearson (exact binomial) lower confidence bound of ``successes / total``.

    With probability at least ``level`` the true proportion is >= the bound, whatever the sample size,
    which is what a screening claim needs (Wilson is approximate for tiny counts). The bound is the
    ``1 - level`` quantile of Beta(k, n - k + 1), so ``n`` of ``n`` gives ``(1 - level) ** (1 / n)``; 0 when
    nothing succeeded; None when ``total`` is 0.
    """
    _check_level(level)
    successes, total = int(successes), int(total)
    if total < 0 or successes < 0 or successes > total:
        raise ValidationError(
            f"Clopper-Pearson bound needs 0 <= successes <= total, got {successes} of {total}"
        )
    if total == 0:
        return None
    return float(clopper_pearson_lower_many(np.array([successes]), np.array([total]), level)[0])


def clopper_pearson_lower_many(
    successes: np.ndarray, totals: np.ndarray, level: float = DEFAULT_LEVEL
) -> np.ndarray:
    """Vectorised :func:`clopper_pearson_lower` over count arrays (NaN where the total is 0; unchecked)."""
    from scipy.stats import beta  # imported here: scipy.stats is slow to import and rarely needed

    _check_level(level)
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(totals, dtype=np.float64)
    out = np.full(np.broadcast(k, n).shape, np.nan)
    some = (n > 0) & (k > 0)
    out[(n > 0) & (k <= 0)] = 0.0
    if some.any():
        kk, nn = np.broadcast_to(k, out.shape)[some], np.broadcast_to(n, out.shape)[some]
        out[some] = beta.ppf(1.0 - level, kk, nn - kk + 1.0)
    return out


def clopper_pearson_min_total(target: float, level: float = DEFAULT_LEVEL) -> int | None:
    """Smallest ``n`` whose best case (``n`` of ``n``) has a Clopper-Pearson lower bound >= ``target``.

    That is the least number of cases a split needs before a proportion >= ``target`` can be claimed at
    ``level`` (29 for 0.9 at 95%, since ``0.05 ** (1 / n) >= 0.9`` first holds at n = 29). None when
    ``target`` >= 1, which no finite sample can guarantee; 1 when ``target`` <= 0.
    """
    _check_level(level)
    if target >= 1.0:
        return None
    if target <= 0.0:
        return 1
    alpha = 1.0 - level
    n = max(1, math.ceil(math.log(alpha) / math.log(target)))
    # guard the closed form against rounding at the boundary
    while alpha ** (1.0 / n) < target:
        n += 1
    while n > 1 and alpha ** (1.0 / (n - 1)) >= target:
        n -= 1
    return n


def stratified_bootstrap_weights(
    y: np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    max_chunk_elements: int = MAX_CHUNK_ELEMENTS,
) -> Iterator[np.ndarray]:
    """Yield chunks of a ``(n_boot, n)`` stratified bootstrap weight matrix (float64 draw counts).

    Positives are drawn with replacement from the positives and negatives from the negatives, so each
    resample has exactly the original class counts. The stream depends only on ``(y, n_boot, seed)``.
    """
    y = np.asarray(y)
    n = y.shape[0]
    if n_boot < 1:
        raise ValidationError(f"n_boot must be at least 1, got {n_boot}")
    if n == 0:
        raise ValidationError("cannot bootstrap an empty split")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == 1), np.flatnonzero(y != 1)]
    chunk = max(1, int(max_chunk_elements) // n)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        weights = np.zeros((b, n), dtype=np.float64)
        rows = np.arange(b)[:, None]
        for members in groups:
            m = members.shape[0]
            if m == 0:
                continue
            draws = rng.integers(0, m, size=(b, m))
            counts = np.bincount((rows * m + draws).ravel(), minlength=b * m).reshape(b, m)
            weights[:, members] = counts
        done += b
        yield weights


def bootstrap_distribution(
    y: np.ndarray,
    statistics: Mapping[str, Statistic],
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Evaluate each weighted statistic on the same stratified resamples; returns name -> ``(n_boot,)``.

    Sharing resamples across statistics (and across two predictors) is what makes paired comparisons valid.
    Statistics may return NaN for resamples where they are undefined.
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    for weights in stratified_bootstrap_weights(y, n_boot=n_boot, seed=seed):
        for name, fn in statistics.items():
            parts[name].append(np.asarray(fn(weights), dtype=np.float64).reshape(-1))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """Percentile interval of bootstrap samples, ignoring NaN; None when no sample is finite."""
    _check_level(level)
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(samples, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def point_estimate(statistic: Statistic, n: int) -> float | None:
    """Evaluate a weighted statistic on the original sample (all weights 1); None when undefined (NaN)."""
    value = float(np.asarray(statistic(np.ones((1, n), dtype=np.float64)), dtype=np.float64).reshape(-1)[0])
    return value if math.isfinite(value) else None


def bootstrap_interval(
    y: np.ndarray,
    statistic: Statistic,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float] | None:
    """Stratified bootstrap percentile interval of one weighted statistic."""
    samples = bootstrap_distribution(y, {"s": statistic}, n_boot=n_boot, seed=seed)["s"]
    return percentile_interval(samples, level=level)
