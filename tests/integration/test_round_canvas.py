"""A round spread over workers: inference shards on every gpu worker, calibration and queue on cpu.

Real workers, real brokers: the embedded default (SQLite + SQLite broker, one worker on both queues)
and PostgreSQL + Redis with two ``gpu`` workers and one ``cpu`` worker, one gpu worker SIGKILLed
mid-shard (after its shard wrote its first chunk). Every case of the scored splits gets exactly one
prediction; the job rows say where each part ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from test_train_jobs import TINY, _job_id

from conftest import REDIS_URL, WorkerProcess, flush_redis_db, run_cli
from workbench.config import load_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import engine_from_settings, session_scope
from workbench.db.models import Case, Job, Prediction, QueueItem, Round
from workbench.db.schema import upgrade
from workbench.jobs import store

SCORED_SPLITS = ("pool", "val", "test")


def _import(engine: Engine, root: Path, n: int) -> int:
    data = generate_dataset(
        root, n=n, positive_rate=0.3, seed=11, size=(48, 48), unlabelled_fraction=0.5, difficulty="easy"
    )
    import_source(engine, data.manifest)
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count()).select_from(Case).where(Case.split.in_(SCORED_SPLITS))))


def _submit_round(env: dict[str, str]) -> int:
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
        env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return _job_id(res.stdout)


def _watch(
    engine: Engine,
    job_id: int,
    until: Callable[[store.JobView], bool],
    timeout: float,
    logs: Callable[[], str],
) -> tuple[store.JobView, set[str]]:
    """Poll the round until ``until``; also the worker identities seen running its inference shards."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(engine) as s:
            seen.update(
                w
                for w in s.scalars(
                    select(Job.worker).where(
                        Job.parent_id == job_id, Job.kind == "infer", Job.status == "running"
                    )
                )
                if w
            )
        job = store.get_job(engine, job_id)
        if until(job):
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"round job {job_id}: {store.get_job(engine, job_id)}\n{logs()[-4000:]}")


def _shards(engine: Engine, round_job: int) -> list[Job]:
    with session_scope(engine) as s:
        rows = list(
            s.scalars(select(Job).where(Job.parent_id == round_job, Job.kind == "infer").order_by(Job.id))
        )
        s.expunge_all()
        return rows


def _predictions_per_case(engine: Engine, version: int) -> dict[int, int]:
    with session_scope(engine) as s:
        return dict(
            s.execute(
                select(Prediction.case_id, func.count())
                .where(Prediction.model_version_id == version)
                .group_by(Prediction.case_id)
            ).all()
        )


def _scored_cases(engine: Engine) -> set[int]:
    with session_scope(engine) as s:
        return set(s.scalars(select(Case.id).where(Case.split.in_(SCORED_SPLITS))))


