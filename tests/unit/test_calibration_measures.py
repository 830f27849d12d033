"""Calibration slope and intercept, the debiased ECE and the ECE reference level read against n."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from workbench.calibration.measures import (
    calibration_intercept,
    calibration_slope,
    ece,
    ece_debiased,
    ece_null_distribution,
    measure_calibration,
    read_ece,
)
from workbench.calibration.reliability import assign_bins, bin_edges


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def calibrated_sample(n: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels y ~ Bernoulli(sigmoid(z)) and reported p = sigmoid(scale * z): calibrated when scale is 1,
    overconfident (calibration slope 1 / scale) when scale > 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < sigmoid(z)).astype(int)
    return y, sigmoid(scale * z)


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def test_slope_and_intercept_match_reference_fits():
    y, p = calibrated_sample(1500, seed=3, scale=2.0)
    x = logit(p)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[:, None], y)
    assert calibration_slope(y, p) == pytest.approx(ref.coef_[0, 0], rel=1e-6)

    def neg_ll(a: float) -> float:
        return -float(np.sum(y * (a + x) - np.logaddexp(0.0, a + x)))

    ref_a = minimize_scalar(neg_ll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x
    assert calibration_intercept(y, p) == pytest.approx(ref_a, abs=1e-6)


def test_perfect_calibration_gives_slope_one_intercept_zero():
    y, p = calibrated_sample(20_000, seed=1)
    m = measure_calibration(y, p, "test", n_boot=200)["measures"]
    slope, intercept = m["calibration_slope"], m["calibration_intercept"]
    assert slope["value"] == pytest.approx(1.0, abs=0.05)
    assert slope["low"] <= 1.0 <= slope["high"]
    assert intercept["value"] == pytest.approx(0.0, abs=0.05)
    assert intercept["low"] <= 0.0 <= intercept["high"]
    assert slope["interval"] == "stratified bootstrap percentile" and slope["undefined_resamples"] == 0


def test_overconfident_probabilities_give_slope_one_half():
    y, p = calibrated_sample(20_000, seed=2, scale=2.0)
    m = measure_calibration(y, p, "test", n_boot=200)["measures"]
    slope = m["calibration_slope"]
    assert slope["value"] == pytest.approx(0.5, abs=0.03)
    assert slope["low"] <= 0.5 <= slope["high"] < 1.0


def test_separation_and_degenerate_splits_are_undefined_with_reasons():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.01, 0.99, 200)
    separated = (p > 0.5).astype(int)
    out = measure_calibration(separated, p, "val", n_boot=100)
    json.dumps(out, allow_nan=False)
    slope = out["measures"]["calibration_slope"]
    assert slope["value"] is None and slope["low"] is None
    assert "separate the classes" in slope["reason"]
    assert slope["undefined_resamples"] == 100
    assert out["measures"]["calibration_intercept"]["value"] is not None  # still estimable

    constant = measure_calibration(rng.integers(0, 2, 50), np.full(50, 0.3), "val", n_boot=50)["measures"]
    assert constant["calibration_slope"]["value"] is None
    assert "all predictions are equal" in constant["calibration_slope"]["reason"]

    one_class = measure_calibration(np.zeros(30, dtype=int), p[:30], "val", n_boot=50)["measures"]
    for key in ("calibration_slope", "calibration_intercept"):
        assert one_class[key]["value"] is None and "both classes" in one_class[key]["reason"]


def test_nearly_separated_small_split_reports_no_interval():
    # 3 positives, only one of them ranked among the negatives: many resamples drop it and separate.
    p = np.r_[np.linspace(0.05, 0.6, 57), [0.3, 0.9, 0.95]]
    y = np.r_[np.zeros(57, dtype=int), [1, 1, 1]]
    slope = measure_calibration(y, p, "val", n_boot=200)["measures"]["calibration_slope"]
    assert slope["value"] is not None and np.isfinite(slope["value"])
    assert slope["undefined_resamples"] > 10
    assert slope["low"] is None and "no interval" in slope["reason"]


def test_probabilities_of_exactly_zero_and_one_stay_finite():
    y, p = calibrated_sample(500, seed=5)
    p = p.copy()
    p[:5], p[5:10] = 0.0, 1.0
    out = measure_calibration(y, p, "test", n_boot=100)
    json.dumps(out, allow_nan=False)
    for key in ("calibration_slope", "calibration_intercept", "ece_debiased"):
        assert out["measures"][key]["value"] is not None, key


def kumar_debiased_l2(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> float:
    """Per-bin loop of Kumar et al.'s unbiased squared calibration error (bins with < 2 cases add 0)."""
    idx = assign_bins(p, edges)
    total = 0.0
    for b in range(edges.shape[0] - 1):
        members = idx == b
        n_b = int(members.sum())
        if n_b < 2:
            continue
        ybar, pbar = y[members].mean(), p[members].mean()
        total += n_b / y.shape[0] * ((ybar - pbar) ** 2 - ybar * (1 - ybar) / (n_b - 1))
    return max(total, 0.0) ** 0.5


def test_debiased_ece_matches_the_per_bin_formula():
    y, p = calibrated_sample(800, seed=6, scale=1.5)
    edges = bin_edges(p, 15, "uniform")
    assert ece_debiased(y, p) == pytest.approx(kumar_debiased_l2(y, p, edges))
    entry = measure_calibration(y, p, "test", n_boot=100)["measures"]["ece_debiased"]
    assert entry["value"] == pytest.approx(kumar_debiased_l2(y, p, edges))
    assert entry["error"] == "L2" and entry["squared"] == pytest.approx(entry["value"] ** 2)


def test_calibrated_model_at_n400_reads_within_the_reference():
    y, p = calibrated_sample(400, seed=7)
    out = measure_calibration(y, p, "test", n_boot=200)
    m = out["measures"]
    assert m["ece"]["value"] > 0.01  # the plug-in ECE of a calibrated model is not 0 at this n
    assert m["ece_debiased"]["value"] < m["ece"]["value"]
    null = m["ece_null"]
    assert null["n"] == 400 and null["n_sim"] == 200
    assert 0.01 < null["value"] < null["high"]
    sentence = read_ece(m)
    assert "within" in sentence and "n=400" in sentence
    assert read_ece(out) == sentence  # the whole output works too


def test_miscalibrated_model_reads_exceeds():
    y, p = calibrated_sample(400, seed=8)
    shifted = sigmoid(logit(p) + 1.5)  # systematically over-predicts risk
    m = measure_calibration(y, shifted, "test", n_boot=100)["measures"]
    assert m["ece"]["value"] > m["ece_null"]["high"]
    assert "exceeds" in read_ece(m)
    assert m["calibration_intercept"]["high"] < 0  # over-prediction: negative intercept


def test_reference_level_is_deterministic_and_shrinks_with_n():
    _, p_small = calibrated_sample(200, seed=9)
    _, p_large = calibrated_sample(5000, seed=9)
    edges = bin_edges(p_small, 15, "uniform")
    first = ece_null_distribution(p_small, edges, seed=0)
    assert np.array_equal(first, ece_null_distribution(p_small, edges, seed=0))
    assert ece_null_distribution(p_large, edges, seed=0).mean() < first.mean()


def test_read_ece_without_a_stored_reference_does_not_judge():
    y, p = calibrated_sample(300, seed=10)
    old = {"ece": {"value": ece(y, p)}}  # metrics stored before the reference level existed
    sentence = read_ece(old)
    assert "no reference level" in sentence and "within" not in sentence and "exceeds" not in sentence
    assert read_ece({}) == "ECE not available"
