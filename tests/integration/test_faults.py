"""Fault injection on real processes: workers killed at every step of a round and during export, the
hard time limit, on the embedded SQLite database + SQLite broker and on PostgreSQL + Redis.

Each test checks the same things after its faults: every job ended (or completed after recovery), no
label lost or duplicated, no ``ready`` version without a verified artifact, and work resumed. The
PostgreSQL and Redis here are servers of this module's own (``fault_helpers``), so they can be
stopped without disturbing other test sessions. Measured rows go to ``$FAULTS_REPORT`` when set
(docs/reliability.md's table).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from conftest import WorkerProcess, run_cli
from fault_helpers import (
    LabelSession,
    PostgresServer,
    RedisServer,
    invariants,
    job_running,
    jobs_locked,
    kill_at,
    read_engine,
    record,
    resume,
    step_running,
    wait_job,
    wait_until,
)
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Job, ModelVersion, QueueItem, Round
from workbench.db.schema import upgrade
from workbench.jobs import store
from workbench.users import add_user

TINY = json.dumps(
    {
        "model": {"input_size": [32, 32], "token_dim": 8, "heads": 2, "key_dim": 4, "cnn_width": 4},
        "train": {"phase1_batch": 8, "augment": False, "learning_check": "warn"},
    }
)
ADMIN = "fault-admin"  # the admin every stack here has (imports and library submits act as them)
# Recovery settings of every stack here: a heartbeat each second, lost after 8 s of silence, and
# enough attempts for one job to survive every kill of a test.
FAST_RECOVERY = {
    "WORKBENCH_HEARTBEAT_INTERVAL_S": "1",
    "WORKBENCH_HEARTBEAT_STALE_S": "8",
    "WORKBENCH_MAX_TASK_ATTEMPTS": "12",
}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresServer, RedisServer]]:
    """This module's own PostgreSQL and Redis servers (started once, removed at the end)."""
    pg, redis_server = PostgresServer(), RedisServer()
    pg.start()
    redis_server.start()
    yield pg, redis_server
    pg.destroy()
    redis_server.destroy()


@dataclass
class FaultStack:
    """A workbench home, its database and a worker, on one backend, with the faults to inject."""

    backend: str
    env: dict[str, str]
    engine: Engine
    reader: Engine  # watches the database without taking locks
    worker: WorkerProcess
    pg: PostgresServer | None = None
    redis: RedisServer | None = None

    def kill_child(self) -> None:
        """SIGKILL the worker's pool process (the task's process), as the OOM killer would."""
        children = self.worker.children()
        assert children, "the worker has no child process to kill"
        for pid in children:
            os.kill(pid, signal.SIGKILL)

    def kill_worker(self) -> None:
        """SIGKILL the whole worker (parent and children): nothing gets to clean up."""
        self.worker.kill()

    def log(self) -> str:
        return self.worker.log()


@pytest.fixture(params=["sqlite", "postgres-redis"])
def make_stack(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FaultStack]]:
    """A factory of a :class:`FaultStack` on the parametrised backend (extra settings as keyword env)."""
    made: list[FaultStack] = []

    def make(worker: bool = True, **extra: str) -> FaultStack:
        env = {"WORKBENCH_HOME": str(tmp_path / "home"), **FAST_RECOVERY, **extra}
        pg = redis_server = None
        if request.param == "postgres-redis":
            pg, redis_server = request.getfixturevalue("servers")
            env["WORKBENCH_DATABASE_URL"] = pg.create_database(f"faults_{uuid.uuid4().hex[:10]}")
            env["WORKBENCH_BROKER_URL"] = redis_server.url
            import redis

            redis.Redis.from_url(redis_server.url).flushdb()
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from workbench.config import load_settings

        engine = create_db_engine(load_settings().db_url)
        upgrade(engine)
        add_user(engine, ADMIN, None, "admin")
        process = WorkerProcess(env, tmp_path / "worker.log", name=f"faults-{request.param}@local")
        if worker:
            process.start()
        stack = FaultStack(request.param, env, engine, read_engine(engine), process, pg, redis_server)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.worker.stop()
        stack.reader.dispose()
        stack.engine.dispose()


def _job_id(stdout: str) -> int:
    return int(next(ln for ln in stdout.splitlines() if ln.startswith("submitted")).split()[-1])


