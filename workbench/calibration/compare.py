"""Honest assessment of calibrators and paired comparison of two sets of probabilities.

A calibrator scored on the data it was fitted on looks better than it is (isotonic regression most of all).
:func:`cross_fit` gives out-of-fold calibrated probabilities on validation; :func:`assess` fits on all of
validation, scores the test split, and scores the cross-fitted validation probabilities. Both take the
model's raw float64 logits (see :mod:`workbench.calibration.calibrators`); "uncalibrated" means
``sigmoid(z)``, the model's own probability.
:func:`compare_paired` bootstraps the difference of two predictors on the SAME resampled cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.calibration.calibrator_base import Calibrator, sigmoid
from workbench.calibration.calibrators import get_calibrator
from workbench.calibration.measures import brier_statistic, ece_statistic, measure_calibration, nll_statistic
from workbench.calibration.reliability import DEFAULT_BINS, bin_edges, reliability_curve
from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    bootstrap_distribution,
    percentile_interval,
)
from workbench.evaluation.metrics import validate_binary

MAX_FOLDS = 5


@dataclass
class CrossFitResult:
    """Out-of-fold calibrated probabilities, or None with the ``reason`` they could not be computed."""

    method: str
    k: int | None
    probabilities: np.ndarray | None
    folds: np.ndarray | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.probabilities is not None


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per case; positives and negatives are shuffled and dealt out separately."""
    rng = np.random.default_rng(seed)
    folds = np.empty(y.shape[0], dtype=np.int64)
    for cls in (1, 0):
        members = np.flatnonzero(y == cls)
        members = members[rng.permutation(members.shape[0])]
        folds[members] = np.arange(members.shape[0]) % k
    return folds


def cross_fit(
    method: str, z_val: Any, y_val: Any, k: int | None = None, seed: int = 0, prior_offset: float = 0.0
) -> CrossFitResult:
    """Out-of-fold calibrated probabilities on validation logits via stratified K-fold.

    K defaults to ``min(5, positives, negatives)`` and must be >= 2, so every training fold holds both
    classes. With fewer than 2 positives (or negatives) the result has ``probabilities=None`` and a reason.
    """
    name = get_calibrator(method).method
    y, z = _logits(y_val, z_val, "validation split")
    positives, negatives = int(y.sum()), int(y.shape[0] - y.sum())
    limit = min(positives, negatives)
    if limit < 2:
        return CrossFitResult(
            name,
            None,
            None,
            reason=f"cross-fitting needs at least 2 positives and 2 negatives; validation has "
            f"{positives} positive and {negatives} negative",
        )
    if k is None:
        k = min(MAX_FOLDS, limit)
    elif not 2 <= int(k) <= limit:
        raise ValidationError(
            f"k must be between 2 and {limit} (fewest cases in a class) for this split, got {k}"
        )
    k = int(k)
    folds = stratified_folds(y, k, seed)
    out = np.empty_like(z)
    for fold in range(k):
        test = folds == fold
        cal = get_calibrator(name, prior_offset).fit(z[~test], y[~test])
        out[test] = cal.transform(z[test])
    return CrossFitResult(name, k, out, folds)


