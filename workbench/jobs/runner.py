"""Run one job to a terminal status: the single function every worker task calls.

Every way a run can end is turned into a terminal row with a sentence: success, cancel, a
workbench error, an unexpected exception (with its traceback), and the soft time limit. While the
handler runs, a background thread touches the job's heartbeat (a single Keras ``predict`` or a
feature-cache build can run for minutes without returning to Python), so only a job whose process is
really gone goes stale. The hard time limit and lost processes are ended by the worker adapter
(``TimeLimits.hard_message``, ``store.fail_running``, ``store.requeue_lost``).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.jobs import store
from workbench.jobs.context import JobCancelled, JobContext
from workbench.jobs.kinds import get_kind
from workbench.jobs.params import JobParams
from workbench.jobs.results import JobResult

log = logging.getLogger(__name__)

SLEEP_KIND = "sleep"


@dataclass(frozen=True)
class TimeLimits:
    """The soft and hard time limits a job runs under, and the setting that raises them."""

    soft_s: int
    hard_s: int
    setting: str

    def soft_message(self) -> str:
        return (
            f"stopped at the soft time limit of {self.soft_s} s (the hard limit is {self.hard_s} s); "
            f"raise {self.setting} (keeping WORKBENCH_VISIBILITY_TIMEOUT_S above it) or give the job "
            "less work (fewer epochs, fewer cases)"
        )

    def hard_message(self) -> str:
        return (
            f"killed at the hard time limit of {self.hard_s} s: it did not stop at the soft limit of "
            f"{self.soft_s} s (stuck in a native call, or the stop was swallowed); not retried, since it "
            f"would hit the limit again; raise {self.setting} or give the job less work"
        )


def time_limits(settings: Settings, kind: str | None = None) -> TimeLimits:
    """Limits of a job of ``kind`` (None: any): the task limit (soft: a minute earlier, at least 30 s),
    or for the diagnostic ``sleep`` kind WORKBENCH_SLEEP_TIME_LIMIT_S when set (soft: half of it)."""
    if kind == SLEEP_KIND and settings.sleep_time_limit_s is not None:
        hard = min(settings.sleep_time_limit_s, settings.task_time_limit_s)
        return TimeLimits(max(1, hard // 2), hard, "WORKBENCH_SLEEP_TIME_LIMIT_S")
    hard = settings.task_time_limit_s
    return TimeLimits(max(30, hard - 60), hard, "WORKBENCH_TASK_TIME_LIMIT_S")


class Heartbeat:
    """A daemon thread touching a running job's heartbeat every ``interval_s`` while its handler runs."""

    def __init__(self, engine: Engine, job_id: int, worker: str, interval_s: float) -> None:
        self.engine, self.job_id, self.worker, self.interval_s = engine, job_id, worker, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-job-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not store.touch_heartbeat(self.engine, self.job_id, self.worker):
                    log.warning("job %s is no longer owned by %s; heartbeat stops", self.job_id, self.worker)
                    return
            except Exception as exc:  # database briefly away: keep trying, the next beat may pass
                log.warning("heartbeat of job %s failed: %s", self.job_id, exc)


