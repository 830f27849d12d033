"""The stopping signal end to end: ``round_summary``, ``workbench round status`` and the Data page, on
rounds whose versions' predictions are stored by the factories (real database, nothing mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, update
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from factories import label_of, make_cases, make_version
from workbench.active.ranker import compare_on_val
from workbench.active.stopping import CONSIDER_STOPPING, MIN_VAL_POSITIVES, NOT_ENOUGH, STILL_PAYING
from workbench.db.engine import session_scope
from workbench.db.models import Label, ModelVersion, Round
from workbench.model.predictions import write_predictions
from workbench.rounds import round_summary

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")


def _version(engine: Engine, cases: list[int], logit: np.ndarray, threshold: float = 0.5) -> int:
    """A ready, thresholded version whose stored predictions are ``logit`` on ``cases``."""
    vid = make_version(engine)
    write_predictions(engine, vid, cases, logit, 1 / (1 + np.exp(-logit)), None)
    with session_scope(engine) as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == vid).values(threshold=threshold))
    return vid


def _round(engine: Engine, number: int, version: int) -> int:
    with session_scope(engine) as s:
        rnd = Round(number=number, status="labelling", model_version_id=version, batch_size=20)
        s.add(rnd)
        s.flush()
        return rnd.id


def settled_workbench(engine: Engine) -> tuple[list[int], list[int], np.ndarray]:
    """Three rounds whose versions score alike (the labels stopped paying): (round ids, the scored
    cases: validation then pool, and the logits every version stored).

    Validation: 200 imported labels; pool: 40 expert-labelled cases (30 positive), 360 unlabelled cases
    every version scores as very unlikely positive."""
    ids = make_cases(engine, {"val": 200, "pool": 400}, positive_rate=0.15, seed=1)
    val, pool = ids["val"], ids["pool"]
    with session_scope(engine) as s:
        for i, cid in enumerate(pool[:40]):
            s.add(Label(case_id=cid, value=int(i < 30), labeller="alice", source="expert"))
    y = label_of(engine, val)
    cases = val + pool
    logit = np.r_[1.5 * y + np.random.default_rng(2).normal(0, 1, len(val)), np.full(len(pool), -8.0)]
    return [_round(engine, n, _version(engine, cases, logit)) for n in (1, 2, 3)], cases, logit


def test_round_summary_and_round_status_say_when_to_stop(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (r1, r2, r3), cases, logit = settled_workbench(engine)

    first = round_summary(engine, r1)["stopping"]
    assert first["available"] is False and first["verdict"] == NOT_ENOUGH
    assert "first round with a ready version" in first["reason"]
    second = round_summary(engine, r2)["stopping"]
    assert second["verdict"] == NOT_ENOUGH and "no earlier round" in second["reasons"][1]

    third = round_summary(engine, r3)["stopping"]
    assert third["verdict"] == CONSIDER_STOPPING, third["reasons"]
    change = third["auprc_change"]
    assert (change["split"], change["n"], change["delta"], change["includes_zero"]) == ("val", 200, 0.0, True)
    assert change["positives"] >= MIN_VAL_POSITIVES
    assert third["stability"]["n"] == 360 and third["stability"]["flipped"] == 0
    left = third["positives_left"]
    assert left["n"] == 360 and left["found"] == 30
    assert left["expected"] == pytest.approx(360 / (1 + np.exp(8.0)))
    assert round_summary(engine, r3, stopping=False)["stopping"] is None

    # a fourth version separates validation perfectly and calls 40 unlabelled pool cases positive
    sharp = logit.copy()
    y = label_of(engine, cases[:200])
    sharp[:200] = np.where(y == 1, 4.0, -4.0) + np.linspace(0, 0.1, 200)
    sharp[240:280] = 3.0
    fourth = round_summary(engine, _round(engine, 4, _version(engine, cases, sharp)))["stopping"]
    assert fourth["verdict"] == STILL_PAYING
    assert fourth["auprc_change"]["low"] > 0 and "still improving" in fourth["reasons"][0]
    assert fourth["stability"]["flipped"] == 40 and "still moving" in fourth["reasons"][2]

    monkeypatch.setenv("WORKBENCH_DATABASE_URL", db_url)
    from workbench.config import get_settings
    from workbench_cli import app

    get_settings.cache_clear()
    res = CliRunner().invoke(app, ["round", "status", str(r3)])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed["stopping"]["verdict"] == CONSIDER_STOPPING
    assert f"when to stop labelling (round 3): {CONSIDER_STOPPING}" in res.stderr


def test_the_data_page_shows_the_latest_rounds_stopping_signal() -> None:
    from workbench.config import load_settings
    from workbench.db.engine import engine_from_settings
    from workbench.db.schema import upgrade
    from workbench.users import add_user

    settings = load_settings()
    settings.ensure_home()
    engine = engine_from_settings(settings)
    upgrade(engine)
    add_user(engine, "alice", "alice-password", "labeller")
    (r1, _, r3), _, _ = settled_workbench(engine)
    choice = compare_on_val(np.array([0, 1, 0, 1]), np.array([1.0, 0.0, 0.5, 0.2]), np.arange(4.0))
    with session_scope(engine) as s:  # what the queue step stores: who ranked the batch
        s.execute(update(Round).where(Round.id == r3).values(report={"queue": {"ranker": choice.to_json()}}))
        s.execute(
            update(Round).where(Round.id == r1).values(report={"queue": {"strategy": "baseline_guided"}})
        )
    engine.dispose()

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["wb_user"] = {"username": "alice", "role": "labeller", "via": "password"}
    at.run()
    at.switch_page("app_pages/data.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "When to stop labelling" in [h.value for h in at.subheader]
    (rounds,) = [d.value for d in at.dataframe if "ranked by" in d.value.columns]
    ranked = dict(zip(rounds["round"], rounds["ranked by"], strict=True))
    assert ranked[1] == "baseline-guided (the version did not learn)" and ranked[2] == "n/a"
    assert (
        ranked[3] == f"baseline (val AUPRC {choice.baseline_auprc:.2f} > version {choice.version_auprc:.2f})"
    )
    verdict = "\n".join(str(e.value) for e in at.success)
    assert "Consider stopping" in verdict and "no detectable change" in verdict
    table = at.dataframe[-1].value
    assert table["where"].iloc[0].startswith("val (n=200,") and table["value"].iloc[0] == "+0.000"
    assert table["value"].iloc[1] == "0 (0.0%)" and "(n=360)" in table["where"].iloc[1]
    assert "30 found so far" in table["measure"].iloc[3]
