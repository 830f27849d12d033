"""Operating thresholds with a statistical guarantee: Clopper-Pearson bounds, '@L' policies, fallbacks."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from workbench.calibration.threshold_choice import OperatingPoint, apply_threshold, choose_threshold
from workbench.calibration.thresholds import (
    ThresholdPolicy,
    format_operating_point,
    parse_policy,
)
from workbench.defaults import DEFAULT_POLICY
from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import (
    clopper_pearson_lower,
    clopper_pearson_lower_many,
    clopper_pearson_min_total,
)

NEW_FIELDS = ("guaranteed", "lower_bound", "confidence", "needed", "counted", "available")


def split(n_pos: int, n_neg: int, seed: int, shift: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """A validation split with binormal scores squashed to (0, 1), all scores distinct."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]
    z = np.r_[rng.normal(shift, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)]
    return y, 1.0 / (1.0 + np.exp(-z))


def brute(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """Counts at every distinct score used as threshold (ascending), computed case by case."""
    rows = []
    for t in np.unique(p):
        pred = p >= t
        rows.append(
            {
                "t": float(t),
                "tp": int((pred & (y == 1)).sum()),
                "fp": int((pred & (y == 0)).sum()),
                "tn": int((~pred & (y == 0)).sum()),
                "fn": int((~pred & (y == 1)).sum()),
            }
        )
    return rows


def lb(k: int, n: int, level: float = 0.95) -> float:
    return clopper_pearson_lower(k, n, level) if n else float("nan")


# -- Clopper-Pearson ------------------------------------------------------------------------------------
def test_clopper_pearson_lower_bound_known_values() -> None:
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10), abs=1e-10)
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.7411, abs=1e-4)
    assert clopper_pearson_lower(29, 29, 0.95) == pytest.approx(0.05 ** (1 / 29), abs=1e-10)
    # 1 of 1: the bound solves p = alpha
    assert clopper_pearson_lower(1, 1, 0.9) == pytest.approx(0.1, abs=1e-10)
    # 1 of n: 1 - (1 - p)^n = alpha  =>  p = 1 - (1 - alpha)^(1/n)
    assert clopper_pearson_lower(1, 20, 0.95) == pytest.approx(1 - 0.95 ** (1 / 20), abs=1e-10)
    # 5 of 10: the lower end of the classic two-sided 90% exact interval [0.2224, 0.7776]
    assert clopper_pearson_lower(5, 10, 0.95) == pytest.approx(0.2224, abs=1e-4)
    assert clopper_pearson_lower(0, 7, 0.95) == 0.0
    assert clopper_pearson_lower(0, 0, 0.95) is None
    # more confidence, lower bound; always below the point estimate
    assert clopper_pearson_lower(9, 10, 0.99) < clopper_pearson_lower(9, 10, 0.9) < 0.9
    with pytest.raises(ValidationError):
        clopper_pearson_lower(11, 10)
    with pytest.raises(ValidationError):
        clopper_pearson_lower(5, 10, 1.0)


def test_clopper_pearson_vectorised_matches_scalar() -> None:
    k = np.array([0, 3, 10, 7, 0])
    n = np.array([5, 10, 10, 40, 0])
    many = clopper_pearson_lower_many(k, n, 0.9)
    for i in range(4):
        assert many[i] == pytest.approx(clopper_pearson_lower(int(k[i]), int(n[i]), 0.9))
    assert math.isnan(many[4])


@pytest.mark.parametrize(
    ("target", "level", "n"), [(0.9, 0.95, 29), (0.95, 0.95, 59), (0.9, 0.9, 22), (0.9, 0.99, 44)]
)
def test_min_total_is_the_smallest_n_whose_best_case_reaches_the_target(target, level, n) -> None:
    assert clopper_pearson_min_total(target, level) == n
    assert math.ceil(math.log(1 - level) / math.log(target)) == n  # by hand: alpha^(1/n) >= target
    assert clopper_pearson_lower(n, n, level) >= target > clopper_pearson_lower(n - 1, n - 1, level)
    assert clopper_pearson_min_total(1.0, level) is None


