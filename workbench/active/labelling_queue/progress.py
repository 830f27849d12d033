"""How far the labelling queue has got: counts of items by status, positives found, unsure answers."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, func, select

from workbench.active.labelling_queue.rules import check_kinds
from workbench.db.engine import session_scope
from workbench.db.models import Label, QueueItem, utcnow


def queue_progress(
    engine: Engine, round_id: int | None = None, kinds: Iterable[str] | None = None
) -> dict[str, int]:
    """Counts of queue items (all, or one round's / some kinds'): total, done, queued, leased, ...

    ``total`` = queued + leased + done (cancelled items are counted apart). An "Unsure" answer closes
    its item and opens a new one, so it adds one to both ``total`` and ``done``. ``expired`` counts
    leased items whose lease has run out (they are claimable). ``positives_found`` is the number of
    distinct cases given a Positive label through these items; ``unsure`` the number of unsure answers.
    """
    kinds_t = check_kinds(kinds)
    now = utcnow()
    with session_scope(engine) as s:
        scope = []
        if round_id is not None:
            scope.append(QueueItem.round_id == round_id)
        if kinds_t:
            scope.append(QueueItem.kind.in_(kinds_t))
        counts = dict(
            s.execute(select(QueueItem.status, func.count()).where(*scope).group_by(QueueItem.status)).all()
        )
        expired = s.scalar(
            select(func.count())
            .select_from(QueueItem)
            .where(QueueItem.status == "leased", QueueItem.lease_expires_at <= now, *scope)
        )
        positives = s.scalar(
            select(func.count(func.distinct(Label.case_id)))
            .join(QueueItem, QueueItem.id == Label.queue_item_id)
            .where(Label.value == 1, *scope)
        )
        unsure = s.scalar(
            select(func.count(Label.id))
            .join(QueueItem, QueueItem.id == Label.queue_item_id)
            .where(Label.value.is_(None), *scope)
        )
    queued, leased, done = (int(counts.get(k, 0)) for k in ("queued", "leased", "done"))
    return {
        "total": queued + leased + done,
        "done": done,
        "queued": queued,
        "leased": leased,
        "expired": int(expired or 0),
        "cancelled": int(counts.get("cancelled", 0)),
        "positives_found": int(positives or 0),
        "unsure": int(unsure or 0),
    }
