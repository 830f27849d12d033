"""The Calibration page shows the calibration slope and intercept, the ECE read against n and a decision
curve (AppTest on a real SQLite workbench); the library views behind it on their own."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine
from test_ui_apptest import Seeded, app_as, seed_workbench, texts

from factories import make_cases, make_version, predict_with_temperature
from workbench.calibration.service import calibrate_version
from workbench.calibration.views import (
    calibrated_split,
    calibration_readings,
    decision_curve_figure,
    decision_curve_view,
    useful_range,
)
from workbench.config import load_settings
from workbench.db.engine import create_db_engine, engine_from_settings, session_scope
from workbench.db.models import Calibration
from workbench.db.schema import upgrade
from workbench.errors import WorkbenchError


@pytest.fixture
def seeded() -> Iterator[Seeded]:
    """A seeded workbench (users, real images, a queue) in this test's WORKBENCH_HOME."""
    import workbench_workers.app

    workbench_workers.app.get_app.cache_clear()  # the Celery app must use this test's broker
    settings = load_settings()
    settings.ensure_home()
    engine = engine_from_settings(settings)
    yield seed_workbench(settings.home, engine)
    engine.dispose()


def calibrated_versions(engine: Engine, splits: dict[str, int] | None = None) -> list[int]:
    """An over-confident (T=3) and a calibrated (T=1) version, each calibrated with identity and
    temperature scaling on the same labelled cases."""
    ids = make_cases(engine, splits or {"val": 80, "test": 80}, positive_rate=0.25, seed=7)
    cases = [c for split_ids in ids.values() for c in split_ids]
    out = []
    for temperature in (3.0, 1.0):
        vid = make_version(engine)
        predict_with_temperature(engine, vid, cases, temperature, seed=1)
        calibrate_version(engine, vid, ["identity", "temperature"], n_boot=100)
        out.append(vid)
    return out


def first_number(text: str) -> float:
    return float(re.match(r"-?\d+\.\d+", text).group(0))  # type: ignore[union-attr]


def test_calibration_page_shows_slope_intercept_reading_and_decision_curve(seeded: Seeded) -> None:
    over, calibrated = calibrated_versions(seeded.engine)
    at = app_as("alice")
    at.switch_page("app_pages/calibration.py").run()
    assert not at.exception and not at.error, texts(at.error)
    at.multiselect(key="cal_methods_pick").set_value(["identity", "temperature"]).run()
    assert not at.exception and not at.error, texts(at.error)

    readings = at.table[0].value.reset_index()
    assert {
        "calibration slope",
        "calibration intercept",
        "ECE (plug-in)",
        "ECE debiased (L2)",
        "reading",
    } <= set(readings.columns)
    assert set(readings["version"]) == {over, calibrated}
    test_rows = readings[readings["split"].str.startswith("test (n=80")]
    raw_over = test_rows[(test_rows["version"] == over) & test_rows["method"].str.startswith("identity")]
    # T=3 logits are three times too large: the slope on test is far below 1, its interval too.
    slope = raw_over.iloc[0]["calibration slope"]
    assert first_number(slope) < 0.6 and re.search(r"\[(\S+), (\S+)\]", slope)
    assert float(re.search(r", (\S+)\]", slope).group(1)) < 1.0  # type: ignore[union-attr]
    assert all(re.search(r"^ECE \d\.\d+ (is within|exceeds)", r) for r in readings["reading"])
    assert "exceeds" in raw_over.iloc[0]["reading"]
    assert "calibration slope" in texts(at.caption).lower() or "Slope 1" in texts(at.caption)

    # Decision curve on test: the newest version first, then the over-confident one with its selected
    # calibrator (temperature scaling fixes T=3 best), then another calibrator.
    assert at.selectbox(key="dca_version").value == calibrated
    at.selectbox(key="dca_version").set_value(over).run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.selectbox(key="dca_method").value == "temperature"
    captions = texts(at.caption)
    assert f"v{over} temperature probabilities on test (n=80" in captions
    assert "treat-all and treat-none" in captions
    assert len(at.image) >= 2  # the reliability figure and the decision curve
    at.selectbox(key="dca_method").set_value("identity").run()
    assert not at.exception and not at.error, texts(at.error)
    assert f"v{over} identity probabilities on test" in texts(at.caption)


def test_views_read_stored_measures_and_fall_back_to_validation(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    upgrade(engine)
    try:
        over, _ = calibrated_versions(engine, {"val": 120})  # no test split at all
        rows = calibration_readings(engine, [over], ["identity"])
        assert [r["split"] for r in rows] == ["val (identity: nothing fitted)"]
        assert rows[0]["calibration_slope"]["value"] < 0.6
        assert rows[0]["ece_null"]["n"] == 120 and "ECE" in rows[0]["reading"]

        data = calibrated_split(engine, over, "val", "temperature")
        assert data.n == 120 and data.p.min() >= 0.0 and data.p.max() <= 1.0
        curve = decision_curve_view(engine, over, "temperature")
        assert (curve["split"], curve["n"], curve["method"]) == ("val", 120, "temperature")
        assert "no labelled test predictions" in curve["notes"][0]
        assert "optimistic" in curve["notes"][1]
        assert len(curve["model"]) == len(curve["treat_all"]) == len(curve["thresholds"])
        assert decision_curve_figure(curve).axes[0].get_ylabel() == "Net benefit"
        span = useful_range(curve)
        assert span is None or 0.0 < span[0] <= span[1] < 1.0

        # Metrics stored before these measures existed: rows say so instead of failing.
        with session_scope(engine) as s:
            cal = s.query(Calibration).filter_by(model_version_id=over, method="identity").one()
            metrics = copy.deepcopy(cal.metrics)
            for entry in metrics["splits"]:
                measures = entry["calibrated"]["measures"]
                entry["calibrated"] = dict(entry["calibrated"], measures={"ece": measures["ece"]})
            cal.metrics = metrics
        old = calibration_readings(engine, [over], ["identity"])[0]
        assert old["calibration_slope"] is None and "no reference level" in old["reading"]

        empty = make_version(engine)
        with pytest.raises(WorkbenchError, match="no labelled predictions on test or val"):
            decision_curve_view(engine, empty)
    finally:
        engine.dispose()


def test_calibrated_split_without_predictions_is_empty(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    upgrade(engine)
    try:
        vid = make_version(engine)
        data = calibrated_split(engine, vid, "test")
        assert data.n == 0 and data.positives == 0 and np.asarray(data.p).size == 0
    finally:
        engine.dispose()