def _logits(y: Any, z: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated labels (0/1 ints) and float64 logits of one split."""
    z_arr = np.asarray(z, dtype=np.float64).reshape(-1)
    if not np.isfinite(z_arr).all():
        raise ValidationError(f"{what}: logits contain NaN or infinite values")
    y_arr, _ = validate_binary(y, sigmoid(z_arr), what=what)
    return y_arr, z_arr


def assess(
    method: str,
    z_val: Any,
    y_val: Any,
    z_test: Any = None,
    y_test: Any = None,
    n_bins: int = DEFAULT_BINS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    val_split: str = "val",
    test_split: str = "test",
    prior_offset: float = 0.0,
) -> dict[str, Any]:
    """Fit ``method`` on all validation logits, then measure it where it was not fitted.

    ``prior_offset`` is the training prior shift removed before fitting (0 when training was unweighted).

    Returns a JSON-safe dict: ``method``, ``calibrator`` (its JSON), ``fitted_on`` (split, n, positives)
    and ``splits``: a list of entries, each with ``split`` (e.g. 'val (cross-fitted, k=5)' or 'test'),
    ``n``, ``positives``, ``uncalibrated`` and ``calibrated`` measures (see
    :func:`~workbench.calibration.measures.measure_calibration`), uniform reliability curves before and
    after, and for the test split a paired comparison calibrated-minus-uncalibrated. A split that cannot
    be scored carries ``calibrated=None`` and a ``reason``. ``calibrator_object`` is not included; rebuild
    it with ``Calibrator.from_json(result['calibrator'])``.
    """
    cal = fit_calibrator(method, z_val, y_val, prior_offset)
    y_v, z_v = _logits(y_val, z_val, f"split '{val_split}'")
    p_v = sigmoid(z_v)
    result: dict[str, Any] = {
        "method": cal.method,
        "calibrator": cal.to_json(),
        "fitted_on": {"split": val_split, "n": int(y_v.shape[0]), "positives": int(y_v.sum())},
        "prior_offset": float(prior_offset),
        "n_bins": int(n_bins),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "splits": [],
    }

    cf = (
        cross_fit(cal.method, z_v, y_v, seed=seed, prior_offset=prior_offset)
        if cal.method != "identity"
        else None
    )
    if cf is None:
        label, p_cf, reason = f"{val_split} (identity: nothing fitted)", cal.transform(z_v), None
    else:
        label = f"{val_split} (cross-fitted, k={cf.k})" if cf.ok else f"{val_split} (cross-fitted)"
        p_cf, reason = cf.probabilities, cf.reason
    result["splits"].append(_split_entry(label, y_v, p_v, p_cf, reason, n_bins, n_boot, seed, paired=False))

    if z_test is not None or y_test is not None:
        if z_test is None or y_test is None:
            raise ValidationError("assess(): give both z_test and y_test, or neither")
        y_t, z_t = _logits(y_test, z_test, f"split '{test_split}'")
        result["splits"].append(
            _split_entry(
                test_split, y_t, sigmoid(z_t), cal.transform(z_t), None, n_bins, n_boot, seed, paired=True
            )
        )
    return result


def fit_calibrator(method: str, z_val: Any, y_val: Any, prior_offset: float = 0.0) -> Calibrator:
    """Fit a calibrator of ``method`` on validation logits and labels (``prior_offset`` removed first)."""
    y, z = _logits(y_val, z_val, "validation split")
    return get_calibrator(method, prior_offset).fit(z, y)


def _split_entry(
    label: str,
    y: np.ndarray,
    p_raw: np.ndarray,
    p_cal: np.ndarray | None,
    reason: str | None,
    n_bins: int,
    n_boot: int,
    seed: int,
    paired: bool,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "split": label,
        "n": int(y.shape[0]),
        "positives": int(y.sum()),
        "uncalibrated": measure_calibration(y, p_raw, label, n_bins=n_bins, n_boot=n_boot, seed=seed),
        "reliability_uncalibrated": reliability_curve(y, p_raw, n_bins=n_bins, split=label),
        "calibrated": None,
        "reliability_calibrated": None,
        "reason": reason,
    }
    if p_cal is not None:
        entry["calibrated"] = measure_calibration(y, p_cal, label, n_bins=n_bins, n_boot=n_boot, seed=seed)
        entry["reliability_calibrated"] = reliability_curve(y, p_cal, n_bins=n_bins, split=label)
        if paired:
            entry["calibrated_vs_uncalibrated"] = compare_paired(
                y, p_cal, p_raw, n_boot=n_boot, seed=seed, n_bins=n_bins, split=label
            )
    return entry


def _verdict(low: float, high: float) -> str:
    if high < 0:
        return "a better"
    if low > 0:
        return "b better"
    return "inconclusive"


def compare_paired(
    y: Any,
    p_a: Any,
    p_b: Any,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    level: float = DEFAULT_LEVEL,
    split: str | None = None,
) -> dict[str, Any]:
    """Paired stratified bootstrap of ΔBrier, ΔNLL and ΔECE (a minus b) on the same resampled cases.

    All three are errors (lower is better), so an interval entirely below 0 gives "a better", entirely
    above 0 "b better", and one covering 0 "inconclusive". Returns a JSON-safe dict with ``metrics``:
    name -> ``{'a', 'b', 'delta', 'low', 'high', 'verdict'}``.
    """
    y, p_a = validate_binary(y, p_a, what="predictor a")
    _, p_b = validate_binary(y, p_b, what="predictor b")
    n = int(y.shape[0])
    edges = bin_edges(p_a, n_bins, "uniform")
    stats_a = {
        "brier": brier_statistic(y, p_a),
        "nll": nll_statistic(y, p_a),
        "ece": ece_statistic(y, p_a, edges),
    }
    stats_b = {
        "brier": brier_statistic(y, p_b),
        "nll": nll_statistic(y, p_b),
        "ece": ece_statistic(y, p_b, edges),
    }
    deltas = {name: (lambda w, fa=stats_a[name], fb=stats_b[name]: fa(w) - fb(w)) for name in stats_a}
    boot = bootstrap_distribution(y, deltas, n_boot=n_boot, seed=seed)
    ones = np.ones((1, n))
    metrics: dict[str, Any] = {}
    for name in stats_a:
        a, b = float(stats_a[name](ones)[0]), float(stats_b[name](ones)[0])
        low, high = percentile_interval(boot[name], level)
        metrics[name] = {
            "a": a,
            "b": b,
            "delta": a - b,
            "low": low,
            "high": high,
            "verdict": _verdict(low, high),
        }
    return {
        "split": split,
        "n": n,
        "positives": int(y.sum()),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "metrics": metrics,
    }
