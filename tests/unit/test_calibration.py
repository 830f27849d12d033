"""Calibration library: netcal-fitted calibrators stored as JSON, measures, reliability, thresholds."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from netcal.metrics import ECE
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from workbench.calibration import (
    CALIBRATORS,
    Calibrator,
    apply_threshold,
    assess,
    choose_threshold,
    compare_paired,
    cross_fit,
    ece,
    get_calibrator,
    mce,
    measure_calibration,
    parse_policy,
    plot_reliability,
    reliability_curve,
)
from workbench.calibration.calibrator_base import TIE_WEIGHT, logit, sigmoid
from workbench.errors import ValidationError


def overconfident(n: int = 2000, n_pos: int = 200, true_t: float = 2.0, seed: int = 0):
    """Labels with exactly ``n_pos`` positives and scores whose logits are ``true_t`` times too large.

    Given the label, z is drawn from N(mu_y, 4) with mu_1 - mu_0 = 4 and mu_0 + mu_1 = 2 log(prior odds);
    then the true log-odds of being positive is exactly z, so p_true = sigmoid(z) is calibrated, and the
    reported p = sigmoid(true_t * z) is over-confident with temperature ``true_t``.
    """
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n - n_pos, dtype=int)]
    prior = math.log(n_pos / (n - n_pos))
    mu0, mu1 = prior - 2.0, prior + 2.0
    z = np.where(y == 1, rng.normal(mu1, 2.0, n), rng.normal(mu0, 2.0, n))
    return y, 1.0 / (1.0 + np.exp(-true_t * z)), 1.0 / (1.0 + np.exp(-z))


def overconfident_logits(n: int = 2000, n_pos: int = 200, true_t: float = 2.0, seed: int = 0):
    """Like :func:`overconfident`, but the model's logits (what calibrators take) instead of its probabilities."""
    y, p, p_true = overconfident(n, n_pos, true_t, seed)
    return y, logit(p), p_true


def test_temperature_scaling_recovers_t_from_float32_input():
    y, z, p_true = overconfident_logits()
    p = sigmoid(z)
    cal = get_calibrator("temperature").fit(z.astype(np.float32), y)
    assert cal.method == "temperature"
    assert cal.temperature == pytest.approx(2.0, rel=0.10)  # netcal on raw float32 would return T = 1
    assert cal.weight == pytest.approx(1.0 / cal.temperature)
    calibrated = cal.transform(z.astype(np.float32))
    assert calibrated.dtype == np.float64
    assert np.abs(calibrated - p_true).mean() < 0.2 * np.abs(p - p_true).mean()
    assert ece(y, calibrated) < ece(y, p)