def _submit(stack: FaultStack, *args: str) -> int:
    res = run_cli("submit", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    return _job_id(res.stdout)


def _submit_as_admin(stack: FaultStack, kind: str, params: dict[str, object]) -> int:
    """Submit through the library (for kinds the CLI submits only in-process) as an admin user."""
    from workbench.jobs.submit import submit_job
    from workbench_workers.app import get_app, send_job

    get_app.cache_clear()  # this test's broker, not an earlier test's
    return submit_job(stack.engine, kind, dict(params), requester=ADMIN, send=send_job)


def _resumed(stack: FaultStack, job_id: int, attempts: int, timeout: float = 120) -> store.JobView:
    """Wait until attempt ``attempts`` of the job is running (or the job ended)."""
    return wait_job(
        stack.engine,
        job_id,
        lambda j: j.done or (j.status == "running" and j.attempts >= attempts),
        timeout,
        stack.log,
    )


def _import_pool(stack: FaultStack, root: Path) -> None:
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset

    data = generate_dataset(
        root, n=48, positive_rate=0.3, seed=7, size=(48, 48), unlabelled_fraction=0.4, difficulty="easy"
    )
    import_source(stack.engine, data.manifest, requester=ADMIN)


def _queue_step_started(round_job: int) -> Callable[[Session], int | None]:
    """The queue step's id once its handler runs (the round's message names the step)."""
    step = step_running(round_job, "queue")

    def check(s: Session) -> int | None:
        message = s.scalar(select(Job.message).where(Job.id == round_job)) or ""
        return step(s) if message.startswith("queue (job") else None

    return check


def _after_batch_committed(stack: FaultStack, round_job: int, kill: Callable[[], None]) -> Callable[[], None]:
    """A kill that lets the (stopped) queue step commit its batch, but not finish, before it fires:
    the job rows are locked, the step resumed, and the kill waits for the round's queue items."""

    def batch_then_kill() -> None:
        with jobs_locked(stack.engine):
            resume(stack.worker.children())
            wait_until("the batch committed", lambda: _round_items(stack, round_job) > 0, timeout=60)
            kill()

    return batch_then_kill


def _round_items(stack: FaultStack, round_job: int) -> int:
    with Session(stack.reader) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(QueueItem)
                .join(Round, Round.id == QueueItem.round_id)
                .where(Round.job_id == round_job)
            )
            or 0
        )


