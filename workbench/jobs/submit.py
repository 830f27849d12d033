"""Submit a job: validate, write the row, then hand it to the broker through an adapter's sender."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from workbench.actors import Actor
from workbench.errors import ConflictError, WorkbenchError
from workbench.jobs import store
from workbench.jobs.kinds import get_kind
from workbench.jobs.params import JobParams
from workbench.users import authorize_actor

# (job id, kind, queue) -> broker task id; provided by the Celery adapter in ``workers``.
Sender = Callable[[int, str, str], str]


class BrokerUnavailable(WorkbenchError):
    """The broker could not take the job; its row was marked failed with the reason."""


def submit_job(
    engine: Engine,
    kind: str,
    params: JobParams | Mapping[str, Any],
    *,
    requester: Actor,
    send: Sender,
    parent_id: int | None = None,
    stale_after: timedelta | None = None,
) -> int:
    """Create the job row (status ``queued``) and send it; returns the job id.

    The requester (a user name, or the local operator) must be allowed to run ``kind``
    (``users.PERMISSIONS``: labellers may not train, calibrate, sleep, ...). ``params`` is the kind's
    parameter model (what the CLI and the UI build), or a mapping validated into it; the row stores its
    JSON. The job row records the requester as text (the operator as ``operator:<origin>``, which the
    job context turns back into the operator).
    An exclusive kind refuses (ConflictError) while another such job is queued, running or waiting,
    unless that one's heartbeat is older than ``stale_after`` (``WORKBENCH_HEARTBEAT_STALE_S``): then
    it is ended as lost. The refusal is atomic: two concurrent submits cannot both insert (a partial
    unique index, migration 0009), so the one that loses the race gets the same ConflictError.
    When sending fails the row is marked ``failed`` with the reason, so no orphan ``queued`` job is
    left behind, and :class:`BrokerUnavailable` says what happened.
    """
    job_kind = get_kind(kind)
    authorize_actor(engine, requester, kind)
    clean = job_kind.parse(params).to_json()
    if job_kind.exclusive:
        # Ends a stale one (its heartbeat is too old) so that it no longer holds the unique index.
        active = store.active_job_of_kind(engine, kind, stale_after=stale_after)
        if active is not None:
            raise _busy(kind, active)
    try:
        job_id = store.create_job(
            engine, kind, clean, requester=str(requester), queue=job_kind.queue, parent_id=parent_id
        )
    except IntegrityError:
        # A concurrent submit inserted its job between the check above and this insert: the partial
        # unique index over active exclusive jobs (uq_jobs_one_active_round) refused this one.
        if not job_kind.exclusive:
            raise
        raise _busy(kind, store.active_job_of_kind(engine, kind, stale_after=stale_after)) from None
    try:
        task_id = send(job_id, kind, job_kind.queue)
    except Exception as exc:
        reason = f"broker unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        store.fail_queued(engine, job_id, reason)
        raise BrokerUnavailable(
            f"cannot submit the {kind} job: {reason} (job {job_id} marked failed)"
        ) from None
    store.set_task_id(engine, job_id, task_id)
    return job_id


def _busy(kind: str, active: int | None) -> ConflictError:
    """The refusal of a second exclusive job while ``active`` is queued, running or waiting (its id
    may be unknown when the winner of a race has already ended again)."""
    which = f" ({active})" if active is not None else ""
    return ConflictError(f"a {kind} job{which} is already queued or running; wait for it or cancel it")
