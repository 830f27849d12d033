"""Training that cannot collapse silently: the learning check, the did_not_learn status and the round stop.

Unit tests judge synthetic arrays; the integration tests train a tiny real Keras model on synthetic
pairs whose labels were shuffled (nothing to learn) and check that the version ends did_not_learn,
that nothing downstream (warm start, inference, calibration, queue, promotion) accepts it, that a
round stops right after training, and that ``workbench train`` says why and exits 3.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from workbench.actors import LOCAL_OPERATOR
from workbench.jobs.params import TrainParams
from workbench.model.learning_check import (
    DID_NOT_LEARN,
    FAIL,
    INCONCLUSIVE,
    LEARNED,
    PASS,
    check_learning,
    constant_predictor_loss,
    not_ready_message,
)

FLAT = {"phase1": {"loss": [0.71, 0.695, 0.693, 0.6931]}}  # stuck at ln 2
FALLING = {"phase1": {"loss": [0.69, 0.55, 0.41, 0.33]}}


def _labels(n: int, positives: int, seed: int = 0) -> np.ndarray:
    y = np.zeros(n, dtype=int)
    y[:positives] = 1
    return np.random.default_rng(seed).permutation(y)


def _statuses(check) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.name: c.status for c in check.criteria}


def test_constant_logits_did_not_learn_on_every_criterion() -> None:
    y = _labels(120, 36)
    check = check_learning(y, np.full(120, -0.85), FLAT, "class_weight", train_prevalence=0.3, best_epoch=4)
    assert check.verdict == DID_NOT_LEARN and not check.learned
    assert _statuses(check) == {"auroc_above_chance": FAIL, "outputs_vary": FAIL, "loss_below_prior": FAIL}
    auroc = check.criterion("auroc_above_chance").values
    assert auroc["auroc"] == 0.5 and auroc["ci"] == [0.5, 0.5] and auroc["positives"] == 36
    assert check.criterion("outputs_vary").values["logit_std"] < 1e-12
    loss = check.criterion("loss_below_prior").values
    assert loss["constant_loss"] == pytest.approx(math.log(2)) and loss["ratio"] == pytest.approx(
        1.0, abs=1e-3
    )
    assert len(check.reasons) == 3 and check.advice
    text = check.summary()
    assert text.startswith("did not learn: validation AUROC 0.50 [0.50, 0.50]") and "try: " in text
    assert check.to_dict()["summary"] == text


def test_random_logits_did_not_learn_by_auroc_alone() -> None:
    rng = np.random.default_rng(1)
    y = _labels(200, 60, seed=2)
    check = check_learning(
        y, rng.normal(size=200), FALLING, "class_weight", train_prevalence=0.3, best_epoch=4
    )
    assert check.verdict == DID_NOT_LEARN
    assert _statuses(check) == {"auroc_above_chance": FAIL, "outputs_vary": PASS, "loss_below_prior": PASS}
    low, high = check.criterion("auroc_above_chance").values["ci"]
    assert low <= 0.5 <= high
    assert check.reasons == [check.criterion("auroc_above_chance").detail]
    assert "includes chance" in check.reasons[0]
    assert any("labels match" in tip for tip in check.advice)
    # Deterministic: the same inputs give the same interval.
    again = check_learning(
        y, np.random.default_rng(1).normal(size=200), FALLING, "class_weight", train_prevalence=0.3
    )
    assert again.criterion("auroc_above_chance").values == check.criterion("auroc_above_chance").values


def test_good_separation_learned() -> None:
    rng = np.random.default_rng(3)
    y = _labels(150, 30, seed=4)
    logits = 2.5 * y - 1.0 + rng.normal(scale=0.8, size=150)
    check = check_learning(y, logits, FALLING, "balanced", train_prevalence=0.2, best_epoch=4)
    assert check.verdict == LEARNED and check.learned and check.reasons == [] and check.advice == []
    assert all(s == PASS for s in _statuses(check).values())
    assert check.criterion("auroc_above_chance").values["ci"][0] > 0.5
    assert check.summary().startswith("learned: validation AUROC")


def test_too_few_positives_is_inconclusive_not_failed() -> None:
    y = _labels(40, 2, seed=5)
    logits = np.where(y == 1, 1.5, -1.5) + np.random.default_rng(6).normal(scale=0.3, size=40)
    check = check_learning(y, logits, FALLING, "class_weight", train_prevalence=0.1)
    assert check.verdict == LEARNED
    auroc = check.criterion("auroc_above_chance")
    assert auroc.status == INCONCLUSIVE and "2 positive" in auroc.detail and auroc.values["ci"] is None
    # Too few positives does not excuse a collapsed run: the other criteria still fail it.
    flat = check_learning(y, np.zeros(40), FLAT, "class_weight", train_prevalence=0.1)
    assert flat.verdict == DID_NOT_LEARN
    assert _statuses(flat) == {
        "auroc_above_chance": INCONCLUSIVE,
        "outputs_vary": FAIL,
        "loss_below_prior": FAIL,
    }


def test_constant_predictor_loss_follows_the_imbalance_handling() -> None:
    ln2 = math.log(2)
    assert constant_predictor_loss(0.1, "class_weight")[0] == pytest.approx(ln2)
    assert constant_predictor_loss(0.1, "balanced")[0] == pytest.approx(ln2)
    entropy = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    assert constant_predictor_loss(0.1, "none")[0] == pytest.approx(entropy)
    # Class-balanced focal loss (alpha = fraction of negatives): 2 pi (1 - pi) 0.5^gamma ln 2 at p = 0.5.
    assert constant_predictor_loss(0.1, "focal", 2.0)[0] == pytest.approx(
        2 * 0.1 * 0.9 * 0.25 * ln2, rel=1e-4
    )
    assert constant_predictor_loss(0.3, "focal", 0.0, 0.7)[0] == pytest.approx(2 * 0.3 * 0.7 * ln2, rel=1e-4)
    # A focal run whose loss sits at its (much lower) prior is flat; without imbalance handling, an
    # entropy-level loss on a 10% prevalence is flat even though it is far below ln 2.
    y = _labels(100, 30)
    logits = 2.5 * y + np.random.default_rng(0).normal(size=100)
    focal = check_learning(y, logits, {"phase1": {"loss": [0.0320]}}, "focal", train_prevalence=0.1)
    assert focal.criterion("loss_below_prior").status == FAIL
    none = check_learning(y, logits, {"phase1": {"loss": [0.33]}}, "none", train_prevalence=0.1)
    assert none.criterion("loss_below_prior").status == FAIL


def test_loss_is_read_at_the_kept_epoch_over_both_phases() -> None:
    y = _labels(100, 30)
    logits = 2.5 * y + np.random.default_rng(0).normal(size=100)
    history = {"phase1": {"loss": [0.69, 0.5]}, "phase2": {"loss": [0.69]}}
    kept_last = check_learning(y, logits, history, "class_weight", train_prevalence=0.3, best_epoch=3)
    assert kept_last.criterion("loss_below_prior").status == FAIL
    kept_second = check_learning(y, logits, history, "class_weight", train_prevalence=0.3, best_epoch=2)
    assert kept_second.criterion("loss_below_prior").values["loss"] == 0.5
    unknown = check_learning(y, logits, history, "class_weight", train_prevalence=0.3)
    assert unknown.criterion("loss_below_prior").status == PASS  # the lowest epoch is used
    assert (
        check_learning(y, logits, {}, "class_weight", train_prevalence=0.3)
        .criterion("loss_below_prior")
        .status
        == INCONCLUSIVE
    )


def test_not_ready_message_names_the_reason() -> None:
    error = "did not learn: validation AUROC 0.51 [0.38, 0.64] (n=40, 12 positives); try: add labels"
    assert not_ready_message(7, DID_NOT_LEARN, error) == (
        "model version 7 did not learn: validation AUROC 0.51 [0.38, 0.64] (n=40, 12 positives); try: add labels"
    )
    assert not_ready_message(3, "failed") == "model version 3 is failed, not ready"


# --- integration: a tiny real Keras model on label-shuffled synthetic pairs ---------------------------

TINY = {
    "model": {"input_size": [32, 32], "token_dim": 16, "heads": 2, "key_dim": 8, "cnn_width": 8},
    "train": {"phase1_batch": 16, "patience": 100},
}


@dataclass
class Shuffled:
    engine: Engine
    settings: object
    root: Path
    version: int


def _shuffle_labels(manifest: Path, seed: int) -> None:
    """Permute the manifest's label column: the images no longer say anything about the labels."""
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
        fields = list(rows[0])
    labelled = [r for r in rows if r["label"] not in ("", None)]
    labels = [r["label"] for r in labelled]
    for row, label in zip(labelled, np.random.default_rng(seed).permutation(labels), strict=True):
        row["label"] = label
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from workbench.config import Settings
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset
    from workbench.db.engine import create_db_engine
    from workbench.db.schema import upgrade
    from workbench.model.registry import train_version

    root = tmp_path_factory.mktemp("shuffled")
    settings = Settings(home=root / "home", database_url=f"sqlite:///{root / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        root / "data", n=160, positive_rate=0.3, seed=3, size=(48, 48), unlabelled_fraction=0.1
    )
    _shuffle_labels(data.manifest, seed=11)
    import_source(engine, data.manifest)
    result = train_version(engine, settings, TrainParams(preset="cpu", epochs=2, overrides=TINY))
    yield Shuffled(engine, settings, root, result["model_version"]), result
    engine.dispose()