@pytest.mark.slow
def test_worker_killed_in_every_step_of_a_round_and_during_export(
    make_stack: Callable[..., FaultStack], tmp_path: Path
) -> None:
    """SIGKILL of the child and of the whole worker during train, infer, calibrate and queue (one
    round, killed once per step), then during an export; each time a fresh worker (or child) resumes.

    Training, calibration and queue run inside the round's job: a kill there re-runs the round (from
    training, or from calibration once its inference shards are done). Inference runs as shards, each
    its own job: a kill there re-runs only that shard, and the round waits for it."""
    stack = make_stack()
    _import_pool(stack, tmp_path / "data")
    round_id = _submit(
        stack, "round", "--epochs", "2", "--batch-size", "6", "--policy", "max_f1", "--overrides", TINY
    )
    # The whole-worker kill alternates with the child kill, shifted by backend, so each step sees both
    # kinds of kill across the two backends. The last column: the round's attempt that resumes.
    kinds = ("child", "worker") if stack.backend == "sqlite" else ("worker", "child")
    plan = [
        ("train", "epoch", kinds[0], 2),
        ("infer", "", kinds[1], 2),
        ("calibrate", "", kinds[0], 3),
        ("queue", "", kinds[1], 4),
    ]
    for step, message, how, resumes in plan:
        kill = stack.kill_child if how == "child" else stack.kill_worker
        ready = step_running(round_id, step, message)
        gate = None
        if step == "queue":  # a step of a few milliseconds: watched closely once calibration runs
            gate = step_running(round_id, "calibrate")
            ready = _queue_step_started(round_id)
            if stack.backend != "sqlite":  # kill after the batch is committed, before the step is done
                kill = _after_batch_committed(stack, round_id, kill)
        killed_at, step_id = kill_at(stack.reader, ready, kill, stack.worker.children, gate=gate)
        if how == "worker":
            stack.worker.start()  # a fresh worker: the sweep re-sends the job once its heartbeat is stale
        if step == "infer":  # the shard is re-sent and resumes; the round keeps waiting for it
            shard = _resumed(stack, step_id, 2)
            recover_s = time.monotonic() - killed_at
            assert shard.attempts >= 2 and store.get_job(stack.engine, round_id).attempts == resumes
            record(f"SIGKILL {how} during {step}", stack.backend, "the shard alone resumed", recover_s)
            continue
        job = _resumed(stack, round_id, resumes)
        recover_s = time.monotonic() - killed_at
        assert job.status == "running", f"after the kill in {step}: {job}"
        killed = store.get_job(stack.engine, step_id)
        assert killed.status == "failed" and "lost" in killed.error, killed  # the killed step ended
        record(f"SIGKILL {how} during {step}", stack.backend, "re-run of the round resumed", recover_s)

    job = wait_job(stack.engine, round_id, lambda j: j.done, 600, stack.log)
    assert job.status == "succeeded", job.error
    assert job.attempts == plan[-1][3]  # handing the round back after its shards is not an attempt
    with session_scope(stack.engine) as s:
        succeeded = s.execute(
            select(Job.kind, func.count())
            .where(Job.parent_id == round_id, Job.status == "succeeded")
            .group_by(Job.kind)
        ).all()
        shards = s.execute(
            select(Job.status, Job.attempts).where(Job.parent_id == round_id, Job.kind == "infer")
        ).all()
        rnd = s.scalar(select(Round).where(Round.job_id == round_id))
        items = s.scalars(select(QueueItem).where(QueueItem.round_id == rnd.id)).all()
        version = s.get(ModelVersion, rnd.model_version_id)
    # Training ran to the end once (attempt 2); the one shard once more after its kill; calibration in
    # the attempts after its kill and after the queue's; the queue once (a step run twice in one
    # attempt, or a lost one, would show here).
    assert dict(succeeded) == {"train": 1, "infer": 1, "calibrate": 2, "queue": 1}
    assert shards == [("succeeded", 2)]
    assert len(items) == 6 and len({i.case_id for i in items}) == 6, [(i.id, i.case_id) for i in items]
    assert version.status == "ready" and rnd.status == "labelling"

    # Export of the round's version, killed once each way; the bundle appears whole, or not at all.
    out = tmp_path / "bundle"
    export_id = _submit_as_admin(stack, "export", {"model_version": version.id, "out_dir": str(out)})
    for attempt, how in enumerate(("child", "worker"), start=1):
        killed_at, _ = kill_at(
            stack.reader,
            job_running(export_id, "exporting"),
            stack.kill_child if how == "child" else stack.kill_worker,
            stack.worker.children,
        )
        assert not out.exists()  # killed before the bundle was moved into place
        if how == "worker":
            stack.worker.start()
        _resumed(stack, export_id, attempt + 1)
        record(f"SIGKILL {how} during export", stack.backend, "export re-run", time.monotonic() - killed_at)
    job = wait_job(stack.engine, export_id, lambda j: j.done, 600, stack.log)
    assert job.status == "succeeded", job.error
    assert job.attempts == 3
    from workbench.export.predict import load_bundle

    load_bundle(out)  # verifies every file against the manifest
    invariants(stack.engine).assert_clean()
    leftovers = len(list(out.parent.glob(".tmp-*")))  # killed attempts' half-written folders (reported)
    record(
        "export killed (child, then worker)",
        stack.backend,
        f"bundle whole; {leftovers} .tmp folder(s) left",
        None,
    )


# ----------------------------------------------------------------------------------------------
# A labelling session while the database goes away and comes back


def _queue_cases(stack: FaultStack, n: int) -> list[int]:
    from factories import insert_cases
    from workbench.active.labelling_queue import enqueue
    from workbench.active.strategies import Selected

    ids = insert_cases(stack.engine, n, "pool")
    enqueue(stack.engine, [Selected(cid, "uncertainty", 0.5, "fault test") for cid in ids])
    return ids


def _expert_labels(stack: FaultStack, labeller: str) -> list[tuple[str, int | None]]:
    from workbench.db.models import Case, Label

    with session_scope(stack.engine) as s:
        return sorted(
            s.execute(
                select(Case.external_id, Label.value)
                .join(Case, Case.id == Label.case_id)
                .where(Label.labeller == labeller, Label.source == "expert")
            ).all()
        )