def test_ece_equals_netcal():
    rng = np.random.default_rng(3)
    cases = [overconfident(seed=1)[:2], overconfident(n=300, n_pos=12, seed=2)[:2]]
    y_small = (rng.random(60) < 0.2).astype(int)
    cases.append((y_small, np.round(rng.random(60), 1)))  # ties and values on bin edges
    for y, p in cases:
        ours = ece(y, p, n_bins=15)
        theirs = ECE(bins=15).measure(p.astype(np.float64), y)
        assert ours == pytest.approx(theirs, abs=1e-12)
        assert measure_calibration(y, p, "val", n_boot=20)["measures"]["ece"]["value"] == pytest.approx(ours)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_bins_equal_sklearn(strategy):
    y, p, _ = overconfident(seed=4)
    curve = reliability_curve(y, p, n_bins=15, strategy=strategy, split="val")
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy=strategy)
    mean_pred = np.array([v for v in curve["mean_predicted"] if v is not None])
    observed = np.array([v for v in curve["observed"] if v is not None])
    assert mean_pred.shape == prob_pred.shape
    assert np.allclose(mean_pred, prob_pred, atol=1e-12)
    assert np.allclose(observed, prob_true, atol=1e-12)
    assert sum(curve["counts"]) == 2000 and curve["positives"] == 200
    for obs, low, high in zip(curve["observed"], curve["wilson_low"], curve["wilson_high"], strict=True):
        if obs is not None:
            assert low <= obs <= high
    json.dumps(curve, allow_nan=False)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_json_round_trip_reproduces_transform(method):
    y, z, _ = overconfident_logits(n=600, n_pos=60, seed=5)
    cal = get_calibrator(method, prior_offset=0.7).fit(z, y)
    fresh = np.r_[-1e3, -40.0, 40.0, 1e3, np.random.default_rng(6).normal(0.0, 6.0, 500)]
    stored = json.loads(json.dumps(cal.to_json(), allow_nan=False))
    assert stored["method"] == method and stored["input"] == "logit" and stored["prior_offset"] == 0.7
    for loaded in (Calibrator.from_json(stored), type(cal).from_json(stored)):
        assert type(loaded) is type(cal) and loaded.backend is None
        assert np.array_equal(loaded.transform(fresh), cal.transform(fresh))
    if method not in ("identity", "histogram", "bbq"):  # binnings are made monotone after netcal
        # our numpy rebuild is the transform netcal itself computes (on the prior-corrected probability)
        netcal_out = cal.backend.transform(sigmoid(z - 0.7))
        assert np.allclose(cal.transform(z), netcal_out, rtol=0, atol=2 * TIE_WEIGHT)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_calibrated_probability_is_strictly_increasing_in_the_logit(method):
    """Step-function calibrators (isotonic, binnings) and saturating sigmoids never tie: order follows z."""
    y, z, _ = overconfident_logits(n=800, n_pos=80, seed=7)
    cal = get_calibrator(method).fit(z, y)
    grid = np.r_[np.linspace(-60.0, 60.0, 4001), 1e3]
    out = cal.transform(grid)
    assert np.all(np.diff(out) > 0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert cal.transform(np.array([30.0]))[0] > cal.transform(np.array([25.0]))[0]


def test_binning_calibrators_are_monotone_after_netcal():
    """netcal's histogram fills empty bins with their centre, which can reorder cases; ours never does."""
    rng = np.random.default_rng(21)
    z = np.r_[rng.normal(-4.0, 0.5, 300), rng.normal(3.0, 0.3, 12)]
    y = np.r_[(rng.random(300) < 0.03).astype(int), np.r_[np.ones(6, dtype=int), np.zeros(6, dtype=int)]]
    for method in ("histogram", "bbq"):
        cal = get_calibrator(method).fit(z, y)
        tables = [cal.hist] if method == "histogram" else cal.models
        for table in tables:
            assert np.all(np.diff(table["values"]) >= 0)


def test_format_1_json_still_loads_and_applies_on_probabilities():
    """Calibrations stored before logits (format 1: fitted on probabilities clipped at 1e-7) still work."""
    old = {"method": "platt", "params": {"weight": 0.5, "bias": -1.0}, "clip": 1e-7, "fitted_on": {"n": 10}}
    cal = Calibrator.from_json(old)
    z = np.array([-3.0, 0.0, 3.0, 40.0])
    expected = sigmoid(
        0.5 * np.clip(z, -logit(np.array([1 - 1e-7]))[0], logit(np.array([1 - 1e-7]))[0]) - 1.0
    )
    assert np.allclose(cal.transform(z), expected, atol=2 * TIE_WEIGHT)
    iso = Calibrator.from_json({"method": "isotonic", "params": {"x": [0.1, 0.9], "y": [0.0, 1.0]}})
    assert np.allclose(iso.transform(np.array([0.0])), [0.5], atol=2 * TIE_WEIGHT)  # interpolates on p


def test_calibrator_registry_and_errors():
    assert set(CALIBRATORS) == {"identity", "temperature", "isotonic", "platt", "beta", "histogram", "bbq"}
    assert get_calibrator("Temperature").method == "temperature"
    assert get_calibrator("none").method == "identity"
    assert get_calibrator("histogram_binning").method == "histogram"
    with pytest.raises(ValidationError) as err:
        get_calibrator("enir")
    for name in CALIBRATORS:
        assert name in str(err.value)
    with pytest.raises(ValidationError, match="both classes"):
        get_calibrator("platt").fit([-2.0, -1.0, 0.5], [0, 0, 0])
    with pytest.raises(ValidationError, match="NaN or infinite"):
        get_calibrator("platt").fit([-2.0, np.inf, 0.5], [0, 1, 0])
    with pytest.raises(ValidationError, match="not fitted"):
        get_calibrator("temperature").transform([0.5])
    with pytest.raises(ValidationError, match="unknown calibration method"):
        Calibrator.from_json({"method": "magic", "params": {}})
    with pytest.raises(ValidationError, match="bad parameters"):
        Calibrator.from_json({"method": "temperature", "params": {}})


def brute_force(y, p):
    """Rates at every distinct score used as threshold, with plain Python loops."""
    rows = []
    for t in sorted(set(p.tolist())):
        tp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= t and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= t and yi == 0)
        fn = sum(1 for yi, pi in zip(y, p, strict=True) if pi < t and yi == 1)
        tn = sum(1 for yi, pi in zip(y, p, strict=True) if pi < t and yi == 0)
        rows.append(
            {
                "t": t,
                "sens": tp / (tp + fn),
                "spec": tn / (tn + fp),
                "prec": tp / (tp + fp) if tp + fp else 0.0,
                "f1": 2 * tp / (2 * tp + fp + fn),
            }
        )
    return rows


