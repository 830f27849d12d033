"""Every way a job can end leaves a terminal row: time limits, lost workers, stale heartbeats.

Real worker processes on the embedded SQLite broker and on Redis + PostgreSQL; handler executions
are counted from the sleep diagnostic's trace file (one line per run of the handler), not from rows.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, select, update

from conftest import Stack, WorkerProcess, run_cli
from workbench.db.engine import engine_from_settings, session_scope
from workbench.db.models import Job, ModelVersion, utcnow
from workbench.jobs import store

#: Short heartbeat settings for the worker processes of a test (production: 15 s and 300 s).
FAST_HEARTBEAT = {"WORKBENCH_HEARTBEAT_INTERVAL_S": "1", "WORKBENCH_HEARTBEAT_STALE_S": "4"}
#: The sleep diagnostic's own limits: hard 6 s, soft 3 s (the task limit's floor is 60 s).
SHORT_LIMITS = {**FAST_HEARTBEAT, "WORKBENCH_SLEEP_TIME_LIMIT_S": "6"}


@pytest.fixture
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started after this (request it before ``stack``) beat every second, stale after 4 s."""
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast heartbeats, and sleep jobs limited to 6 s (soft limit at 3 s)."""
    for key, value in SHORT_LIMITS.items():
        monkeypatch.setenv(key, value)


def send_sleep(stack: Stack, **params: Any) -> int:
    """Create a sleep job row and send it through the real sender (as ``submit_job`` would)."""
    from workbench.config import get_settings
    from workbench.jobs.params import SleepParams
    from workbench_workers.app import get_app, send_job

    get_settings.cache_clear()
    get_app.cache_clear()
    clean = SleepParams.parse(params).to_json()
    job_id = store.create_job(stack.engine, "sleep", clean, requester="test", queue="cpu")
    store.set_task_id(stack.engine, job_id, send_job(job_id, "sleep", "cpu"))
    return job_id


def executions(name: str) -> list[str]:
    """Lines the sleep handler wrote to trace ``name``: one per execution."""
    from workbench.config import load_settings
    from workbench.jobs.diagnostics import read_trace

    return read_trace(load_settings(), name)


def wait_job(stack: Stack, job_id: int, until=lambda j: j.done, timeout: float = 120) -> store.JobView:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(stack.engine, job_id)
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(
        f"job {job_id} still {store.get_job(stack.engine, job_id)} after {timeout}s\n{stack.worker.log()[-3000:]}"
    )


def _children(engine: Engine, job_id: int) -> list[Job]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Job).where(Job.parent_id == job_id)))


# Real workers --------------------------------------------------------------------------------------


def test_soft_time_limit_ends_failed_with_a_sentence(short_limits: None, stack: Stack) -> None:
    job_id = send_sleep(stack, seconds=60, steps=120, trace="soft")
    job = wait_job(stack, job_id)
    assert job.status == "failed"
    assert job.error.startswith("stopped at the soft time limit of 3 s (the hard limit is 6 s)")
    assert "WORKBENCH_SLEEP_TIME_LIMIT_S" in job.error and "Traceback" not in job.error
    assert len(executions("soft")) == 1 and job.attempts == 1


def test_hard_time_limit_fails_parent_and_step_and_is_never_rerun(short_limits: None, stack: Stack) -> None:
    # swallow_errors: the soft limit is caught and ignored, so only the hard limit can stop it
    job_id = send_sleep(stack, seconds=60, steps=60, swallow_errors=True, as_step=True, trace="hard")
    job = wait_job(stack, job_id)
    assert job.status == "failed", job
    assert job.error.startswith("killed at the hard time limit of 6 s"), job.error
    (step,) = _children(stack.engine, job_id)
    assert step.status == "failed" and step.error == f"ended with its parent job {job_id}: {job.error}"
    # A restarted worker sweeps for lost jobs before it says "ready": a failed job is not one of them.
    stack.worker.stop()
    stack.worker.start()
    assert store.get_job(stack.engine, job_id).status == "failed"
    assert len(executions("hard")) == 1 and store.get_job(stack.engine, job_id).attempts == 1


def test_a_second_worker_with_the_same_name_leaves_the_live_job_alone(
    fast_heartbeat: None, stack: Stack, tmp_path: Path
) -> None:
    job_id = send_sleep(stack, seconds=10, steps=20, trace="twin")
    running = wait_job(stack, job_id, until=lambda j: j.status == "running" and j.progress > 0)
    twin = WorkerProcess(stack.worker.env, tmp_path / "twin.log", name=stack.worker.name).start()
    try:
        job = wait_job(stack, job_id, timeout=60)
    finally:
        twin.stop()
    assert job.status == "succeeded" and job.attempts == 1
    assert job.worker == running.worker and job.worker.startswith(f"{stack.worker.name}/")
    assert len(executions("twin")) == 1  # the twin did not re-send and re-run it


def test_job_of_a_dead_worker_is_recovered_by_a_worker_of_another_name(
    fast_heartbeat: None, stack: Stack, tmp_path: Path
) -> None:
    job_id = send_sleep(stack, seconds=6, steps=12, trace="orphan")
    first = wait_job(stack, job_id, until=lambda j: j.status == "running" and j.progress > 0.1)
    stack.worker.kill()  # parent and children: nothing reports the loss
    other = WorkerProcess(stack.worker.env, tmp_path / "other.log", name="recreated@container").start()
    try:
        job = wait_job(stack, job_id, timeout=120)
    finally:
        other.stop()
    assert job.status == "succeeded" and job.attempts == 2
    assert job.worker.startswith("recreated@container/") and job.worker != first.worker
    assert len(executions("orphan")) == 2  # the killed run and the one that finished, no more


def test_a_job_whose_heartbeat_stops_is_resent_by_the_sweep_of_a_live_worker(
    fast_heartbeat: None, stack: Stack
) -> None:
    # A job claimed by a worker that vanished (its host, or its broker connection, gone for good)
    # after this worker started: only the periodic sweep can find it.
    job_id = store.create_job(
        stack.engine, "sleep", {"seconds": 0.2, "steps": 2, "trace": "sweep"}, requester="test", queue="cpu"
    )
    assert store.claim_job(stack.engine, job_id, "vanished@host/1/gone", max_attempts=3) is not None
    job = wait_job(stack, job_id, timeout=60)
    assert job.status == "succeeded" and job.attempts == 2
    assert job.worker.startswith(f"{stack.worker.name}/")
    assert len(executions("sweep")) == 1
    assert "re-sending jobs whose worker stopped reporting" in stack.worker.log()


def test_heartbeat_moves_while_a_step_blocks_without_reporting(fast_heartbeat: None, stack: Stack) -> None:
    job_id = send_sleep(stack, seconds=8, steps=1)  # one 8 s step: no progress call until the end

    def beat() -> Any:
        with session_scope(stack.engine) as s:
            return s.scalar(select(Job.heartbeat_at).where(Job.id == job_id))

    wait_job(stack, job_id, until=lambda j: j.status == "running")
    first = beat()
    wait_job(stack, job_id, until=lambda j: j.done or beat() != first, timeout=30)
    job = store.get_job(stack.engine, job_id)
    assert job.status == "running" and job.progress == 0.0 and beat() != first


# The store, on SQLite and PostgreSQL ---------------------------------------------------------------


def _running(engine: Engine, kind: str, worker: str, parent_id: int | None = None) -> int:
    job_id = store.create_job(engine, kind, {}, requester="test", queue="gpu", parent_id=parent_id)
    assert store.claim_job(engine, job_id, worker, max_attempts=3) is not None
    return job_id


def _age(engine: Engine, job_id: int, seconds: float) -> None:
    with session_scope(engine) as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_stale_round_no_longer_blocks_a_new_one(engine: Engine) -> None:
    from workbench.errors import ConflictError
    from workbench.rounds import ensure_no_active_round

    dead = _running(engine, "round", "gone@host/1/a")
    step = _running(engine, "train", "step of job", parent_id=dead)
    with session_scope(engine) as s:
        s.add(ModelVersion(job_id=step, preset="cpu", backbone="small_cnn", status="training", config={}))
    with pytest.raises(ConflictError):  # alive: it blocks
        ensure_no_active_round(engine, stale_after=timedelta(seconds=60))
    _age(engine, dead, 120)
    ensure_no_active_round(engine, stale_after=timedelta(seconds=60))  # stale: ended, no longer blocks
    ended = store.get_job(engine, dead)
    assert ended.status == "failed" and "stopped reporting (no heartbeat for more than 60 s)" in ended.error
    assert store.get_job(engine, step).status == "failed"
    with session_scope(engine) as s:
        assert s.scalar(select(ModelVersion.status).where(ModelVersion.job_id == step)) == "failed"
    live = _running(engine, "round", "alive@host/2/b")
    assert store.active_job_of_kind(engine, "round", stale_after=timedelta(seconds=60)) == live


def test_recovery_is_by_heartbeat_and_owner_never_by_name(engine: Engine) -> None:
    live = _running(engine, "sleep", "node@host/100/aaa")
    dead = _running(engine, "sleep", "node@host/99/zzz")
    step = _running(engine, "sleep", "step of job", parent_id=dead)
    _age(engine, dead, 600)
    _age(engine, step, 600)
    assert store.requeue_lost(engine, stale_after=timedelta(seconds=300)) == [dead]  # not its step
    assert store.get_job(engine, dead).status == "queued"
    assert store.get_job(engine, step).status == "failed"  # its next attempt redoes the step
    assert store.get_job(engine, live).status == "running"
    # A worker reporting a lost child touches only the jobs its own start claimed.
    assert store.requeue_lost(engine, job_ids=[live], worker="node@host/99/zzz") == []
    assert not store.fail_running(engine, live, "hard limit", worker="node@host/99/zzz")
    assert store.requeue_lost(engine, job_ids=[live], worker="node@host/100/aaa") == [live]


def test_an_outcome_from_a_run_that_lost_its_job_is_dropped(engine: Engine) -> None:
    job_id = _running(engine, "sleep", "old@host/1/a")
    _age(engine, job_id, 600)
    assert store.requeue_lost(engine, stale_after=timedelta(seconds=300)) == [job_id]
    assert store.claim_job(engine, job_id, "new@host/2/b", max_attempts=3) is not None
    assert not store.finish_job(engine, job_id, "succeeded", result={}, worker="old@host/1/a")
    assert not store.touch_heartbeat(engine, job_id, "old@host/1/a")
    assert store.get_job(engine, job_id).status == "running"
    assert store.finish_job(engine, job_id, "succeeded", result={}, worker="new@host/2/b")


def test_time_limits_name_their_setting() -> None:
    from workbench.config import load_settings
    from workbench.jobs.runner import time_limits

    settings = load_settings(task_time_limit_s=3600, sleep_time_limit_s=8)
    assert (time_limits(settings, "train").soft_s, time_limits(settings, "train").hard_s) == (3540, 3600)
    sleep = time_limits(settings, "sleep")
    assert (sleep.soft_s, sleep.hard_s) == (4, 8) and "WORKBENCH_SLEEP_TIME_LIMIT_S" in sleep.hard_message()


def test_heartbeat_settings_are_checked() -> None:
    from workbench.config import load_settings
    from workbench.errors import SettingsError

    with pytest.raises(SettingsError, match="WORKBENCH_HEARTBEAT_STALE_S.*more than twice"):
        load_settings(heartbeat_interval_s=10, heartbeat_stale_s=20)
    with pytest.raises(SettingsError, match="WORKBENCH_FAULT_POINT"):
        load_settings(fault_point="everywhere")


# Feature-cache builds honour cancel ----------------------------------------------------------------


def test_feature_cache_build_stops_between_batches_when_cancelled(tmp_path: Path) -> None:
    from workbench.data.synth import generate_dataset
    from workbench.model.features import FeatureCache, FeatureCacheCancelled

    summary = generate_dataset(tmp_path / "synth", n=12, positive_rate=0.5, seed=3, size=(32, 32))
    paths = sorted(str(p) for p in Path(summary.manifest).parent.rglob("*.jpg"))[:12]
    calls = {"backbone": 0}

    def backbone(images: Any, training: bool = False) -> np.ndarray:
        calls["backbone"] += 1
        return np.zeros((len(images), 2, 2, 4), np.float32)

    asked = iter([False, True])
    cache = FeatureCache(tmp_path / "features", should_cancel=lambda: next(asked))
    with pytest.raises(FeatureCacheCancelled, match="cancelled after 4 of 12 images"):
        cache.features(backbone, "small_cnn", paths, (16, 16), batch_size=4, backbone_id="b" * 64)
    assert calls["backbone"] == 1  # one batch built, then it stopped
    assert len(list((tmp_path / "features").rglob("*.npy"))) == 4


def test_submit_and_recover_use_the_configured_staleness(monkeypatch: pytest.MonkeyPatch) -> None:
    """`workbench submit round` ends a round silent past WORKBENCH_HEARTBEAT_STALE_S (not a fixed
    300 s), and `workbench jobs recover` uses the same bound by default."""
    from workbench.config import get_settings

    monkeypatch.setenv("WORKBENCH_HEARTBEAT_INTERVAL_S", "2")
    monkeypatch.setenv("WORKBENCH_HEARTBEAT_STALE_S", "60")
    get_settings.cache_clear()
    assert run_cli("db", "upgrade").returncode == 0
    engine = engine_from_settings(get_settings())
    try:
        dead = _running(engine, "round", "gone@host/1/a")
        res = run_cli("submit", "round")  # it just beat: it blocks
        assert res.returncode != 0 and "already queued or running" in res.stderr, res.stderr
        _age(engine, dead, 120)  # silent past the bound (well below the 300 s default)
        res = run_cli("submit", "round")
        assert res.returncode == 0, res.stderr
        assert store.get_job(engine, dead).status == "failed"
        lost = _running(engine, "train", "gone@host/1/a")
        _age(engine, lost, 120)
        res = run_cli("jobs", "recover")
        assert res.returncode == 0 and f"[{lost}]" in res.stdout, res.stdout + res.stderr
    finally:
        engine.dispose()


@pytest.fixture
def crash_at_task_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started after this SIGKILL their task process once, before it claims its job."""
    monkeypatch.setenv("WORKBENCH_FAULT_POINT", "task-start")