@contextmanager
def _database_down(stack: FaultStack) -> Iterator[None]:
    """PostgreSQL: the server stopped (fast shutdown) and started again. SQLite: another process
    holds the write lock past the busy timeout (a backup, a long write), then lets go."""
    if stack.pg is not None:
        stack.pg.stop()
        try:
            yield
        finally:
            stack.pg.start()
        return
    import sqlite3

    path = str(stack.engine.url.database)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@pytest.mark.slow
def test_labelling_session_survives_the_database_going_away(make_stack: Callable[..., FaultStack]) -> None:
    """claim -> label -> the database goes away -> one clear error -> it returns -> the same case comes
    back and the session goes on; every answer recorded exactly once."""
    stack = make_stack(worker=False, WORKBENCH_SQLITE_BUSY_TIMEOUT_MS="1000")
    _queue_cases(stack, 3)
    add_user(stack.engine, "alice", None, "labeller")
    session = LabelSession("alice")
    first = session.next_case()
    session.answer("n")
    session.expect("recorded negative")
    second = session.next_case()
    with _database_down(stack):
        session.answer("p")
        rc, err = session.finish()
        restored = time.monotonic()
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: database error:"), err
    assert "Traceback" not in err
    resumed = LabelSession("alice")
    assert resumed.next_case() == second  # the lease held through the outage: the same case again
    recover_s = time.monotonic() - restored
    resumed.answer("p")
    resumed.expect("recorded positive")
    third = resumed.next_case()
    resumed.answer("q")
    assert resumed.finish()[0] == 0
    assert _expert_labels(stack, "alice") == sorted([(first, 0), (second, 1)])
    assert third not in (first, second)
    invariants(stack.engine).assert_clean()
    fault = "PostgreSQL restart" if stack.pg else "database locked past the busy timeout"
    record(
        f"{fault} during a labelling session", stack.backend, f"one error line: {lines[0][:60]}", recover_s
    )


# ----------------------------------------------------------------------------------------------
# Services restarted in the middle of a job; the hard time limit


def _sleep_job(stack: FaultStack, seconds: float, steps: int, **switches: object) -> int:
    return _submit_as_admin(stack, "sleep", {"seconds": seconds, "steps": steps, **switches})


def _executions(stack: FaultStack, trace: str) -> int:
    from workbench.config import load_settings
    from workbench.jobs.diagnostics import read_trace

    return len(read_trace(load_settings(), trace))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("make_stack", ["postgres-redis"], indirect=True)  # SQLite: no server (see above)
def test_postgres_restart_in_the_middle_of_a_job(make_stack: Callable[..., FaultStack]) -> None:
    """The database goes away under a running job: the job ends (here: completes after recovery),
    never stays running, and runs to the end once."""
    stack = make_stack()
    assert stack.pg is not None
    job_id = _sleep_job(stack, 6, 24, trace="pg")
    wait_job(stack.engine, job_id, lambda j: j.status == "running" and j.progress > 0.1, 60, stack.log)
    with _database_down(stack):
        time.sleep(2)  # several progress writes and heartbeats fail meanwhile
    restored = time.monotonic()
    job = wait_job(stack.engine, job_id, lambda j: j.done, 120, stack.log)
    recover_s = time.monotonic() - restored
    assert job.status == "succeeded", job.error
    assert _executions(stack, "pg") <= job.attempts <= 2  # one interrupted run at most, then one to the end
    after = _sleep_job(stack, 0.2, 2)
    assert wait_job(stack.engine, after, lambda j: j.done, 60, stack.log).status == "succeeded"
    invariants(stack.engine).assert_clean()
    record(
        "PostgreSQL restart during a running job",
        stack.backend,
        f"{job.status} after {job.attempts} attempt(s), {_executions(stack, 'pg')} execution(s)",
        recover_s,
    )


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("make_stack", ["postgres-redis"], indirect=True)  # the SQLite broker is a file
def test_redis_restart_in_the_middle_of_a_job_and_of_labelling(make_stack: Callable[..., FaultStack]) -> None:
    """The broker goes away: the running job finishes once, labelling goes on (it never touches the
    broker), a submit says so in one line and leaves no queued row, and jobs run again once it is back."""
    stack = make_stack()
    assert stack.redis is not None
    from workbench.active.labelling_queue import claim_next, submit_label

    cases = _queue_cases(stack, 2)
    add_user(stack.engine, "bob", None, "labeller")
    job_id = _sleep_job(stack, 4, 16, trace="redis")
    wait_job(stack.engine, job_id, lambda j: j.status == "running" and j.progress > 0.1, 60, stack.log)
    stack.redis.stop()
    try:
        item = claim_next(stack.engine, "bob")
        assert item is not None and submit_label(stack.engine, item.item_id, "bob", 1).value == 1
        res = run_cli("submit", "sleep", "--seconds", "0.1")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1 and "broker unreachable" in lines[0], res.stderr
        refused = _job_id_in(lines[0])
        job = wait_job(stack.engine, job_id, lambda j: j.done, 60, stack.log)
        assert job.status == "succeeded" and _executions(stack, "redis") == 1
    finally:
        stack.redis.start()
    restored = time.monotonic()
    assert store.get_job(stack.engine, refused).status == "failed"  # no queued row waits for ever
    after = _sleep_job(stack, 0.2, 2)
    done = wait_job(stack.engine, after, lambda j: j.done, 120, stack.log)
    recover_s = time.monotonic() - restored
    assert done.status == "succeeded"
    time.sleep(1)  # a redelivery of the first job's message, if any, would be claimed by now
    assert store.get_job(stack.engine, job_id).attempts == 1 and _executions(stack, "redis") == 1
    assert len(_expert_labels(stack, "bob")) == 1 and len(cases) == 2
    invariants(stack.engine).assert_clean()
    record(
        "Redis restart during a running job and a labelling session",
        stack.backend,
        "job finished once; labels unaffected; submit refused in one line",
        recover_s,
    )


