"""What a running job's handler gets: its validated parameters, progress reporting and a cancel check.

``JobContext[P]`` is generic in the kind's parameter model, so a handler is typed
``(ctx: JobContext[TrainParams]) -> TrainResult`` and reads ``ctx.params.epochs``, not a dict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Engine

from workbench.actors import Actor, actor_from_record
from workbench.config import Settings
from workbench.jobs import store
from workbench.jobs.params import JobParams

P = TypeVar("P", bound=JobParams)


class JobCancelled(Exception):
    """Raised inside a handler when its job was asked to stop."""


@dataclass
class JobContext(Generic[P]):
    """Progress and cancel plumbing for one running job; database writes are throttled."""

    engine: Engine
    settings: Settings
    job_id: int
    kind: str
    params: P  # the kind's validated parameters
    requester: str  # as recorded in the job row (see ``actor``)
    min_interval_s: float = 0.5
    span: tuple[float, float] = (0.0, 1.0)  # the share of the job's progress bar this context fills
    parent: JobContext | None = None  # a chained job's step also moves its parent's bar and obeys its cancel
    fan_in: int | None = None  # a child sent as its own task (a shard): its waiting parent's bar follows
    _last_write: float = field(default=0.0, repr=False)
    _last_check: float = field(default=0.0, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def actor(self) -> Actor:
        """Who asked for this job, for a handler that re-checks permissions: the job row's requester,
        with the operator's record (``operator:cli``) turned back into the local operator."""
        return actor_from_record(self.requester)

    def progress(self, fraction: float, message: str | None = None, force: bool = False) -> None:
        """Report progress in 0..1 of this context's span (written at most every ``min_interval_s``)."""
        now = time.monotonic()
        if not force and fraction < 1.0 and now - self._last_write < self.min_interval_s:
            return
        lo, hi = self.span
        overall = lo + (hi - lo) * min(1.0, max(0.0, fraction))
        self._cancelled = store.report_progress(self.engine, self.job_id, overall, message) or self._cancelled
        self._last_write = self._last_check = now
        if self.parent is not None:
            self.parent.progress(fraction, message, force=True)
        if self.fan_in is not None:
            store.fan_in_progress(self.engine, self.fan_in)

    def should_cancel(self) -> bool:
        """Whether the job was asked to stop (reads the job row at most every ``min_interval_s / 2``)."""
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= self.min_interval_s / 2:
            self._cancelled = store.cancel_requested(self.engine, self.job_id)
            self._last_check = now
        if not self._cancelled and self.parent is not None:
            self._cancelled = self.parent.should_cancel()
        return self._cancelled

    def check_cancel(self) -> None:
        """Raise :class:`JobCancelled` when the job was asked to stop."""
        if self.should_cancel():
            raise JobCancelled()

    def sub(self, lo: float, hi: float) -> JobContext[P]:
        """A context that maps 0..1 onto [lo, hi] of this one's span (for the steps of a round)."""
        a, b = self.span
        return JobContext(
            self.engine,
            self.settings,
            self.job_id,
            self.kind,
            self.params,
            self.requester,
            self.min_interval_s,
            (a + (b - a) * lo, a + (b - a) * hi),
            self.parent,
            self.fan_in,
        )