HAND_Y = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0])
HAND_P = np.array([0.05, 0.10, 0.20, 0.25, 0.35, 0.40, 0.45, 0.60, 0.65, 0.70, 0.80, 0.15])


def test_policies_pick_the_brute_force_threshold():
    rows = brute_force(HAND_Y, HAND_P)
    expected = {
        "sensitivity>=0.8": max(r["t"] for r in rows if r["sens"] >= 0.8),
        "sensitivity>=0.6": max(r["t"] for r in rows if r["sens"] >= 0.6),
        "precision>=0.6": min(r["t"] for r in rows if r["prec"] >= 0.6),
        "max_f1": max(r["t"] for r in rows if r["f1"] == max(q["f1"] for q in rows)),
        "youden": max(
            r["t"] for r in rows if r["sens"] + r["spec"] == max(q["sens"] + q["spec"] for q in rows)
        ),
        "fixed:0.3": 0.3,
        "fixed=0.5": 0.5,
    }
    for policy, value in expected.items():
        choice = choose_threshold(policy, HAND_Y, HAND_P)
        assert choice.value == pytest.approx(value), policy
        pred = choice.value <= HAND_P
        sens = (pred & (HAND_Y == 1)).sum() / (HAND_Y == 1).sum()
        assert choice.sensitivity.value == pytest.approx(sens)
        assert choice.sensitivity.wilson_low <= sens <= choice.sensitivity.wilson_high
        assert (choice.split, choice.n, choice.positives) == ("val", 12, 5)
    # "highest threshold": the next higher score no longer reaches the target
    choice = choose_threshold("sensitivity>=0.8", HAND_Y, HAND_P)
    higher = [r for r in rows if r["t"] > choice.value]
    assert choice.met is True and higher and higher[0]["sens"] < 0.8


def test_unreachable_precision_is_noted_and_falls_back():
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    p = np.array([0.70, 0.90, 0.60, 0.20, 0.30, 0.50, 0.10, 0.65])  # the top score is a negative
    rows = brute_force(y, p)
    best = max(r["prec"] for r in rows)
    assert best < 0.99
    choice = choose_threshold("precision>=0.99", y, p)
    assert choice.met is False and "not reachable" in choice.note
    assert choice.value == pytest.approx(min(r["t"] for r in rows if r["prec"] == best))
    assert choice.precision.value == pytest.approx(best)


