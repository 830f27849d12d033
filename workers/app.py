"""The Celery app, configured from the workbench settings (JSON only, acks late, one task per child)."""

from __future__ import annotations

import socket
from functools import lru_cache

from celery import Celery
from kombu import Queue

from workbench.config import Settings, get_settings
from workbench.jobs.kinds import KINDS, QUEUES
from workbench.jobs.runner import time_limits

TASK_NAME = "workbench.run_job"


def make_app(settings: Settings) -> Celery:
    """A Celery app on the configured broker; no result backend (job rows hold results)."""
    settings.ensure_home()
    default_limits = time_limits(settings)
    app = Celery("workbench", broker=settings.broker, include=["workbench_workers.tasks"])
    transport_options: dict[str, object] = {}
    if settings.broker.startswith(("redis://", "rediss://")):
        # A task unacknowledged longer than this is delivered again: keep it above the time limit.
        transport_options["visibility_timeout"] = settings.visibility_timeout_s
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=False,  # a lost child is handled by the job row, with an attempt cap
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,  # TensorFlow keeps its memory for the life of a process
        task_time_limit=default_limits.hard_s,
        task_soft_time_limit=default_limits.soft_s,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="cpu",
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The process-wide app built from the current settings."""
    return make_app(get_settings())


def send_job(job_id: int, kind: str, queue: str) -> str:
    """The sender the library's ``submit_job`` uses: publish one message, fail fast if the broker is down."""
    return send_group([(job_id, kind, queue)])[0]


def send_group(jobs: list[tuple[int, str, str]]) -> list[str]:
    """The group sender the library's ``dispatch.fan_out`` uses (and ``send_job``, as a group of one):
    one Celery ``group`` of job tasks, each on its kind's queue with its kind's time limits (a round's
    inference shards spread over every ``gpu`` worker); fails fast if the broker is down."""
    from celery import group

    for _, kind, _ in jobs:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind}")
    app = get_app()
    host = socket.gethostname()
    signatures = []
    for job_id, kind, queue in jobs:
        limits = time_limits(get_settings(), kind)  # per message: the diagnostic kind may have its own
        signatures.append(
            app.signature(TASK_NAME, args=[job_id], immutable=True).set(
                queue=queue,
                task_id=f"job-{job_id}-{host}-{_nonce()}",
                time_limit=limits.hard_s,
                soft_time_limit=limits.soft_s,
            )
        )
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
        if len(signatures) == 1:  # a plain message: no group id in its headers
            signatures[0].apply_async(connection=conn, retry=False)
        else:
            group(signatures).apply_async(connection=conn, retry=False)
    return [sig.options["task_id"] for sig in signatures]


def _nonce() -> str:
    import uuid

    return uuid.uuid4().hex[:8]
