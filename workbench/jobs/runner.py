"""Run one job to a terminal status: the single function every worker task calls."""

from __future__ import annotations

import logging
import traceback

from sqlalchemy import Engine

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.jobs import store
from workbench.jobs.context import JobCancelled, JobContext
from workbench.jobs.kinds import get_kind

log = logging.getLogger(__name__)


def run_job(engine: Engine, settings: Settings, job_id: int, worker: str) -> store.JobView | None:
    """Claim the job (compare-and-set), run its handler, record the outcome; None if not claimed.

    A duplicate delivery of a job that is running or finished does nothing. A handler returning
    a result with ``cancelled: True`` (or raising :class:`JobCancelled`) ends the job cancelled.
    """
    job = store.claim_job(engine, job_id, worker, settings.max_task_attempts)
    if job is None:
        log.info("job %s not claimed (already taken, finished or cancelled)", job_id)
        return None
    ctx = JobContext(engine, settings, job.id, job.kind, job.params, job.requester)
    try:
        result = get_kind(job.kind).load()(ctx)
    except JobCancelled:
        store.finish_job(engine, job_id, "cancelled", message="cancelled on request")
    except WorkbenchError as exc:
        store.finish_job(engine, job_id, "failed", error=str(exc))
    except Exception as exc:  # unexpected: keep the traceback with the job for the engineer
        log.exception("job %s failed", job_id)
        tb = traceback.format_exc(limit=8)
        store.finish_job(engine, job_id, "failed", error=f"{type(exc).__name__}: {exc}\n{tb}")
    else:
        if result.get("cancelled"):
            store.finish_job(engine, job_id, "cancelled", result=result, message="cancelled on request")
        else:
            store.finish_job(engine, job_id, "succeeded", result=result)
    return store.get_job(engine, job_id)


def run_step(parent: JobContext, kind: str, params: dict, lo: float, hi: float) -> dict:
    """Run one step of a chained job in this process as a child job row (its own progress and result).

    The step fills [lo, hi] of the parent's progress bar and stops when the parent is cancelled;
    a failed step fails the parent with the step's error.
    """
    from workbench.jobs.params import validate_params

    parent.check_cancel()
    job_kind = get_kind(kind)
    clean = validate_params(job_kind.params, params)
    child_id = store.create_job(
        parent.engine, kind, clean, requester=parent.requester, queue=job_kind.queue, parent_id=parent.job_id
    )
    job = store.claim_job(
        parent.engine, child_id, f"step of job {parent.job_id}", parent.settings.max_task_attempts
    )
    if job is None:
        raise JobCancelled()
    ctx = JobContext(
        parent.engine, parent.settings, child_id, kind, job.params, job.requester, parent=parent.sub(lo, hi)
    )
    parent.progress(lo, f"{kind} (job {child_id})", force=True)
    try:
        result = job_kind.load()(ctx)
    except JobCancelled:
        store.finish_job(parent.engine, child_id, "cancelled", message="cancelled on request")
        raise
    except Exception as exc:
        store.finish_job(parent.engine, child_id, "failed", error=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, WorkbenchError):
            raise WorkbenchError(f"{kind} step (job {child_id}) failed: {exc}") from exc
        raise
    if result.get("cancelled"):
        store.finish_job(parent.engine, child_id, "cancelled", result=result, message="cancelled on request")
        raise JobCancelled()
    store.finish_job(parent.engine, child_id, "succeeded", result=result)
    return result