# -- parsing --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "target", "confidence", "canonical"),
    [
        ("sensitivity>=0.9@95", "sensitivity", 0.9, 95.0, "sensitivity>=0.9@95"),
        (" Sensitivity >= 0.90 @ 95% ", "sensitivity", 0.9, 95.0, "sensitivity>=0.9@95"),
        ("specificity>=0.8", "specificity", 0.8, None, "specificity>=0.8"),
        ("spec>=0.8@99", "specificity", 0.8, 99.0, "specificity>=0.8@99"),
        ("ppv>=0.5@90", "precision", 0.5, 90.0, "precision>=0.5@90"),
        ("precision>=0.5@50", "precision", 0.5, 50.0, "precision>=0.5@50"),
        ("npv>=0.98", "npv", 0.98, None, "npv>=0.98"),
        ("NPV>=0.98@97.5", "npv", 0.98, 97.5, "npv>=0.98@97.5"),
    ],
)
def test_guaranteed_policies_parse_and_round_trip(text, kind, target, confidence, canonical) -> None:
    pol = parse_policy(text)
    assert (pol.kind, pol.target, pol.confidence) == (kind, target, confidence)
    assert str(pol) == canonical
    assert parse_policy(str(pol)) == pol
    assert pol.requires_guarantee == (confidence is not None)
    assert pol.point() == ThresholdPolicy(kind, target)


def test_default_policy_is_a_guaranteed_sensitivity_policy() -> None:
    pol = parse_policy(DEFAULT_POLICY)
    assert str(pol) == DEFAULT_POLICY == "sensitivity>=0.9@95"
    assert pol.level == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("sensitivity>=0.9@100", "50 <= L < 100"),
        ("sensitivity>=0.9@abc", "not a number"),
        ("sensitivity>=0.9@40", "50 <= L < 100"),
        ("sensitivity>=0.9@", "not a number"),
        ("sensitivity>=0.9@95@95", "not a number"),
        ("sensitivity>=1@95", "cannot be guaranteed"),
        ("max_f1@95", "applies only to"),
        ("fixed:0.3@95", "applies only to"),
        ("fpr>=0.1@95", "unknown constraint"),
    ],
)
def test_bad_confidence_suffixes_are_refused_with_the_valid_forms(text, why) -> None:
    with pytest.raises(ValidationError, match=re.escape("valid forms")) as err:
        parse_policy(text)
    assert why in str(err.value)
    assert "sensitivity>=0.9@95" in str(err.value)


# -- guaranteed choices ---------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [0.9, 0.8])
def test_guaranteed_sensitivity_is_the_highest_threshold_whose_bound_meets_the_target(target) -> None:
    y, p = split(40, 360, seed=3)
    rows = brute(y, p)
    meeting = [r for r in rows if lb(r["tp"], 40) >= target]
    choice = choose_threshold(f"sensitivity>={target:g}@95", y, p)
    assert choice.value == pytest.approx(max(r["t"] for r in meeting))
    assert choice.guaranteed is True and choice.met is True and choice.note is None
    chosen = next(r for r in rows if r["t"] == choice.value)
    assert choice.lower_bound == pytest.approx(lb(chosen["tp"], 40)) and choice.lower_bound >= target
    higher = [r for r in rows if r["t"] > choice.value]
    assert higher and lb(higher[0]["tp"], 40) < target  # the next higher threshold loses the guarantee
    assert (choice.needed, choice.counted, choice.available) == (
        clopper_pearson_min_total(target, 0.95),
        "validation positives",
        40,
    )
    # the guarantee costs sensitivity-threshold: never above the point policy's threshold
    assert choice.value <= choose_threshold(f"sensitivity>={target:g}", y, p).value