def test_shuffled_labels_end_did_not_learn_with_the_artifact_kept(shuffled) -> None:  # type: ignore[no-untyped-def]
    from workbench.db.engine import session_scope
    from workbench.db.models import ModelVersion
    from workbench.model.registry import verify_artifact

    wb, result = shuffled
    assert result["did_not_learn"] is True and result["status"] == DID_NOT_LEARN
    assert result["message"].startswith(f"model version {wb.version} did not learn: ")
    with session_scope(wb.engine) as s:
        version = s.get(ModelVersion, wb.version)
        status, error, metrics, uri, digest = (
            version.status,
            version.error,
            version.metrics,
            version.artifact_uri,
            version.artifact_sha256,
        )
    assert status == DID_NOT_LEARN
    check = metrics["learning_check"]
    assert check["verdict"] == DID_NOT_LEARN and check["reasons"] and check["advice"]
    assert error == check["summary"] and "try: " in error
    val = next(c for c in check["criteria"] if c["name"] == "auroc_above_chance")
    assert val["values"]["positives"] >= 3  # enough validation positives to judge the ranking
    verify_artifact(Path(uri), digest)  # written and complete, for debugging


def test_a_version_that_did_not_learn_is_refused_downstream(shuffled) -> None:  # type: ignore[no-untyped-def]
    from workbench.calibration.service import calibrate_version
    from workbench.errors import WorkbenchError
    from workbench.export.promotion import promote
    from workbench.model.registry import train_version
    from workbench.model.scoring import infer_version
    from workbench.read.versions import ready_versions

    wb, _ = shuffled
    said = f"model version {wb.version} did not learn: "
    with pytest.raises(WorkbenchError, match=said):
        infer_version(wb.engine, wb.settings, wb.version, ["pool"], mc_samples=0)
    with pytest.raises(WorkbenchError, match=said):
        calibrate_version(wb.engine, wb.version)
    with pytest.raises(WorkbenchError, match=said):
        promote(wb.engine, wb.version, LOCAL_OPERATOR, "it looks fine")
    with pytest.raises(WorkbenchError, match=f"cannot warm-start from it: {said}"):
        train_version(
            wb.engine, wb.settings, TrainParams(preset="cpu", parent_version=wb.version, overrides=TINY)
        )
    assert wb.version not in ready_versions(wb.engine)