def test_round_shards_on_the_embedded_default_with_one_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite + SQLite broker, one worker on both queues: the round's inference runs as several
    shards, one after another, then calibration and queue; one prediction per case."""
    env = {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_INFER_SHARD_SIZE": "25"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    engine = engine_from_settings(load_settings())
    upgrade(engine)
    n_scored = _import(engine, tmp_path / "data", 70)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        job_id = _submit_round(env)
        job, _ = _watch(engine, job_id, lambda j: j.done, 1200, worker.log)
    finally:
        worker.stop()
    assert job.status == "succeeded", job.error
    shards = _shards(engine, job_id)
    assert len(shards) == -(-n_scored // 25) and all(sh.status == "succeeded" for sh in shards)
    ranges = [tuple(sh.params["case_range"]) for sh in shards]
    assert all(a <= b for a, b in ranges) and all(
        b < c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False)
    )
    with session_scope(engine) as s:
        steps = s.execute(select(Job.kind).where(Job.parent_id == job_id).order_by(Job.id)).scalars().all()
        rnd = s.scalar(select(Round).where(Round.job_id == job_id))
        items = s.scalar(select(func.count()).select_from(QueueItem).where(QueueItem.round_id == rnd.id))
    assert steps == ["train", *["infer"] * len(shards), "calibrate", "queue"]
    counts = _predictions_per_case(engine, rnd.model_version_id)
    assert set(counts) == _scored_cases(engine) and set(counts.values()) == {1}
    assert rnd.status == "labelling" and items == 6 and rnd.report["inference_shards"] == len(shards)
    engine.dispose()


def test_cancel_reaches_every_shard_of_a_waiting_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling a round whose shards are out: queued shards are cancelled at once, the running one
    stops at its next chunk, the round ends cancelled with its round row failed; nothing is queued."""
    env = {
        "WORKBENCH_HOME": str(tmp_path / "home"),
        "WORKBENCH_INFER_SHARD_SIZE": "6",
        "WORKBENCH_INFER_CHUNK_SIZE": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    engine = engine_from_settings(load_settings())
    upgrade(engine)
    _import(engine, tmp_path / "data", 70)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        job_id = _submit_round(env)
        _watch(engine, job_id, lambda j: j.status == "waiting" or j.done, 600, worker.log)
        assert run_cli("jobs", "cancel", str(job_id), env=env).returncode == 0
        job, _ = _watch(engine, job_id, lambda j: j.done, 300, worker.log)
    finally:
        worker.stop()
    assert job.status == "cancelled", (job, worker.log()[-3000:])
    shards = _shards(engine, job_id)
    assert len(shards) > 2 and all(sh.status in ("cancelled", "succeeded") for sh in shards)
    assert any(sh.status == "cancelled" for sh in shards)
    with session_scope(engine) as s:
        kinds = set(s.scalars(select(Job.kind).where(Job.parent_id == job_id)))
        rnd = s.scalar(select(Round).where(Round.job_id == job_id))
        items = s.scalar(select(func.count()).select_from(QueueItem).where(QueueItem.round_id == rnd.id))
    assert "calibrate" not in kinds and "queue" not in kinds
    assert rnd.status == "failed" and items == 0
    engine.dispose()


@pytest.mark.timeout(1800)  # four processes start TensorFlow one after another on two cores
def test_round_over_two_gpu_workers_one_killed_mid_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    """PostgreSQL + Redis, two gpu workers and one cpu worker. One gpu worker is SIGKILLed (its main
    process and its task process) right after a shard wrote its first chunk: the other gpu worker's
    sweep re-sends that shard, which resumes after the written chunk; every case gets exactly one
    prediction, and calibration and queue ran on the cpu worker."""
    flush_redis_db(REDIS_URL)
    env = {
        "WORKBENCH_HOME": str(tmp_path / "home"),
        "WORKBENCH_DATABASE_URL": pg_url,
        "WORKBENCH_BROKER_URL": REDIS_URL,
        "WORKBENCH_INFER_SHARD_SIZE": "10",
        "WORKBENCH_INFER_CHUNK_SIZE": "4",
        "WORKBENCH_HEARTBEAT_INTERVAL_S": "1",
        "WORKBENCH_HEARTBEAT_STALE_S": "4",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    engine = engine_from_settings(load_settings())
    upgrade(engine)
    n_scored = _import(engine, tmp_path / "data", 90)
    faulty = {**env, "WORKBENCH_FAULT_POINT": "shard-chunk"}
    gpu = [
        WorkerProcess(faulty, tmp_path / f"gpu{i}.log", queues="gpu", name=f"gpu{i}@local").start()
        for i in (1, 2)
    ]
    cpu = WorkerProcess(env, tmp_path / "cpu.log", queues="cpu", name="cpu1@local").start()
    workers = [*gpu, cpu]

    def logs() -> str:
        return "\n".join(w.log()[-2500:] for w in workers)

    try:
        job_id = _submit_round(env)
        job, seen = _watch(engine, job_id, lambda j: j.done, 1500, logs)
    finally:
        for w in workers:
            w.stop()
    assert job.status == "succeeded", (job.error, logs())
    # exactly one gpu worker was killed by the fault (its whole process group is gone)
    marker = Path(env["WORKBENCH_HOME"]) / "faults" / "shard-chunk.fired"
    assert marker.exists()
    assert [w.proc.returncode for w in gpu].count(-9) == 1, [w.proc.returncode for w in gpu]
    # shards ran on both gpu workers (seen in the rows while they ran), never on the cpu worker
    assert {s.split("/")[0] for s in seen} == {"gpu1@local", "gpu2@local"}, seen
    shards = _shards(engine, job_id)
    assert len(shards) == -(-n_scored // 10) and all(sh.status == "succeeded" for sh in shards)
    assert all(sh.worker.startswith(("gpu1@local/", "gpu2@local/")) for sh in shards)
    resumed = [sh for sh in shards if sh.attempts >= 2]
    assert len(resumed) == 1, [(sh.id, sh.attempts, sh.message) for sh in shards]
    # the resumed shard scored only what the killed attempt had not written (its first chunk was)
    first, last = resumed[0].params["case_range"]
    size = len([c for c in _scored_cases(engine) if first <= c <= last])
    assert resumed[0].result["scored"] <= size - 4, (resumed[0].result, size)
    with session_scope(engine) as s:
        rnd = s.scalar(select(Round).where(Round.job_id == job_id))
        round_row = s.get(Job, job_id)
        steps = dict(
            s.execute(
                select(Job.kind, Job.status).where(
                    Job.parent_id == job_id, Job.kind.in_(("calibrate", "queue"))
                )
            ).all()
        )
    counts = _predictions_per_case(engine, rnd.model_version_id)
    assert set(counts) == _scored_cases(engine) and set(counts.values()) == {1}
    # the continuation (calibration, queue) was claimed by the cpu worker
    assert round_row.worker.startswith("cpu1@local/") and steps == {
        "calibrate": "succeeded",
        "queue": "succeeded",
    }
    assert rnd.status == "labelling"
    engine.dispose()
