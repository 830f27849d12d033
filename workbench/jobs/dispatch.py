"""Hand a job's work to other workers: child job rows sent as one group of tasks, then a hand-back.

A round's inference is split into shards, each its own job row and task on the ``gpu`` queue, so every
gpu worker takes some (the worker adapter sends them as a Celery ``group``). The parent waits
(status ``waiting``); the worker that ends the last child (or any worker's sweep) hands the parent
back (:func:`workbench.jobs.store.hand_back`), and it continues on the queue it named (calibration and
queue building on ``cpu``). The fan-in is kept in the job rows, not in a result backend: a Celery
chord counts its header tasks in the backend, and a shard whose worker was SIGKILLed is re-sent as a
new message (by the sweep) that a chord would never count.

The library never imports Celery: the adapter registers the sender. Without one (a job run in the
caller's process, a benchmark, a test) :func:`fan_out` returns None and the caller runs the work in
process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from workbench.errors import WorkbenchError
from workbench.jobs import store
from workbench.jobs.context import JobContext
from workbench.jobs.kinds import get_kind
from workbench.jobs.params import JobParams

#: [(job id, kind, queue)] -> the broker's task ids, in order; provided by the worker adapter.
GroupSender = Callable[[list[tuple[int, str, str]]], list[str]]

_group_sender: list[GroupSender] = []


def register_group_sender(sender: GroupSender | None) -> None:
    """Install (or with None, remove) the sender :func:`fan_out` uses in this process."""
    _group_sender.clear()
    if sender is not None:
        _group_sender.append(sender)


def fan_out(
    ctx: JobContext[Any],
    steps: Sequence[tuple[str, JobParams]],
    *,
    span: tuple[float, float],
    then_queue: str,
    state: dict[str, Any],
    worker: str | None = None,
) -> list[int] | None:
    """Send ``steps`` (kind, params) as child jobs of ``ctx``'s job and leave the job ``waiting``.

    ``span`` is the share of the parent's bar the children fill; ``then_queue`` the queue the parent
    continues on; ``state`` what the continuation reads back (:func:`store.fan_out_state`). Returns the
    child ids, or None when no sender is registered (run the steps in process instead). When the
    broker refuses the messages the children fail, the parent runs again and WorkbenchError says why.
    """
    if not _group_sender or not steps:
        return None
    children = []
    for kind, params in steps:
        job_kind = get_kind(kind)
        children.append((kind, job_kind.parse(params).to_json(), job_kind.queue))
    ctx.progress(span[0], f"handing {len(children)} {children[0][0]} job(s) to the workers", force=True)
    ids = store.fan_out(
        ctx.engine,
        ctx.job_id,
        children,
        {**state, "span": list(span), "then_queue": then_queue},
        worker=worker,
    )
    try:
        task_ids = _group_sender[0](
            [(i, kind, queue) for i, (kind, _, queue) in zip(ids, children, strict=True)]
        )
    except Exception as exc:
        reason = f"broker refused the {len(ids)} child job(s): {exc}"
        store.unwait(ctx.engine, ctx.job_id, reason)
        raise WorkbenchError(reason) from exc
    for job_id, task_id in zip(ids, task_ids, strict=True):
        store.set_task_id(ctx.engine, job_id, task_id)
    return ids