def _job_id_in(line: str) -> int:
    import re

    match = re.search(r"job (\d+) marked failed", line)
    assert match, line
    return int(match.group(1))


@pytest.mark.slow
def test_hard_time_limit_ends_the_job_and_the_worker_goes_on(make_stack: Callable[..., FaultStack]) -> None:
    """A job that swallows the soft time limit is killed at the hard one: failed with a sentence, not
    retried (it would hit the limit again), its chained step ended too; the next job runs."""
    stack = make_stack(WORKBENCH_SLEEP_TIME_LIMIT_S="10")
    started = time.monotonic()
    plain = _sleep_job(stack, 60, 60, swallow_errors=True, trace="hard")
    chained = _sleep_job(stack, 60, 60, swallow_errors=True, as_step=True)
    for job_id in (plain, chained):
        job = wait_job(stack.engine, job_id, lambda j: j.done, 90, stack.log)
        assert job.status == "failed" and "hard time limit of 10 s" in job.error, job.error
    ended_s = time.monotonic() - started
    assert _executions(stack, "hard") == 1
    with session_scope(stack.engine) as s:
        steps = s.scalars(select(Job.status).where(Job.parent_id == chained)).all()
    assert steps == ["failed"]
    after = _sleep_job(stack, 0.2, 2)
    assert wait_job(stack.engine, after, lambda j: j.done, 60, stack.log).status == "succeeded"
    invariants(stack.engine).assert_clean()
    record(
        "hard time limit (10 s, soft limit swallowed)",
        stack.backend,
        "failed with a sentence; not retried",
        ended_s,
    )


def test_a_rounds_batch_is_queued_once(engine: Engine) -> None:
    """A queue step killed after committing its batch is run again by the round's next attempt: the
    round keeps the one batch (before: a second batch was added, twice the cases to label)."""
    from factories import insert_cases, make_cases, make_version, predict_with_temperature
    from workbench.active.building import build_queue
    from workbench.calibration.service import calibrate_version
    from workbench.config import get_settings

    cases = make_cases(engine, {"val": 120, "test": 40})
    version = make_version(engine)
    pool = insert_cases(engine, 30)
    predict_with_temperature(engine, version, cases["val"] + cases["test"] + pool, 1.0, seed=3)
    calibrate_version(engine, version, ["temperature"], "max_f1", n_boot=20)
    with session_scope(engine) as s:
        rnd = Round(number=1, status="running", batch_size=5)
        s.add(rnd)
        s.flush()
        round_id = rnd.id
    first = build_queue(engine, get_settings(), version, 5, round_id=round_id)
    again = build_queue(engine, get_settings(), version, 5, round_id=round_id)
    with session_scope(engine) as s:
        queued = s.scalar(select(func.count()).select_from(QueueItem).where(QueueItem.round_id == round_id))
    assert queued == 5
    assert first["queued"] == 5 and "already_queued" not in first
    assert (
        again.get("already_queued") and again["queued"] == 5 and again["by_strategy"] == first["by_strategy"]
    )
