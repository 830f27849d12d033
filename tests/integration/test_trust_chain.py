"""The trust chain from logits to thresholds: float64 logits end to end, the imbalance prior undone,
ties broken by the raw logit (never by case id), validation kept clean of epoch selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select, update

from factories import insert_cases, make_cases, make_version, predict_with_temperature
from workbench.active.building import build_queue
from workbench.calibration.calibrator_base import sigmoid
from workbench.calibration.calibrators import get_calibrator
from workbench.calibration.service import calibrate_version, calibrated_probabilities, in_sample_note
from workbench.config import get_settings
from workbench.data.splits import tuning_mask
from workbench.db.engine import session_scope
from workbench.db.models import Calibration, Evaluation, ModelVersion, Prediction, QueueItem
from workbench.model.predictions import load_predictions, write_predictions
from workbench.model.prior import prior_correction, prior_offset_of
from workbench.model.registry import LabelledPairs, carve_tuning_slice


def test_logit_of_30_stays_distinguishable_from_25_end_to_end(engine) -> None:  # type: ignore[no-untyped-def]
    cases = make_cases(engine, {"val": 300, "test": 100})
    version = make_version(engine)
    predict_with_temperature(engine, version, cases["val"] + cases["test"], 3.0, seed=1)
    pool = insert_cases(engine, 3)
    z = np.array([25.0, 30.0, 36.5])
    write_predictions(engine, version, pool, z, 1.0 / (1.0 + np.exp(-z)), None)
    stored = load_predictions(engine, version, "pool")
    assert stored.logit.dtype == np.float64 and list(stored.logit) == [25.0, 30.0, 36.5]
    calibrate_version(engine, version, ["identity", "temperature", "isotonic"], "max_f1", n_boot=50)
    for method in (None, "none", "identity", "temperature", "isotonic"):
        p = calibrated_probabilities(engine, version, stored.logit, method)
        assert p[0] < p[1] < p[2] <= 1.0, method  # float32 (or a probability input) would tie all three


def test_queue_ties_break_by_raw_logit_not_case_id(engine) -> None:  # type: ignore[no-untyped-def]
    """An isotonic calibrator maps thousands of pool cases onto a few values; the picks inside a block
    must follow the raw logit. Case ids run opposite to the logits, so case-id order would pick the
    weakest cases of the block."""
    cases = make_cases(engine, {"val": 120, "test": 40})
    version = make_version(engine)
    predict_with_temperature(engine, version, cases["val"] + cases["test"], 1.0, seed=2)
    calibrate_version(engine, version, ["isotonic"], "max_f1", n_boot=20)
    with session_scope(engine) as s:
        params = s.get(Calibration, s.get(ModelVersion, version).calibration_id).params["params"]
    x, y = np.array(params["x"]), np.array(params["y"])
    flat = [(x[i], x[i + 1]) for i in range(len(x) - 1) if y[i] == y[i + 1]]
    low, high = max(flat, key=lambda seg: seg[1] - seg[0])  # the widest block of equal probability
    pool = insert_cases(engine, 3000)
    z = np.linspace(high, low, len(pool) + 2)[1:-1]  # first (lowest) case id has the highest logit
    write_predictions(engine, version, pool, z, sigmoid(z), None)
    p = calibrated_probabilities(engine, version, z)
    assert np.ptp(p) < 1e-8  # the isotonic step maps the whole pool to one value ...
    assert np.all(np.diff(p) < 0)  # ... and the tie-break orders it by the raw logit, not by case id
    settings = get_settings()
    build_queue(engine, settings, version, 25, mix={"likely_positive": 1.0})
    with session_scope(engine) as s:
        picked = set(s.scalars(select(QueueItem.case_id).where(QueueItem.kind == "label")))
    assert picked == set(pool[:25])  # the 25 highest logits


def test_prior_correction_recovers_the_base_rate_after_class_weighted_training() -> None:
    rng = np.random.default_rng(4)
    n, prevalence = 6000, 0.1
    y = (rng.random(n) < prevalence).astype(int)
    x = rng.normal(0.0, 1.0, (n, 2)) + np.where(y[:, None] == 1, 0.8, 0.0)
    fitted = LogisticRegression(class_weight="balanced").fit(x, y)  # w_c = n / (2 n_c), as training does
    z = fitted.decision_function(x)
    assert sigmoid(z).mean() > 0.35  # the weighted model believes in a balanced world
    correction = prior_correction("class_weight", int((y == 0).sum()), int(y.sum()))
    assert correction.offset == pytest.approx(math.log((y == 0).sum() / y.sum()))
    assert correction.exact
    identity = get_calibrator("identity", correction.offset).fit(z, y)
    assert identity.transform(z).mean() == pytest.approx(y.mean(), abs=0.01)
    # Temperature scaling has no bias: without the offset it cannot reach the base rate.
    shifted = get_calibrator("temperature").fit(z, y).transform(z).mean()
    corrected = get_calibrator("temperature", correction.offset).fit(z, y).transform(z).mean()
    assert abs(corrected - y.mean()) < 0.01 < abs(shifted - y.mean())
    assert prior_correction("none", 900, 100).offset == 0.0
    assert not prior_correction("focal", 900, 100, focal_gamma=2.0).exact


def test_calibration_removes_the_recorded_prior_shift_and_marks_validation_in_sample(engine) -> None:  # type: ignore[no-untyped-def]
    cases = make_cases(engine, {"val": 300, "test": 300})
    version = make_version(engine)
    with session_scope(engine) as s:
        row = s.get(ModelVersion, version)
        row.config = {"train": {"imbalance": "class_weight"}}
        row.data_counts = {"train": {"n": 1000, "negative": 900, "positive": 100}}
    predict_with_temperature(engine, version, cases["val"] + cases["test"], 1.0, seed=5)
    with session_scope(engine) as s:  # shift every stored logit by the class-weight prior, as training would
        s.execute(
            update(Prediction)
            .where(Prediction.model_version_id == version)
            .values(logit=Prediction.logit + math.log(9))
        )
    summary = calibrate_version(engine, version, ["identity", "temperature"], "max_f1", n_boot=50)
    assert any("prior shift +2.197" in note for note in summary.notes)
    with session_scope(engine) as s:
        row = s.get(ModelVersion, version)
        assert prior_offset_of(row.config, row.data_counts, row.metrics) == pytest.approx(math.log(9))
        assert row.threshold_report["prior_offset"] == pytest.approx(math.log(9))
        # no epoch_selection record (a version from before tuning slices): validation also picked the epoch
        expected = (
            "in-sample: the epoch was picked, the calibrator was fitted, the threshold chosen on this split"
        )
        assert row.threshold_report["chosen_on"]["in_sample"] == expected
        cal = s.scalar(
            select(Calibration).where(
                Calibration.model_version_id == version, Calibration.method == "identity"
            )
        )
        assert cal.params["prior_offset"] == pytest.approx(math.log(9))
        evals = {
            e.split: e.report
            for e in s.scalars(select(Evaluation).where(Evaluation.model_version_id == version))
        }
    assert evals["val"]["in_sample"] == expected and evals["test"]["in_sample"] is None
    assert in_sample_note("val", True, True, epoch_chosen=False) == (
        "in-sample: the calibrator was fitted, the threshold chosen on this split"
    )
    assert in_sample_note("test", True, True, True) is None
    test_entry = summary.assessments["identity"]["splits"][1]
    mean_pred = test_entry["calibrated"]["measures"]["mean_predicted"]["value"]
    assert mean_pred == pytest.approx(test_entry["positives"] / test_entry["n"], abs=0.04)


def test_tuning_slice_is_patient_grouped_stratified_and_falls_back_to_validation() -> None:
    patients = [f"p{i // 2}" for i in range(400)]  # two visits each, sharing a label
    labels = [int((i // 2) % 10 == 0) for i in range(400)]
    mask = tuning_mask(patients, labels, 0.15, seed=0)
    tuned = {p for p, m in zip(patients, mask, strict=True) if m}
    assert not tuned & {p for p, m in zip(patients, mask, strict=True) if not m}  # no patient on both sides
    assert 0.12 < sum(mask) / len(mask) < 0.18
    assert sum(y for y, m in zip(labels, mask, strict=True) if m) == pytest.approx(0.15 * sum(labels), abs=2)

    def pairs(n: int, pos_every: int) -> LabelledPairs:
        return LabelledPairs(
            list(range(n)),
            [(f"a{i}", f"b{i}") for i in range(n)],
            [int(i % pos_every == 0) for i in range(n)],
            [f"q{i}" for i in range(n)],
        )

    train, val = pairs(200, 10), pairs(60, 10)
    fit, tune, record = carve_tuning_slice(train, val, 0.15, seed=0)
    assert record["on"] == "tune" and not record["val_in_sample"]
    assert not set(fit.case_ids) & set(tune.case_ids) and len(fit.case_ids) + len(tune.case_ids) == 200
    small_fit, small_tune, small = carve_tuning_slice(pairs(30, 10), val, 0.15, seed=0)
    assert small["on"] == "val" and small["val_in_sample"] and "needs 3 of each" in small["why"]
    assert small_tune is val and len(small_fit.case_ids) == 30
    assert carve_tuning_slice(train, val, 0.0, seed=0)[2]["why"] == "tuning_fraction is 0"
