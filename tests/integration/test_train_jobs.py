"""Training and inference as jobs through a real worker process, on both brokers; crash and cancel safety."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_job_endings import fast_heartbeat  # noqa: F401 (a fixture)

from conftest import Stack, run_cli
from workbench.config import load_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import session_scope
from workbench.db.models import Job, ModelVersion, Prediction
from workbench.errors import WorkbenchError
from workbench.files import sha256_file
from workbench.jobs import store
from workbench.model.registry import artifact_dir, verify_artifact

TINY = json.dumps(
    {
        "model": {"input_size": [32, 32], "token_dim": 16, "heads": 2, "key_dim": 8, "cnn_width": 8},
        # plumbing on too little data to learn from: the learning check is recorded, not enforced
        "train": {"phase1_batch": 8, "patience": 100, "learning_check": "warn"},
    }
)


@pytest.fixture
def data_stack(stack: Stack, tmp_path: Path) -> Stack:
    summary = generate_dataset(
        tmp_path / "synth", n=60, positive_rate=0.25, seed=1, size=(48, 48), difficulty="easy"
    )
    import_source(stack.engine, summary.manifest)
    return stack


def _job_id(stdout: str) -> int:
    return int(next(ln for ln in stdout.splitlines() if ln.startswith("submitted")).split()[-1])


def _wait(stack: Stack, job_id: int, until, timeout: float = 300) -> store.JobView:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(stack.engine, job_id)
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id}: {store.get_job(stack.engine, job_id)}\n{stack.worker.log()[-3000:]}")


def _versions(stack: Stack) -> list[ModelVersion]:
    with session_scope(stack.engine) as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def test_train_then_infer_through_the_cli(data_stack: Stack) -> None:
    res = run_cli("submit", "train", "--epochs", "2", "--overrides", TINY, "--wait", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:] + data_stack.worker.log()[-3000:]
    job = store.get_job(data_stack.engine, _job_id(res.stdout))
    assert job.status == "succeeded" and job.progress == 1.0 and "epoch 2/2" in job.message
    (version,) = _versions(data_stack)
    assert job.result["model_version"] == version.id and version.job_id == job.id
    assert version.status == "ready" and sha256_file(Path(version.artifact_uri)) == version.artifact_sha256
    res = run_cli("submit", "infer", str(version.id), "--mc-samples", "3", "--wait", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    infer = store.get_job(data_stack.engine, _job_id(res.stdout))
    with session_scope(data_stack.engine) as s:
        n = s.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.model_version_id == version.id)
        )
        spread = s.scalars(
            select(Prediction.uncertainty).where(Prediction.model_version_id == version.id)
        ).all()
    assert infer.result["scored"] == n > 0
    assert all(u is not None and u >= 0 for u in spread)
    # Resumable: a second inference job finds nothing left to score.
    res = run_cli("submit", "infer", str(version.id), "--wait", timeout=600)
    assert store.get_job(data_stack.engine, _job_id(res.stdout)).result["scored"] == 0


def _executions(stack: Stack, job_id: int) -> int:
    """Runs of the job's handler, from the worker log (the runner logs one line as each starts)."""
    return stack.worker.log().count(f"job {job_id}: train handler starts")


def _assert_one_verified_version(stack: Stack, job_id: int) -> None:
    versions = _versions(stack)
    assert len(versions) == 1  # the re-run reused the version row of its job
    (version,) = versions
    assert version.job_id == job_id and version.status == "ready"
    assert verify_artifact(Path(version.artifact_uri), version.artifact_sha256) == version.artifact_sha256
    folder = Path(version.artifact_uri).parent
    assert [p.name for p in folder.iterdir() if p.suffix == ".keras"] == ["model.keras"]


@pytest.mark.usefixtures("fast_heartbeat")  # before the stack: the restarted worker finds it stale soon
def test_worker_killed_mid_epoch_retrains_into_one_verified_version(data_stack: Stack) -> None:
    res = run_cli("submit", "train", "--epochs", "40", "--overrides", TINY)
    job_id = _job_id(res.stdout)
    _wait(data_stack, job_id, lambda j: j.status == "running" and "epoch" in (j.message or ""))
    data_stack.worker.kill()
    (version,) = _versions(data_stack)
    assert version.status == "training" and version.artifact_uri is None
    data_stack.worker.start()
    job = _wait(data_stack, job_id, lambda j: j.done, timeout=600)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2 and _executions(data_stack, job_id) == 2
    _assert_one_verified_version(data_stack, job_id)


