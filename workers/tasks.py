"""The one Celery task: run a job row through the library's runner. Thin by design."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import signals
from celery.exceptions import WorkerLostError
from sqlalchemy import Engine

from workbench.config import get_settings
from workbench.db.engine import engine_from_settings
from workbench.jobs import runner, store
from workers.app import TASK_NAME, get_app, send_job

log = logging.getLogger(__name__)
app = get_app()


@lru_cache(maxsize=1)
def _engine() -> Engine:
    return engine_from_settings(get_settings())


@app.task(name=TASK_NAME, bind=True)
def run_job(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run job ``job_id`` (TensorFlow, if the job needs it, is imported inside, after the fork)."""
    view = runner.run_job(_engine(), get_settings(), int(job_id), worker=self.request.hostname or "worker")
    return view.status if view else "skipped"


def _resend(job_ids: list[int]) -> None:
    for job_id in job_ids:
        job = store.get_job(_engine(), job_id)
        try:
            send_job(job_id, job.kind, job.queue or "cpu")
        except Exception as exc:  # broker down: leave a clear failure rather than a stuck job
            store.fail_queued(_engine(), job_id, f"could not re-send after a lost worker: {exc}")


@signals.worker_ready.connect
def _recover_on_start(sender=None, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """Jobs left ``running`` by a previous life of this worker are re-sent (attempts are capped)."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    lost = store.requeue_lost(_engine(), worker=hostname)
    if lost:
        log.warning("re-sending jobs lost by a previous run of %s: %s", hostname, lost)
        _resend(lost)


@signals.task_failure.connect
def _on_worker_lost(sender=None, task_id=None, exception=None, args=None, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """A child process died mid-task (SIGKILL, out of memory): re-send the job, or fail it past the cap."""
    if not isinstance(exception, WorkerLostError) or not args:
        return
    job_id = int(args[0])
    lost = store.requeue_lost(_engine(), job_ids=[job_id])
    if lost:
        log.warning("worker process lost while running job %s; re-sending", job_id)
        _resend(lost)