def test_impossible_guarantee_says_so_and_falls_back_to_the_point_policy() -> None:
    y, p = split(10, 90, seed=4)
    choice = choose_threshold("sensitivity>=0.9@95", y, p)
    point = choose_threshold("sensitivity>=0.9", y, p)
    assert choice.guaranteed is False
    assert (choice.needed, choice.counted, choice.available) == (29, "validation positives", 10)
    assert choice.value == point.value and choice.met is True
    assert choice.lower_bound == pytest.approx(lb(choice.confusion.tp, 10)) and choice.lower_bound < 0.9
    assert choice.note.startswith("not guaranteed at 95%")
    assert "needs >= 29 validation positives, has 10" in choice.note
    assert "point policy 'sensitivity>=0.9' used instead" in choice.note
    assert choice.policy == "sensitivity>=0.9@95"  # the record keeps what was asked for
    assert point.guaranteed is None and point.lower_bound is None


def test_guaranteed_specificity_is_the_lowest_threshold_whose_bound_meets_the_target() -> None:
    y, p = split(20, 180, seed=5)
    rows = brute(y, p)
    choice = choose_threshold("specificity>=0.7@95", y, p)
    meeting = [r for r in rows if lb(r["tn"], 180) >= 0.7]
    assert choice.value == pytest.approx(min(r["t"] for r in meeting))
    assert choice.guaranteed is True and choice.lower_bound >= 0.7
    lower = [r for r in rows if r["t"] < choice.value]
    assert lb(lower[-1]["tn"], 180) < 0.7
    assert (choice.counted, choice.available) == ("validation negatives", 180)
    point = choose_threshold("specificity>=0.7", y, p)
    assert point.value == pytest.approx(min(r["t"] for r in rows if r["tn"] / 180 >= 0.7))
    assert point.value <= choice.value and point.met is True
    # too few negatives for 0.9 at 95%
    y2, p2 = split(20, 20, seed=6)
    few = choose_threshold("specificity>=0.9@95", y2, p2)
    assert few.guaranteed is False and (few.needed, few.available) == (29, 20)
    assert "needs >= 29 validation negatives, has 20" in few.note


def test_guaranteed_npv_is_the_highest_threshold_whose_bound_meets_the_target() -> None:
    y, p = split(30, 270, seed=7)
    rows = brute(y, p)
    choice = choose_threshold("npv>=0.95@95", y, p)
    meeting = [r for r in rows if r["tn"] + r["fn"] and lb(r["tn"], r["tn"] + r["fn"]) >= 0.95]
    assert choice.value == pytest.approx(max(r["t"] for r in meeting))
    cleared = choice.confusion.tn + choice.confusion.fn
    assert choice.guaranteed is True and choice.lower_bound == pytest.approx(lb(choice.confusion.tn, cleared))
    assert (choice.counted, choice.available) == ("validation cases predicted negative", cleared)
    point = choose_threshold("npv>=0.95", y, p)
    ok = [r for r in rows if r["tn"] + r["fn"] and r["tn"] / (r["tn"] + r["fn"]) >= 0.95]
    assert point.value == pytest.approx(max(r["t"] for r in ok))
    assert choice.value <= point.value


def test_guaranteed_ppv_is_the_lowest_threshold_whose_bound_meets_the_target() -> None:
    y, p = split(60, 140, seed=8, shift=3.0)
    rows = brute(y, p)
    for text in ("ppv>=0.8@90", "precision>=0.8@90"):
        choice = choose_threshold(text, y, p)
        meeting = [r for r in rows if r["tp"] + r["fp"] and lb(r["tp"], r["tp"] + r["fp"], 0.9) >= 0.8]
        assert choice.value == pytest.approx(min(r["t"] for r in meeting))
        assert choice.guaranteed is True and choice.policy == "precision>=0.8@90"
        assert choice.counted == "validation cases predicted positive"
    point = choose_threshold("ppv>=0.8", y, p)
    assert point.value <= choice.value
    # 10 positives: no threshold can have 29 true positives among its predicted positives
    y2, p2 = split(10, 90, seed=9, shift=3.0)
    few = choose_threshold("ppv>=0.9@95", y2, p2)
    assert few.guaranteed is False and few.needed == 29
    assert "validation cases predicted positive" in few.note and "point policy 'precision>=0.9'" in few.note