@pytest.mark.usefixtures("crash_at_task_start")  # before the stack: its worker carries the fault
def test_a_task_process_lost_before_it_claims_its_job_is_resent(stack: Stack) -> None:
    """The message is acknowledged and the row still ``queued``: without a re-send it waits for ever
    (and a queued round would block every new round)."""
    job_id = send_sleep(stack, seconds=0.2, steps=2, trace="early")
    job = wait_job(stack, job_id, timeout=180)
    assert (Path(stack.env["WORKBENCH_HOME"]) / "faults" / "task-start.fired").exists()
    assert job.status == "succeeded" and job.attempts == 2, job
    assert len(executions("early")) == 1  # the lost process never ran the handler


def test_the_loss_of_a_superseded_message_does_not_resend_the_job(engine: Engine) -> None:
    """A sweep re-queued and re-sent the job (a new message): when the process that held the old
    message dies, the job is not sent a second time (that would spend an attempt and race itself)."""
    job_id = store.create_job(engine, "sleep", {}, requester="test", queue="cpu")
    store.set_task_id(engine, job_id, "job-new")
    assert not store.count_lost_before_claim(engine, job_id, max_attempts=3, task_id="job-old")
    assert store.get_job(engine, job_id).attempts == 0
    assert store.count_lost_before_claim(engine, job_id, max_attempts=3, task_id="job-new")
    assert store.get_job(engine, job_id).attempts == 1