def test_apply_threshold_reports_on_the_other_split():
    choice = choose_threshold("sensitivity>=0.8", HAND_Y, HAND_P)
    y_test = np.array([1, 1, 1, 0, 0, 0, 0])
    p_test = np.array([0.9, 0.3, 0.1, 0.2, 0.5, 0.05, 0.34])
    outcome = apply_threshold(choice, y_test, p_test)
    pred = p_test >= choice.value
    assert outcome.split == "test" and outcome.chosen_on == "val" and outcome.value == choice.value
    assert (outcome.n, outcome.positives) == (7, 3)
    assert outcome.sensitivity.value == pytest.approx((pred & (y_test == 1)).sum() / 3)
    assert outcome.specificity.value == pytest.approx((~pred & (y_test == 0)).sum() / 4)
    assert outcome.met == (outcome.sensitivity.value >= 0.8)
    assert (outcome.note is None) == outcome.met
    again = apply_threshold(json.loads(json.dumps(choice.to_dict(), allow_nan=False)), y_test, p_test)
    assert again.to_dict() == outcome.to_dict()


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        ("sensitivity>=0.9", "sensitivity", 0.9),
        (" Sensitivity >= 0.90 ", "sensitivity", 0.9),
        ("precision>=0.8", "precision", 0.8),
        ("max_f1", "max_f1", None),
        ("youden", "youden", None),
        ("fixed:0.3", "fixed", 0.3),
        ("fixed=0.3", "fixed", 0.3),
    ],
)
def test_parse_policy_accepts_valid_forms(text, kind, target):
    policy = parse_policy(text)
    assert (policy.kind, policy.target) == (kind, target)
    assert parse_policy(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["sensitivity>0.9", "fpr>=0.1", "fixed:1.5", "fixed:abc", "precision>=0", "", "f2"]
)
def test_parse_policy_rejects_bad_strings_with_valid_forms(text):
    with pytest.raises(ValidationError, match=re.escape("valid forms")):
        parse_policy(text)


def test_policy_needing_positives_on_a_split_without_any():
    with pytest.raises(ValidationError, match="no"):
        choose_threshold("max_f1", [0, 0, 0], [0.1, 0.5, 0.9])
    p = np.array([0.1, 0.5, 0.9])
    choice = choose_threshold("fixed:0.5", [0, 0, 0], p)
    assert choice.sensitivity.value is None and "no positive" in choice.sensitivity.reason
    assert choice.specificity.value == pytest.approx((p < 0.5).mean())


def test_compare_paired_identical_is_inconclusive_and_detects_worse():
    y, p, p_true = overconfident(n=1000, n_pos=100, seed=8)
    same = compare_paired(y, p, p.copy(), n_boot=300)
    assert {m["verdict"] for m in same["metrics"].values()} == {"inconclusive"}
    assert (same["n"], same["positives"]) == (1000, 100)
    better = compare_paired(y, p_true, p, n_boot=300)
    for name in ("brier", "nll", "ece"):
        m = better["metrics"][name]
        assert m["verdict"] == "a better", name
        assert m["low"] <= m["delta"] <= m["high"] < 0
    swapped = compare_paired(y, p, p_true, n_boot=300)
    assert {m["verdict"] for m in swapped["metrics"].values()} == {"b better"}
    json.dumps(better, allow_nan=False)