def test_round_stops_after_training_when_the_version_did_not_learn(shuffled) -> None:  # type: ignore[no-untyped-def]
    from workbench.active.guided import GUIDED_PREFIX, queue_guided
    from workbench.db.engine import session_scope
    from workbench.db.models import Calibration, Case, Job, ModelVersion, Prediction, QueueItem, Round
    from workbench.jobs import store
    from workbench.jobs.runner import run_job
    from workbench.jobs.submit import submit_job
    from workbench.rounds import round_summary

    wb, _ = shuffled
    job_id = submit_job(
        wb.engine,
        "round",
        {"train": {"preset": "cpu", "epochs": 2, "overrides": TINY}, "batch_size": 5},
        requester=LOCAL_OPERATOR,
        send=lambda *_: "in-process",
    )
    view = run_job(wb.engine, wb.settings, job_id, "test-worker")
    assert view is not None and view.status == "succeeded", view.error if view else None
    result = view.result or {}
    # nothing is queued from the version; the labellers get a batch the non-learned baseline chose
    assert result["did_not_learn"] is True and result["queued"] == 5 and result["reasons"]
    assert result["queued_by"] == "baseline_guided"
    assert not any("workbench queue cold-start" in a for a in result["advice"])  # a batch is there
    assert "round stopped after training" in view.message and "did not learn" in view.message
    assert "5 pool case(s) queued by the non-learned baseline" in view.message
    assert result["message"] == view.message
    version_id = result["model_version"]
    assert version_id != wb.version  # a new version: the earlier one was no warm-start parent
    with session_scope(wb.engine) as s:
        steps = s.execute(select(Job.kind, Job.status).where(Job.parent_id == job_id).order_by(Job.id)).all()
        rnd = s.get(Round, result["round"])
        round_status, report, closed, rnd_id = rnd.status, rnd.report, rnd.closed_at, rnd.id
        version = s.get(ModelVersion, version_id)
        assert version.status == DID_NOT_LEARN and version.parent_id is None
        counts = {
            table.__name__: s.scalar(select(func.count()).select_from(table).where(cond))
            for table, cond in (
                (Calibration, Calibration.model_version_id == version_id),
                (Prediction, Prediction.model_version_id == version_id),
                (QueueItem, QueueItem.round_id == rnd.id),
            )
        }
    assert steps == [("train", "succeeded")]  # no infer, calibrate or queue step
    assert counts == {"Calibration": 0, "Prediction": 0, "QueueItem": 5}
    with session_scope(wb.engine) as s:
        items = s.execute(
            select(QueueItem.kind, QueueItem.reason, Case.split)
            .join(Case, Case.id == QueueItem.case_id)
            .where(QueueItem.round_id == rnd_id)
        ).all()
    assert {(kind, split) for kind, _, split in items} == {("label", "pool")}
    assert all(reason.startswith(GUIDED_PREFIX) for _, reason, _ in items)
    # a retried round (redelivery) does not queue a second batch
    again = queue_guided(wb.engine, wb.settings, 5, round_id=rnd_id)
    assert again == {"queued": 0, "already_queued": 5, "strategy": "baseline_guided"}
    assert report["queue"]["queued"] == 5 and report["queue"]["fitted_on"]["n"] > 0
    assert round_status == DID_NOT_LEARN and closed is not None
    assert report["stopped"] == DID_NOT_LEARN and report["learning_check"]["reasons"]
    train_job = store.list_jobs(wb.engine, limit=10)
    child = next(j for j in train_job if j.parent_id == job_id)
    assert (child.result or {}).get("did_not_learn") and "did not learn" in (child.message or "")
    summary = round_summary(wb.engine, result["round"])
    assert summary["status"] == DID_NOT_LEARN and "did not learn" in summary["stopped"]
    assert summary["batch"] == {"queued": 5, "labelled": 0}  # what `round status` and the pages show
    assert sum(row["queued"] for row in summary["by_strategy"].values()) == 5


def test_cli_train_prints_the_verdict_and_exits_3(shuffled, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from workbench.config import get_settings
    from workbench_cli import app

    wb, _ = shuffled
    monkeypatch.setenv("WORKBENCH_HOME", str(wb.settings.home))
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", wb.settings.db_url)
    get_settings.cache_clear()
    res = CliRunner().invoke(app, ["train", "--epochs", "2", "--overrides", json.dumps(TINY)])
    assert res.exit_code == 3, res.output
    assert "did not learn" in res.output and "what to try:" in res.output
    assert "validation AUROC" in res.output or "training loss" in res.output