def run_job(
    engine: Engine,
    settings: Settings,
    job_id: int,
    worker: str,
    soft_limit_error: type[BaseException] | None = None,
) -> store.JobView | None:
    """Claim the job (compare-and-set), run its handler, record the outcome; None if not claimed.

    ``worker`` is the identity recorded in the row (unique per worker start). A duplicate delivery
    of a job that is running or finished does nothing. A handler returning a result with
    ``cancelled: True`` (or raising :class:`JobCancelled`) ends the job cancelled;
    ``soft_limit_error`` (what the task runner raises at the soft time limit) ends it failed with a
    sentence naming the limit and the setting.
    """
    job = store.claim_job(engine, job_id, worker, settings.max_task_attempts)
    if job is None:
        log.info("job %s not claimed (already taken, finished or cancelled)", job_id)
        return None
    log.warning("job %s: %s handler starts, attempt %s, worker %s", job_id, job.kind, job.attempts, worker)
    outcome: dict[str, Any]
    try:
        with Heartbeat(engine, job_id, worker, settings.heartbeat_interval_s):
            kind = get_kind(job.kind)
            ctx = JobContext(
                engine,
                settings,
                job.id,
                job.kind,
                kind.parse(job.params),
                job.requester,
                fan_in=job.parent_id,
            )
            result = kind.load()(ctx)
    except JobCancelled:
        outcome = {"status": "cancelled", "message": "cancelled on request"}
    except WorkbenchError as exc:
        outcome = {"status": "failed", "error": str(exc)}
    except Exception as exc:
        if soft_limit_error is not None and isinstance(exc, soft_limit_error):
            outcome = {"status": "failed", "error": time_limits(settings, job.kind).soft_message()}
        else:  # unexpected: keep the traceback with the job for the engineer
            log.exception("job %s failed", job_id)
            tb = traceback.format_exc(limit=8)
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}\n{tb}"}
    else:
        if result.cancelled:
            outcome = {"status": "cancelled", "result": result.to_json(), "message": "cancelled on request"}
        else:
            outcome = {"status": "succeeded", "result": result.to_json()}
    if outcome["status"] != "succeeded":
        reason = outcome.get("error") or outcome.get("message") or outcome["status"]
        store.fail_running_children(engine, job_id, f"ended with its parent job {job_id}: {reason}")
    status = outcome.pop("status")
    if not store.finish_job(engine, job_id, status, worker=worker, **outcome):
        view = store.get_job(engine, job_id)
        if view.status == "waiting" and status == "succeeded":
            log.info("job %s handed its work to other workers; it continues when they are done", job_id)
        else:
            log.warning(
                "job %s was taken from %s (re-queued as lost); its outcome is dropped", job_id, worker
            )
        return view
    return store.get_job(engine, job_id)


def run_step(
    parent: JobContext, kind: str, params: JobParams | Mapping[str, Any], lo: float, hi: float
) -> JobResult:
    """Run one step of a chained job in this process as a child job row (its own progress and result).

    The step fills [lo, hi] of the parent's progress bar and stops when the parent is cancelled;
    a failed step fails the parent with the step's error. A step interrupted by anything else (the
    soft time limit, an unexpected exception) is left running here and ended by the parent's runner
    with the parent's reason, so both say the same sentence.
    """
    parent.check_cancel()
    job_kind = get_kind(kind)
    clean = job_kind.parse(params)
    child_id = store.create_job(
        parent.engine,
        kind,
        clean.to_json(),
        requester=parent.requester,
        queue=job_kind.queue,
        parent_id=parent.job_id,
    )
    job = store.claim_job(
        parent.engine, child_id, f"step of job {parent.job_id}", parent.settings.max_task_attempts
    )
    if job is None:
        raise JobCancelled()
    ctx = JobContext(
        parent.engine,
        parent.settings,
        child_id,
        kind,
        job_kind.parse(job.params),
        job.requester,
        parent=parent.sub(lo, hi),
    )
    parent.progress(lo, f"{kind} (job {child_id})", force=True)
    try:
        result = job_kind.load()(ctx)
    except JobCancelled:
        store.finish_job(parent.engine, child_id, "cancelled", message="cancelled on request")
        raise
    except WorkbenchError as exc:
        store.finish_job(parent.engine, child_id, "failed", error=str(exc))
        raise WorkbenchError(f"{kind} step (job {child_id}) failed: {exc}") from exc
    if result.cancelled:
        store.finish_job(
            parent.engine, child_id, "cancelled", result=result.to_json(), message="cancelled on request"
        )
        raise JobCancelled()
    store.finish_job(parent.engine, child_id, "succeeded", result=result.to_json())
    return result