@pytest.fixture
def crash_in_artifact_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started after this truncate the new model file and SIGKILL themselves, once."""
    monkeypatch.setenv("WORKBENCH_FAULT_POINT", "artifact-write")


@pytest.mark.usefixtures("crash_in_artifact_write")  # before the stack: its worker carries the fault
def test_worker_killed_during_the_artifact_write_leaves_no_half_artifact(data_stack: Stack) -> None:
    marker = Path(data_stack.env["WORKBENCH_HOME"]) / "faults" / "artifact-write.fired"
    res = run_cli("submit", "train", "--epochs", "2", "--overrides", TINY)
    job_id = _job_id(res.stdout)
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), data_stack.worker.log()[-3000:]
    # The child died with a half-written model.keras: the version is not ready and records no artifact.
    (version,) = _versions(data_stack)
    assert version.status == "training" and version.artifact_uri is None and version.artifact_sha256 is None
    half = artifact_dir(load_settings(), version.id) / "model.keras"
    with pytest.raises(WorkbenchError, match="not a complete .keras file|corrupt"):
        verify_artifact(half)
    # The worker parent saw its child lost and re-sent the job; the retry writes a complete artifact.
    job = _wait(data_stack, job_id, lambda j: j.done, timeout=600)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2 and _executions(data_stack, job_id) == 2
    _assert_one_verified_version(data_stack, job_id)


def test_cancel_running_training_within_an_epoch(data_stack: Stack) -> None:
    import re

    def epoch(job: store.JobView) -> int:
        m = re.search(r"epoch (\d+)/", job.message or "")
        return int(m.group(1)) if m else 0

    res = run_cli("submit", "train", "--epochs", "400", "--overrides", TINY)
    job_id = _job_id(res.stdout)
    job = _wait(data_stack, job_id, lambda j: j.status == "running" and epoch(j) >= 2)
    assert run_cli("jobs", "cancel", str(job_id)).returncode == 0
    epoch_at_cancel = epoch(store.get_job(data_stack.engine, job_id))
    job = _wait(data_stack, job_id, lambda j: j.done, timeout=120)
    assert job.status == "cancelled"
    # The flag is read between batches (at most every 0.25 s); this tiny model's epochs take about that
    # long, so the run stops in the epoch under way or the next one.
    assert epoch(job) <= epoch_at_cancel + 2, (epoch_at_cancel, job.message)
    (version,) = _versions(data_stack)
    assert version.status == "cancelled" and version.artifact_uri is None
    folder = Path(data_stack.env["WORKBENCH_HOME"]) / "artifacts" / "models" / f"v{version.id}"
    assert not (folder.exists() and list(folder.glob("*.keras")))


def test_round_through_the_job_system_queues_a_batch_with_reasons(stack: Stack, tmp_path: Path) -> None:
    from workbench.db.models import QueueItem, Round

    summary = generate_dataset(
        tmp_path / "pool",
        n=80,
        positive_rate=0.25,
        seed=4,
        size=(48, 48),
        unlabelled_fraction=0.4,
        difficulty="easy",
    )
    import_source(stack.engine, summary.manifest)
    res = run_cli(
        "submit",
        "round",
        "--epochs",
        "2",
        "--batch-size",
        "6",
        "--policy",
        "max_f1",
        "--overrides",
        TINY,
        "--wait",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:] + stack.worker.log()[-3000:]
    round_job = store.get_job(stack.engine, _job_id(res.stdout))
    assert round_job.status == "succeeded" and round_job.progress == 1.0
    with session_scope(stack.engine) as s:
        steps = s.execute(
            select(Job.kind, Job.status).where(Job.parent_id == round_job.id).order_by(Job.id)
        ).all()
        items = s.scalars(select(QueueItem).where(QueueItem.round_id == round_job.result["round"])).all()
        rnd = s.get(Round, round_job.result["round"])
        version = s.get(ModelVersion, rnd.model_version_id)
    assert steps == [
        ("train", "succeeded"),
        ("infer", "succeeded"),
        ("calibrate", "succeeded"),
        ("queue", "succeeded"),
    ]
    assert len(items) == 6 and all(i.reason and i.strategy for i in items)
    assert len({i.case_id for i in items}) == 6  # no case twice
    assert version.status == "ready" and version.threshold is not None and rnd.threshold == version.threshold
