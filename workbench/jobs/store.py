"""Job rows: the source of truth for every long operation (status, progress, result, cancel flag).

A job row is created before its task is sent; a worker claims it with a compare-and-set so one
job runs at most once at a time even when its message is delivered twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, or_, select, update

from workbench.actors import LOCAL_OPERATOR, Actor
from workbench.db.engine import session_scope
from workbench.db.models import JOB_STATUSES, Job, ModelVersion, utcnow
from workbench.errors import ConflictError, NotFoundError, ValidationError

TERMINAL = ("succeeded", "failed", "cancelled")
#: Not ended: a ``waiting`` job has handed its work to child jobs on other workers (a round's shards).
OPEN = ("queued", "running")
ACTIVE = (*OPEN, "waiting")
#: How long a running job may go without a heartbeat before it counts as lost, when the caller has no
#: settings at hand (the WORKBENCH_HEARTBEAT_STALE_S default).
DEFAULT_STALE = timedelta(seconds=300)


@dataclass(frozen=True)
class JobView:
    """A read-only snapshot of a job row for adapters (CLI, UI)."""

    id: int
    kind: str
    status: str
    progress: float
    message: str | None
    error: str | None
    result: dict[str, Any] | None
    params: dict[str, Any]
    requester: str
    queue: str | None
    attempts: int
    cancel_requested: bool
    parent_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            progress=job.progress,
            message=job.message,
            error=job.error,
            result=job.result,
            params=dict(job.params or {}),
            requester=job.requester,
            queue=job.queue,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            parent_id=job.parent_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            worker=job.worker,
        )


def create_job(
    engine: Engine,
    kind: str,
    params: dict[str, Any],
    *,
    requester: str,
    queue: str,
    parent_id: int | None = None,
) -> int:
    """Insert a ``queued`` job row and return its id (committed before any task is sent)."""
    with session_scope(engine) as s:
        job = Job(kind=kind, params=params, requester=requester, queue=queue, parent_id=parent_id)
        s.add(job)
        s.flush()
        return job.id


def get_job(engine: Engine, job_id: int) -> JobView:
    """The job's current row; NotFoundError when there is none."""
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        return JobView.of(job)


def list_jobs(engine: Engine, *, status: str | None = None, limit: int = 50) -> list[JobView]:
    """Most recent jobs first, optionally of one status."""
    if status is not None and status not in JOB_STATUSES:
        raise ValidationError(f"unknown job status {status!r} (one of {', '.join(JOB_STATUSES)})")
    with session_scope(engine) as s:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if status:
            q = q.where(Job.status == status)
        return [JobView.of(j) for j in s.scalars(q)]


def parent_of(engine: Engine, job_id: int) -> int | None:
    """The job's parent id; None for a top-level job or one that does not exist (a stale message)."""
    with session_scope(engine) as s:
        return s.scalar(select(Job.parent_id).where(Job.id == job_id))


def set_task_id(engine: Engine, job_id: int, task_id: str) -> None:
    """Record the broker's task id of the message that carries the job."""
    with session_scope(engine) as s:
        s.execute(update(Job).where(Job.id == job_id).values(celery_task_id=task_id))


def claim_job(engine: Engine, job_id: int, worker: str, max_attempts: int) -> JobView | None:
    """Compare-and-set ``queued -> running``; None when another delivery already has (or had) it.

    Counts the attempt; a job past ``max_attempts`` is failed instead of run again, so a job that
    always crashes its worker cannot loop forever.
    """
    now = utcnow()
    with session_scope(engine) as s:
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(
                status="running", attempts=Job.attempts + 1, worker=worker, started_at=now, heartbeat_at=now
            )
        )
        if res.rowcount != 1:
            return None
        job = s.get(Job, job_id)
        assert job is not None
        if job.cancel_requested:
            job.status, job.finished_at, job.message = "cancelled", now, "cancelled before it started"
            return None
        if job.attempts > max_attempts:
            job.status, job.finished_at = "failed", now
            job.error = f"gave up after {max_attempts} attempt(s): the worker was lost each time (killed or out of memory)"
            _end_unfinished_versions(s, [job.id], job.error)
            return None
        return JobView.of(job)


