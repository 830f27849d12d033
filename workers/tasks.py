"""The one Celery task: run a job row through the library's runner. Thin by design.

Each worker start gets an identity, ``<node name>/<pid>/<start id>``, recorded in the rows of the
jobs it runs; the worker parent ends the jobs its children could not: a child lost mid-task
(re-queued, attempts capped) or killed at the hard time limit (failed with a sentence), and only
jobs it owns. Every worker also sweeps for running jobs whose heartbeat went stale (a worker or
broker gone for good) and re-sends them: recovery is by heartbeat and ownership, never by name.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta
from functools import lru_cache

from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from sqlalchemy import Engine

from workbench.config import get_settings
from workbench.db.engine import engine_from_settings
from workbench.faults import crash_once
from workbench.jobs import dispatch, runner, store
from workbench_workers.app import TASK_NAME, get_app, send_group, send_job

log = logging.getLogger(__name__)
app = get_app()
_identity: dict[str, str] = {}
dispatch.register_group_sender(send_group)  # a round's inference shards go out as one Celery group


@lru_cache(maxsize=1)
def _engine() -> Engine:
    return engine_from_settings(get_settings())


def worker_identity(node: str | None = None) -> str:
    """This worker start's identity (set once in the parent, inherited by its forked children)."""
    if "id" not in _identity:
        _identity["id"] = f"{node or 'worker'}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
    return _identity["id"]


@app.task(name=TASK_NAME, bind=True)
def run_job(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run job ``job_id`` (TensorFlow, if the job needs it, is imported inside, after the fork)."""
    crash_once(get_settings(), "task-start")
    view = runner.run_job(
        _engine(),
        get_settings(),
        int(job_id),
        worker=worker_identity(self.request.hostname),
        soft_limit_error=SoftTimeLimitExceeded,
    )
    parent = view.parent_id if view else store.parent_of(_engine(), int(job_id))
    if parent is not None:  # a shard ended: the last one hands its waiting round back
        _resend(store.hand_back(_engine(), [parent]))
    return view.status if view else "skipped"


def _resend(job_ids: list[int]) -> None:
    for job_id in job_ids:
        job = store.get_job(_engine(), job_id)
        try:
            store.set_task_id(_engine(), job_id, send_job(job_id, job.kind, job.queue or "cpu"))
        except Exception as exc:  # broker down: leave a clear failure rather than a stuck job
            store.fail_queued(_engine(), job_id, f"could not re-send after a lost worker: {exc}")


def sweep_stale_jobs() -> list[int]:
    """Re-queue and re-send running jobs whose heartbeat is older than WORKBENCH_HEARTBEAT_STALE_S, and
    hand back waiting jobs whose children all ended."""
    try:
        stale = timedelta(seconds=get_settings().heartbeat_stale_s)
        lost = store.requeue_lost(_engine(), stale_after=stale)
        if lost:
            log.warning("re-sending jobs whose worker stopped reporting for %s: %s", stale, lost)
            _resend(lost)
        done = store.hand_back(_engine())  # waiting rounds whose last shard's worker died before handing back
        if done:
            log.warning("handing back jobs whose shards all ended: %s", done)
            _resend(done)
        return lost + done
    except Exception as exc:  # database or broker away: the next sweep tries again
        log.warning("stale-job sweep failed: %s", exc)
        return []


@signals.worker_init.connect
def _name_this_start(sender=None, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """Fix the identity before the pool forks, so every child records the same one."""
    worker_identity(getattr(sender, "hostname", None))


@signals.worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:  # type: ignore[no-untyped-def]
    """A forked child never shares the parent's pooled database connections."""
    if _engine.cache_info().currsize:
        _engine().dispose(close=False)


@signals.worker_ready.connect
def _recover_on_start(sender=None, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """Sweep now and then every heartbeat interval, in the worker's own timer (no extra thread)."""
    log.info("worker identity %s", worker_identity())
    sweep_stale_jobs()
    timer = getattr(sender, "timer", None)
    if timer is not None:
        timer.call_repeatedly(get_settings().heartbeat_interval_s, sweep_stale_jobs)


@signals.task_failure.connect
def _on_child_ended(sender=None, task_id=None, exception=None, args=None, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """A child died mid-task: lost (SIGKILL, out of memory) -> re-send under the attempt cap; killed
    at the hard time limit -> failed with a sentence (it would hit the limit again). Only the jobs
    this worker start owns are touched. A child that died before it claimed its job leaves the row
    ``queued`` with the message acknowledged: it is re-sent, each such loss counting as an attempt."""
    if not args or not isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
        return
    job_id = int(args[0])
    if store.count_lost_before_claim(_engine(), job_id, get_settings().max_task_attempts, task_id):
        log.warning("worker process lost before it started job %s; re-sending", job_id)
        _resend([job_id])
        return
    if isinstance(exception, TimeLimitExceeded):
        job = store.get_job(_engine(), job_id)
        message = runner.time_limits(get_settings(), job.kind).hard_message()
        if store.fail_running(_engine(), job_id, message, worker=worker_identity()):
            log.warning("job %s killed at the hard time limit; failed", job_id)
        return
    lost = store.requeue_lost(_engine(), job_ids=[job_id], worker=worker_identity())
    if lost:
        log.warning("worker process lost while running job %s; re-sending", job_id)
        _resend(lost)