# -- records and the test split -------------------------------------------------------------------------
def test_old_records_without_the_guarantee_fields_still_load_and_apply() -> None:
    y, p = split(10, 90, seed=10)
    old = choose_threshold("sensitivity>=0.9", y, p).to_dict()
    for key in NEW_FIELDS:
        old.pop(key)
    point = OperatingPoint.from_dict(json.loads(json.dumps(old)))
    assert all(getattr(point, key) is None for key in NEW_FIELDS)
    y_test, p_test = split(30, 270, seed=11)
    outcome = apply_threshold(old, y_test, p_test)
    assert outcome.lower_bound is None and outcome.guaranteed is None
    assert outcome.met == (outcome.sensitivity.value >= 0.9)
    new = choose_threshold("sensitivity>=0.9@95", y, p).to_dict()
    assert OperatingPoint.from_dict(json.loads(json.dumps(new, allow_nan=False))).to_dict() == new


def test_apply_threshold_reports_the_point_check_and_the_test_lower_bound() -> None:
    y, p = split(40, 360, seed=12)
    choice = choose_threshold("sensitivity>=0.9@95", y, p)
    y_test, p_test = split(50, 450, seed=13)
    outcome = apply_threshold(choice.to_dict(), y_test, p_test)
    tp = int(((p_test >= choice.value) & (y_test == 1)).sum())
    assert outcome.met == (tp / 50 >= 0.9)
    assert outcome.lower_bound == pytest.approx(lb(tp, 50))
    assert outcome.guaranteed is True and outcome.confidence == pytest.approx(0.95)
    assert outcome.split == "test" and outcome.chosen_on == "val"
    assert (outcome.note is None) == outcome.met


# -- the summary line -----------------------------------------------------------------------------------
def test_format_operating_point_states_the_guarantee_or_why_there_is_none() -> None:
    y, p = split(40, 360, seed=3)
    ok = choose_threshold("sensitivity>=0.9@95", y, p)
    line = format_operating_point(ok.to_dict(), "chosen on")
    assert line.startswith(
        f"threshold {ok.value:.3f} (sensitivity>=0.9@95) chosen on val (n=400, 40 positive)"
    )
    assert f"guaranteed: 95% lower bound {ok.lower_bound:.3f} >= 0.9" in line
    y2, p2 = split(12, 108, seed=4)
    bad = choose_threshold("sensitivity>=0.9@95", y2, p2)
    line = format_operating_point(bad.to_dict(), "chosen on")
    assert "not guaranteed" in line and "needs >= 29 validation positives, has 12" in line
    assert "point policy 'sensitivity>=0.9' used" in line
    assert "guaranteed: 95%" not in line
    test_line = format_operating_point(apply_threshold(ok, y2, p2).to_dict(), "reported on")
    assert "reported on test (n=120, 12 positive)" in test_line and "95% lower bound" in test_line
    old = choose_threshold("max_f1", y, p).to_dict()
    for key in NEW_FIELDS:
        old.pop(key)
    assert "guarantee" not in format_operating_point(old, "chosen on")


# -- the benchmark's simulation -------------------------------------------------------------------------
def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_thresholds.py"
    spec = importlib.util.spec_from_file_location("bench_thresholds", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_guaranteed_policy_covers_the_target_where_the_point_policy_does_not() -> None:
    bench = _bench()
    r = bench.simulate(40, draws=300, seed=1)
    assert r.guarantee_possible == 1.0
    assert r.guaranteed_coverage >= 0.9  # exact coverage 1 - 0.9^40 = 0.985
    assert r.point_coverage <= 0.6  # exact coverage 0.37: the point policy is a coin toss at best
    assert r.guaranteed_coverage - r.point_coverage >= 0.3
    assert r.guaranteed_specificity < r.point_specificity  # the price of the guarantee
    small = bench.simulate(10, draws=100, seed=2)
    assert small.guarantee_possible == 0.0 and small.coverage_when_guaranteed is None
    assert small.guaranteed_coverage == small.point_coverage  # pure fallback
    assert bench.expected_coverage(40, 0.9, 95.0) == pytest.approx(1 - 0.9**40)