def report_progress(engine: Engine, job_id: int, fraction: float, message: str | None = None) -> bool:
    """Write progress (clamped to 0..1) and a heartbeat; returns whether cancellation was requested."""
    fraction = min(1.0, max(0.0, float(fraction)))
    with session_scope(engine) as s:
        values: dict[str, Any] = {"progress": fraction, "heartbeat_at": utcnow()}
        if message is not None:
            values["message"] = message[:2000]
        s.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(**values))
        return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def cancel_requested(engine: Engine, job_id: int) -> bool:
    """Whether someone asked this job to stop."""
    with session_scope(engine) as s:
        return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(engine: Engine, job_id: int, actor: Actor = LOCAL_OPERATOR) -> JobView:
    """Ask a job to stop: a queued job is cancelled at once; a running one stops at its next batch.

    Only an admin (or the local operator) may cancel.
    """
    from workbench.users import authorize_actor

    authorize_actor(engine, actor, "cancel")
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        if job.status in TERMINAL:
            raise ConflictError(f"job {job_id} already {job.status}")
        job.cancel_requested = True
        if job.status == "queued":
            job.status, job.finished_at, job.message = "cancelled", utcnow(), "cancelled before it started"
        running = 0
        for child in s.scalars(select(Job).where(Job.parent_id == job_id, Job.status.in_(OPEN))):
            child.cancel_requested = True
            if child.status == "queued":
                child.status, child.finished_at = "cancelled", utcnow()
            running += child.status == "running"
        if job.status == "waiting" and not running:  # nothing left to stop: its shards never started
            _end_waiting(s, job, "cancelled", "cancelled on request")
        s.flush()
        return JobView.of(job)


def finish_job(
    engine: Engine,
    job_id: int,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    message: str | None = None,
    worker: str | None = None,
) -> bool:
    """Move a running job to a terminal status with its result or error; whether it did.

    With ``worker``, only while that worker still owns the row: a run whose job was meanwhile
    re-queued as lost (its heartbeat went stale) does not overwrite the newer attempt.
    """
    if status not in TERMINAL:
        raise ValueError(f"not a terminal status: {status}")
    with session_scope(engine) as s:
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "result": result, "error": error}
        if status == "succeeded":
            values["progress"] = 1.0
        if message is not None:
            values["message"] = message
        q = update(Job).where(Job.id == job_id, Job.status == "running")
        if worker is not None:
            q = q.where(Job.worker == worker)
        return s.execute(q.values(**values)).rowcount == 1


def touch_heartbeat(engine: Engine, job_id: int, worker: str) -> bool:
    """Refresh the heartbeat of a job ``worker`` runs, and of its running steps; whether it still owns it."""
    now = utcnow()
    with session_scope(engine) as s:
        owned = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.worker == worker)
            .values(heartbeat_at=now)
        ).rowcount
        if owned:
            s.execute(
                update(Job).where(Job.parent_id == job_id, Job.status == "running").values(heartbeat_at=now)
            )
        return owned == 1


def fail_running(engine: Engine, job_id: int, error: str, *, worker: str | None = None) -> bool:
    """End a running job ``failed`` with ``error`` (and its unfinished steps and training versions).

    For a job whose process is gone without recording an outcome (killed at the hard time limit);
    with ``worker``, only if that worker owns the row. Returns whether the job was ended here.
    """
    with session_scope(engine) as s:
        q = select(Job).where(Job.id == job_id, Job.status == "running")
        if worker is not None:
            q = q.where(Job.worker == worker)
        job = s.scalars(q.with_for_update()).first()
        if job is None:
            return False
        job.status, job.error, job.finished_at = "failed", error, utcnow()
        _end_children(s, [job.id], f"ended with its parent job {job.id}: {error}")
        _end_unfinished_versions(s, [job.id], error)
        return True


def fail_queued(engine: Engine, job_id: int, error: str) -> None:
    """Mark a job that never reached a worker as failed (e.g. the broker was unreachable)."""
    with session_scope(engine) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="failed", error=error, finished_at=utcnow())
        )


def count_lost_before_claim(
    engine: Engine, job_id: int, max_attempts: int, task_id: str | None = None
) -> bool:
    """A task process died before it claimed its ``queued`` job (its message is acknowledged, so no
    broker will deliver it again): count that as an attempt; True when the job should be re-sent,
    False when it is not queued any more, was cancelled, or is failed here past the attempt cap.

    Only the job's current message counts (``task_id``, recorded at every send): when a sweep has
    already re-queued and re-sent the job, the loss of the older message changes nothing."""
    with session_scope(engine) as s:
        q = select(Job).where(Job.id == job_id, Job.status == "queued")
        if task_id is not None:
            q = q.where(or_(Job.celery_task_id.is_(None), Job.celery_task_id == task_id))
        job = s.scalar(q.with_for_update())
        if job is None:
            return False
        now = utcnow()
        if job.cancel_requested:
            job.status, job.finished_at, job.message = "cancelled", now, "cancelled before it started"
            return False
        job.attempts += 1
        if job.attempts >= max_attempts:
            job.status, job.finished_at = "failed", now
            job.error = (
                f"gave up after {job.attempts} attempt(s): the worker process was lost each time before "
                "it could start the job (killed, out of memory, or a hard time limit shorter than its start-up)"
            )
            return False
        job.message = (
            f"re-sent: the worker process was lost before it started the job (attempt {job.attempts})"
        )
        return True


