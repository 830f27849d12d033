"""Calibrating a stored model version: rows, selection on validation only, threshold stored with the version."""

from __future__ import annotations

from sqlalchemy import select

from factories import make_cases, make_version, predict_with_temperature
from workbench.calibration.plots import plot_reliability
from workbench.calibration.service import calibrate_version, format_summary, load_curves
from workbench.db.engine import session_scope
from workbench.db.models import Calibration, Evaluation, ModelVersion, ReliabilityCurve


def test_calibrate_stores_methods_curves_and_threshold(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = make_cases(engine, {"train": 50, "val": 300, "test": 300, "pool": 20})
    v1, v2 = make_version(engine), make_version(engine)
    for v, t in ((v1, 2.5), (v2, 1.0)):
        predict_with_temperature(engine, v, cases["val"] + cases["test"] + cases["pool"], t, seed=v)
    summary = calibrate_version(
        engine, v1, ["identity", "temperature", "isotonic"], "sensitivity>=0.8", n_boot=200
    )
    assert set(summary.calibration_ids) == {"identity", "temperature", "isotonic"}

    # Over-confident logits (by T=2.5): temperature scaling finds T and lowers test NLL versus identity.
    def test_nll(method: str) -> float:
        entry = summary.assessments[method]["splits"][1]
        assert entry["split"] == "test"
        return entry["calibrated"]["measures"]["nll"]["value"]

    assert test_nll("temperature") < 0.9 * test_nll("identity")
    temperature = summary.assessments["temperature"]["calibrator"]["params"]["temperature"]
    assert 1.8 < temperature < 3.5
    assert summary.selected != "identity"
    with session_scope(engine) as s:
        version = s.get(ModelVersion, v1)
        assert version.calibration_id == summary.calibration_ids[summary.selected]
        assert version.threshold_policy == "sensitivity>=0.8"
        assert version.threshold_report["chosen_on"]["split"] == "val"
        assert version.threshold_report["chosen_on"]["sensitivity"]["value"] >= 0.8
        assert version.threshold_report["test"]["split"] == "test"
        assert s.scalars(
            select(ReliabilityCurve.binning).where(ReliabilityCurve.calibration_id == version.calibration_id)
        ).all()
        evals = s.scalars(select(Evaluation).where(Evaluation.model_version_id == v1)).all()
        assert {e.split for e in evals} == {"val", "test"}
    text = format_summary(summary)
    assert "test (n=300" in text and "val (cross-fitted" in text and "threshold" in text
    # Re-calibrating replaces rather than duplicates.
    calibrate_version(engine, v1, ["identity", "temperature"], "max_f1", n_boot=50)
    with session_scope(engine) as s:
        assert len(s.scalars(select(Calibration).where(Calibration.model_version_id == v1)).all()) == 2
    # Two versions overlaid in one PNG.
    calibrate_version(engine, v2, ["temperature"], "max_f1", n_boot=50)
    curves = load_curves(engine, [v1, v2], "temperature", "test")
    assert len(curves) == 2 and curves[0][0].startswith("v1")
    out = tmp_path / "rel.png"
    plot_reliability(curves, path=out)
    assert out.stat().st_size > 1000