def test_measures_match_sklearn_and_intervals_contain_points():
    y, p, _ = overconfident(n=1000, n_pos=100, seed=9)
    out = measure_calibration(y, p, "test", n_boot=300)
    m = out["measures"]
    assert (out["split"], out["n"], out["positives"]) == ("test", 1000, 100)
    assert m["brier"]["value"] == pytest.approx(brier_score_loss(y, p))
    assert m["nll"]["value"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert m["mean_predicted"]["value"] == pytest.approx(p.mean())
    assert m["observed_prevalence"]["value"] == pytest.approx(0.1)
    for name in ("ece", "ece_quantile", "mce", "brier", "nll", "mean_predicted"):
        assert m[name]["low"] <= m[name]["value"] <= m[name]["high"], name
    detail = mce(y, p)
    assert m["mce"]["bin_counts"] == detail["bin_counts"] and sum(detail["bin_counts"]) == 1000
    json.dumps(out, allow_nan=False)
    small = measure_calibration(y[::10], p[::10], "test", n_boot=300)["measures"]["brier"]
    assert small["high"] - small["low"] > m["brier"]["high"] - m["brier"]["low"]
    # a split with no positives is measured, not a crash
    none_pos = measure_calibration(np.zeros(20, dtype=int), p[:20], "val", n_boot=50)
    assert none_pos["positives"] == 0 and none_pos["measures"]["ece"]["value"] is not None


def test_cross_fit_folds_and_small_splits():
    y, p, _ = overconfident_logits(n=300, n_pos=3, seed=10)
    result = cross_fit("platt", p, y)
    assert result.ok and result.k == 3  # min(5, 3 positives, 297 negatives)
    for fold in range(3):
        held = result.folds == fold
        assert y[held].sum() == 1
        refit = get_calibrator("platt").fit(p[~held], y[~held])
        assert np.allclose(result.probabilities[held], refit.transform(p[held]), atol=1e-12)
    one = cross_fit("isotonic", p, np.r_[1, np.zeros(299, dtype=int)])
    assert not one.ok and one.probabilities is None and "at least 2 positives" in one.reason
    assert cross_fit("temperature", *overconfident_logits(n=400, n_pos=40, seed=11)[1::-1]).k == 5
    with pytest.raises(ValidationError, match="k must be"):
        cross_fit("platt", p, y, k=4)


def test_assess_scores_held_out_data_json_safe():
    y_val, p_val, _ = overconfident_logits(n=400, n_pos=40, seed=12)
    y_test, p_test, _ = overconfident_logits(n=1000, n_pos=100, seed=13)
    out = assess("temperature", p_val, y_val, p_test, y_test, n_boot=200)
    json.dumps(out, allow_nan=False)
    assert out["fitted_on"] == {"split": "val", "n": 400, "positives": 40}
    names = [s["split"] for s in out["splits"]]
    assert names == ["val (cross-fitted, k=5)", "test"]
    test_entry = out["splits"][1]
    assert (test_entry["n"], test_entry["positives"]) == (1000, 100)
    assert test_entry["calibrated"]["split"] == "test"
    loaded = Calibrator.from_json(out["calibrator"])
    assert test_entry["calibrated"]["measures"]["brier"]["value"] == pytest.approx(
        brier_score_loss(y_test, loaded.transform(p_test))
    )
    assert test_entry["calibrated_vs_uncalibrated"]["metrics"]["nll"]["verdict"] == "a better"
    tiny = assess("isotonic", p_val[:50], np.r_[1, np.zeros(49, dtype=int)], n_boot=20)
    assert tiny["splits"][0]["calibrated"] is None and "at least 2 positives" in tiny["splits"][0]["reason"]


def test_plot_reliability_overlays_curves(tmp_path: Path):
    y, p, p_true = overconfident(n=500, n_pos=50, seed=14)
    curves = [
        ("uncalibrated", reliability_curve(y, p, split="test")),
        ("oracle", reliability_curve(y, p_true, split="test")),
        ("quantile", reliability_curve(y, p, strategy="quantile", split="test")),
    ]
    fig = plot_reliability(curves, tmp_path / "rel.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].get_lines()) == 4  # diagonal + 3 curves
    data = (tmp_path / "rel.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert plot_reliability(curves[:1]) is not None and not (tmp_path / "none.png").exists()
    with pytest.raises(ValidationError):
        plot_reliability([])


def test_scaling_methods_stay_finite_on_separable_validation():
    """0/1 maximum likelihood on separable validation sends the weight to infinity (T -> 0, an
    overconfident calibrator); Platt's smoothed targets keep temperature, Platt and beta moderate."""
    rng = np.random.default_rng(30)
    y = np.r_[np.ones(12, dtype=int), np.zeros(108, dtype=int)]
    z = np.where(y == 1, rng.normal(4.0, 1.0, 120), rng.normal(-4.0, 1.0, 120))
    assert z[y == 1].min() > z[y == 0].max()  # perfectly separated
    temperature = get_calibrator("temperature").fit(z, y)
    platt = get_calibrator("platt").fit(z, y)
    assert 0.5 < temperature.temperature < 2.0
    assert 0.3 < platt.weight < 2.0
    beta = get_calibrator("beta").fit(z, y)
    assert 0.01 < beta.transform(np.array([0.0]))[0] < 0.99