def requeue_lost(
    engine: Engine,
    *,
    stale_after: timedelta | None = None,
    job_ids: list[int] | None = None,
    worker: str | None = None,
) -> list[int]:
    """Put ``running`` jobs whose process is gone back to ``queued``; returns their ids.

    Never by node name: a job is lost when its heartbeat is older than ``stale_after`` (its worker,
    whoever it was, stopped touching it), or when the worker that owns it (``worker``, the identity
    recorded at claim, unique per worker start) reports the process running ``job_ids`` dead. Top-level
    jobs and children sent as their own tasks (inference shards) are re-queued; the in-process steps of
    a chained job are ended (its next attempt redoes them).
    The caller re-sends them; the attempt cap in :func:`claim_job` fails a job that keeps dying.
    """
    if stale_after is None and not job_ids:
        raise ValueError("give a staleness age or job ids")
    with session_scope(engine) as s:
        # top-level jobs and children sent as their own tasks (a round's shards), never in-process steps
        q = select(Job).where(
            Job.status == "running", or_(Job.parent_id.is_(None), Job.celery_task_id.is_not(None))
        )
        if worker is not None:
            q = q.where(Job.worker == worker)
        if stale_after is not None:
            q = q.where(or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < utcnow() - stale_after))
        if job_ids:
            q = q.where(Job.id.in_(job_ids))
        lost = list(s.scalars(q.with_for_update()))
        for job in lost:
            why = "stopped reporting" if stale_after is not None else "was lost"
            job.status = "queued"
            job.message = f"requeued: worker {job.worker} {why} during attempt {job.attempts}"
        ids = [j.id for j in lost]
        if ids:
            _end_children(s, ids, "lost with an attempt of its parent job (the next attempt redoes it)")
        return ids


def _end_children(s: Any, parent_ids: list[int], reason: str) -> list[int]:
    """Fail the unfinished steps of ``parent_ids`` (and their training versions) in session ``s``."""
    children = list(s.scalars(select(Job).where(Job.parent_id.in_(parent_ids), Job.status.in_(OPEN))))
    for child in children:
        child.status, child.error, child.finished_at = "failed", reason, utcnow()
    ids = [c.id for c in children]
    if ids:
        _end_unfinished_versions(s, ids, reason)
    return ids


def _end_unfinished_versions(s: Any, job_ids: list[int], reason: str) -> None:
    """A job that ended without finishing its model version leaves it ``failed``, never ``training``."""
    s.execute(
        update(ModelVersion)
        .where(ModelVersion.job_id.in_(job_ids), ModelVersion.status.in_(("queued", "training")))
        .values(status="failed", error=reason[:2000], finished_at=utcnow())
    )


def fail_running_children(engine: Engine, parent_id: int, reason: str) -> list[int]:
    """Mark the unfinished steps of a chained job failed (their process died with an earlier attempt)."""
    with session_scope(engine) as s:
        return _end_children(s, [parent_id], reason)


def active_job_of_kind(
    engine: Engine, kind: str, except_id: int | None = None, *, stale_after: timedelta | None = None
) -> int | None:
    """Id of a queued, running or waiting job of ``kind`` (other than ``except_id``), if any.

    A waiting job (its shards are out) is active while it waits. A running job whose heartbeat is older than ``stale_after`` (default
    :data:`DEFAULT_STALE`) does not count: its worker is gone, so it is ended ``failed`` here with
    the reason, and an exclusive kind (a round) is never blocked for ever by a dead job.
    """
    stale_after = DEFAULT_STALE if stale_after is None else stale_after
    cutoff = utcnow() - stale_after
    with session_scope(engine) as s:
        q = select(Job).where(Job.kind == kind, Job.status.in_(ACTIVE))
        if except_id is not None:
            q = q.where(Job.id != except_id)
        for job in s.scalars(q.order_by(Job.id).with_for_update()):
            beat = job.heartbeat_at
            if job.status == "running" and beat is not None and _aware(beat) < cutoff:
                reason = (
                    f"its worker {job.worker} stopped reporting (no heartbeat for more than "
                    f"{int(stale_after.total_seconds())} s); ended so that a new {kind} job can run"
                )
                job.status, job.error, job.finished_at = "failed", reason, utcnow()
                _end_children(s, [job.id], f"ended with its parent job {job.id}: {reason}")
                _end_unfinished_versions(s, [job.id], reason)
                continue
            return job.id
        return None


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for UTC columns: make them comparable with aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _end_waiting(s: Any, job: Job, status: str, message: str) -> None:
    """End a waiting job in session ``s`` (and its round, which would otherwise stay ``running``)."""
    from workbench.db.models import Round

    job.status, job.finished_at, job.message = status, utcnow(), message
    s.execute(
        update(Round)
        .where(Round.job_id == job.id, Round.status == "running")
        .values(status="failed", closed_at=utcnow())
    )


