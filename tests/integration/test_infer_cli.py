"""`workbench infer VERSION` scores in process, so train -> infer -> calibrate needs no worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import func, select

from conftest import run_cli
from workbench.config import load_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import engine_from_settings, session_scope
from workbench.db.models import Calibration, Case, ModelVersion, Prediction
from workbench.db.schema import upgrade
from workbench.jobs import store

TINY = json.dumps(
    {
        "model": {"input_size": [32, 32], "token_dim": 16, "heads": 2, "key_dim": 8, "cnn_width": 8},
        # plumbing on too little data to learn from: the learning check is recorded, not enforced
        "train": {"phase1_batch": 8, "patience": 100, "learning_check": "warn"},
    }
)


def test_train_infer_calibrate_in_process_without_a_worker(tmp_path: Path) -> None:
    engine = engine_from_settings(load_settings())
    upgrade(engine)
    summary = generate_dataset(
        tmp_path / "synth", n=60, positive_rate=0.3, seed=1, size=(48, 48), difficulty="easy"
    )
    import_source(engine, summary.manifest)

    trained = run_cli("train", "--epochs", "2", "--overrides", TINY, "--evaluate-on", "", timeout=600)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    version = re.search(r"model version (\d+)", trained.stdout)
    assert version, trained.stdout
    vid = version.group(1)

    # Without scores there is nothing to calibrate: that is what `infer` provides.
    early = run_cli("calibrate", vid, "--methods", "identity,temperature", "--n-boot", "100")
    assert early.returncode == 1 and early.stderr.startswith("error: "), early.stdout + early.stderr

    # Bad input is refused by the parameter model, naming the option, before anything is loaded.
    bad = run_cli("infer", vid, "--splits", "pool,nope")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: InferParams splits:") and "nope" in bad.stderr, bad.stderr

    scored = run_cli("infer", vid, "--mc-samples", "2", timeout=600)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    with session_scope(engine) as s:
        expected = s.scalar(
            select(func.count()).select_from(Case).where(Case.split.in_(["pool", "val", "test"]))
        )
        stored = s.scalars(select(Prediction).where(Prediction.model_version_id == int(vid))).all()
        spreads = [p.uncertainty for p in stored]
    assert expected and len(stored) == expected
    assert all(u is not None and u >= 0 for u in spreads)  # the MC-dropout passes ran
    assert f"model version {vid}: scored {expected} case(s) of pool, val, test" in scored.stdout
    assert re.search(r"\[\s*\d+%\] scored \d+/\d+ pairs", scored.stdout), scored.stdout  # progress shown

    again = run_cli("infer", vid)  # resumable: nothing left to score
    assert again.returncode == 0 and "was scored already" in again.stdout, again.stdout + again.stderr

    calibrated = run_cli("calibrate", vid, "--methods", "identity,temperature", "--n-boot", "100")
    assert calibrated.returncode == 0, calibrated.stdout + calibrated.stderr
    assert f"model version {vid}: calibrators fitted on validation" in calibrated.stdout
    with session_scope(engine) as s:
        version_row = s.get(ModelVersion, int(vid))
        assert version_row is not None and version_row.calibration_id is not None
        assert s.scalar(select(func.count()).select_from(Calibration)) == 2
    assert store.list_jobs(engine) == []  # no job, no worker: everything ran in the command's process
    engine.dispose()