def fan_out(
    engine: Engine,
    parent_id: int,
    children: list[tuple[str, dict[str, Any], str]],
    state: dict[str, Any],
    *,
    worker: str | None = None,
) -> list[int]:
    """Create ``children`` (kind, params, queue) as queued jobs of running ``parent_id`` and move the
    parent to ``waiting`` with ``state`` (what its continuation needs) in one transaction.

    The parent's process then lets go of it; :func:`hand_back` queues it again once every child ended.
    ConflictError when the parent is not running (cancelled or taken meanwhile).
    """
    with session_scope(engine) as s:
        q = select(Job).where(Job.id == parent_id, Job.status == "running")
        if worker is not None:
            q = q.where(Job.worker == worker)
        parent = s.scalar(q.with_for_update())
        if parent is None:
            raise ConflictError(f"job {parent_id} is not running any more; its work is not handed out")
        rows = [
            Job(kind=kind, params=params, requester=parent.requester, queue=queue, parent_id=parent_id)
            for kind, params, queue in children
        ]
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
        parent.status = "waiting"
        parent.result = {"fan_out": {**state, "children": ids}}
        parent.message = (
            f"waiting for {len(ids)} {children[0][0] if children else ''} job(s) on other workers"
        )
        return ids


def fan_out_state(engine: Engine, job_id: int) -> dict[str, Any] | None:
    """What a job stored when it handed its work out (:func:`fan_out`), or None (it never did)."""
    with session_scope(engine) as s:
        result = s.scalar(select(Job.result).where(Job.id == job_id))
    return (result or {}).get("fan_out") if isinstance(result, dict) else None


def unwait(engine: Engine, job_id: int, reason: str) -> None:
    """Undo a fan-out whose messages could not be sent: its children fail with ``reason``, the parent
    runs again (its handler then fails with the reason)."""
    with session_scope(engine) as s:
        job = s.scalar(select(Job).where(Job.id == job_id, Job.status == "waiting").with_for_update())
        if job is None:
            return
        _end_children(s, [job_id], reason)
        job.status, job.result = "running", None


def hand_back(engine: Engine, job_ids: list[int] | None = None) -> list[int]:
    """Waiting jobs (all, or ``job_ids``) whose children have all ended go back to ``queued`` on the
    queue their fan-out named, to be sent again; returns their ids.

    Called by the worker that finished a child and by every worker's sweep (a worker lost between its
    child's end and the hand-back). One caller wins: the row is locked and must still be waiting. A
    hand-back is not a new attempt. A cancelled one ends ``cancelled`` here instead.
    """
    ids: list[int] = []
    with session_scope(engine) as s:
        q = select(Job).where(Job.status == "waiting")
        if job_ids is not None:
            q = q.where(Job.id.in_(job_ids))
        for job in s.scalars(q.order_by(Job.id).with_for_update()).all():
            open_children = s.scalar(
                select(func.count()).select_from(Job).where(Job.parent_id == job.id, Job.status.in_(OPEN))
            )
            if open_children:
                continue
            if job.cancel_requested:
                _end_waiting(s, job, "cancelled", "cancelled on request")
                continue
            state = (job.result or {}).get("fan_out") or {}
            job.status, job.attempts = "queued", max(0, job.attempts - 1)
            job.queue = state.get("then_queue") or job.queue
            job.message = "every shard ended; the next step is queued"
            ids.append(job.id)
    return ids


def fan_in_progress(engine: Engine, parent_id: int) -> None:
    """Move a waiting parent's bar over its fan-out span by the mean progress of its children."""
    with session_scope(engine) as s:
        parent = s.get(Job, parent_id)
        if parent is None or parent.status != "waiting":
            return
        state = (parent.result or {}).get("fan_out") or {}
        lo, hi = state.get("span", (0.0, 1.0))
        rows = s.execute(select(Job.progress, Job.status).where(Job.parent_id == parent_id)).all()
        if not rows:
            return
        mean = sum(1.0 if st in TERMINAL else p for p, st in rows) / len(rows)
        ended = sum(st in TERMINAL for _, st in rows)
        parent.progress = min(1.0, lo + (hi - lo) * mean)
        parent.message = f"{ended}/{len(rows)} shard(s) done on other workers"
