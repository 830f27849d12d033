"""Claiming from the labelling queue under a time-limited lease, skipping, and expired leases.

Claiming is ONE conditional ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING id``: on PostgreSQL
the inner SELECT takes ``FOR UPDATE SKIP LOCKED`` so concurrent experts never block on or double-lease a
row; on SQLite the engine starts every transaction with ``BEGIN IMMEDIATE``, which serialises writers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from workbench.active.labelling_queue.rules import (
    INDEPENDENT_KINDS,
    LABEL_KINDS,
    aware,
    check_kinds,
    check_labeller,
)
from workbench.db.engine import is_sqlite, session_scope
from workbench.db.models import Case, Label, QueueItem, utcnow
from workbench.defaults import DEFAULT_LEASE_SECONDS
from workbench.errors import ConflictError, NotFoundError, ValidationError


@dataclass(frozen=True)
class ClaimedItem:
    """A queue item leased to one labeller, with what the labelling page needs to show it."""

    item_id: int
    case_id: int
    external_id: str
    pre_path: str
    post_path: str
    kind: str
    strategy: str
    reason: str | None
    score: float | None
    priority: float
    round_id: int | None
    lease_holder: str
    lease_expires_at: datetime


def _claimed(s: Session, item_id: int) -> ClaimedItem:
    item, case = s.execute(
        select(QueueItem, Case)
        .join(Case, Case.id == QueueItem.case_id)
        .where(QueueItem.id == item_id)
        .execution_options(populate_existing=True)
    ).one()
    expires = aware(item.lease_expires_at)
    assert item.lease_holder is not None and expires is not None
    return ClaimedItem(
        item_id=item.id,
        case_id=case.id,
        external_id=case.external_id,
        pre_path=case.pre_path,
        post_path=case.post_path,
        kind=item.kind,
        strategy=item.strategy,
        reason=item.reason,
        score=item.score,
        priority=item.priority,
        round_id=item.round_id,
        lease_holder=item.lease_holder,
        lease_expires_at=expires,
    )


def claim_next(
    engine: Engine,
    labeller: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    kinds: Iterable[str] | None = None,
) -> ClaimedItem | None:
    """Lease the highest-priority item this labeller may take (or the one they already hold); None if none.

    ``kinds`` None means every kind that asks for a label (``LABEL_KINDS``); ``pair-check`` items are
    claimed only when asked for by kind.
    """
    labeller = check_labeller(labeller)
    kinds_t = check_kinds(kinds) or LABEL_KINDS
    if not lease_seconds > 0:
        raise ValidationError(f"lease_seconds must be > 0, got {lease_seconds}")
    now = utcnow()
    expires = now + timedelta(seconds=float(lease_seconds))
    with session_scope(engine) as s:
        held_id = renew_held_lease(s, labeller, now, expires, kinds_t)
        if held_id is not None:  # reload-safe: the same item again, lease renewed
            return _claimed(s, held_id)

        # Expired leases go back to the queue first, so the pick below reads only status = 'queued'
        # through the (status, priority DESC, id) index: one short index scan at a million rows,
        # where an OR over two statuses made both databases sort the whole queue (bench_queue.py).
        release_expired_in(s, now)
        cand = aliased(QueueItem, name="cand")
        pick = (
            select(cand.id)
            .where(cand.status == "queued", *offer_conditions(cand, labeller))
            .order_by(cand.priority.desc(), cand.id)
            .limit(1)
        )
        if kinds_t:
            pick = pick.where(cand.kind.in_(kinds_t))
        item_id = lease_pick(s, engine, pick, labeller, expires)
        return None if item_id is None else _claimed(s, item_id)


def renew_held_lease(
    s: Session, labeller: str, now: datetime, expires: datetime, kinds: Iterable[str] | None = None
) -> int | None:
    """Id of the unexpired item ``labeller`` already holds (of ``kinds``, if given), its lease renewed
    to ``expires``; None when they hold none. A reloaded page gets the same item, not a second one."""
    held = select(QueueItem.id).where(
        QueueItem.status == "leased", QueueItem.lease_holder == labeller, QueueItem.lease_expires_at > now
    )
    if kinds:
        held = held.where(QueueItem.kind.in_(kinds))
    held_id = s.scalar(held.order_by(QueueItem.priority.desc(), QueueItem.id).limit(1))
    if held_id is not None:
        s.execute(
            update(QueueItem)
            .where(QueueItem.id == held_id)
            .values(lease_expires_at=expires)
            .execution_options(synchronize_session=False)
        )
    return held_id


def offer_conditions(cand: Any, labeller: str) -> list[ColumnElement[bool]]:
    """Conditions on ``cand`` (an alias of QueueItem) for offering it to ``labeller``: not the item they
    skipped, not a case they already answered for this kind, and for independent reads not a case they
    read before."""
    seen_item = aliased(QueueItem, name="seen_item")
    same_kind_done = (
        exists()
        .where(
            Label.case_id == cand.case_id,
            Label.labeller == labeller,
            Label.queue_item_id == seen_item.id,
            seen_item.kind == cand.kind,
        )
        .correlate(cand)
    )
    read_before = (
        exists()
        .where(Label.case_id == cand.case_id, Label.labeller == labeller, Label.source == "expert")
        .correlate(cand)
    )
    return [
        or_(cand.exclude_labeller.is_(None), cand.exclude_labeller != labeller),
        ~same_kind_done,
        ~and_(cand.kind.in_(INDEPENDENT_KINDS), read_before),
    ]


def lease_pick(s: Session, engine: Engine, pick: Select[Any], labeller: str, expires: datetime) -> int | None:
    """Lease the item ``pick`` (a one-row id select) selects to ``labeller`` in one UPDATE ... RETURNING;
    its id, or None when it selects nothing. PostgreSQL skips rows other claims hold locked."""
    if not is_sqlite(engine):
        pick = pick.with_for_update(skip_locked=True)
    return s.execute(
        update(QueueItem)
        .where(QueueItem.id == pick.scalar_subquery())
        .values(status="leased", lease_holder=labeller, lease_expires_at=expires)
        .returning(QueueItem.id)
        .execution_options(synchronize_session=False)
    ).scalar()


def skip(engine: Engine, item_id: int, labeller: str) -> None:
    """Give a leased item back for someone else: no label row; the SAME item returns to ``queued``.

    The lease is cleared and ``exclude_labeller`` set, so :func:`claim_next` will not offer it to this
    labeller again (only the latest skipper is remembered). Skipping an item one already skipped is a
    no-op; skipping someone else's item is a ConflictError. An expired lease may still be skipped.
    """
    labeller = check_labeller(labeller)
    with session_scope(engine) as s:
        row = s.execute(
            select(QueueItem, Case.external_id)
            .join(Case, Case.id == QueueItem.case_id)
            .where(QueueItem.id == item_id)
            .with_for_update(of=QueueItem)
        ).first()
        if row is None:
            raise NotFoundError(f"no queue item {item_id}")
        item, external_id = row
        if item.status == "queued" and item.exclude_labeller == labeller:
            return
        if item.status != "leased" or item.lease_holder != labeller:
            holder = f"leased to {item.lease_holder}" if item.status == "leased" else item.status
            raise ConflictError(f"cannot skip case {external_id}: it is {holder}, not leased to you")
        item.status = "queued"
        item.lease_holder = None
        item.lease_expires_at = None
        item.exclude_labeller = labeller


def release_expired_in(s: Session, now: datetime) -> int:
    """Expired leases back to ``queued`` (holder and expiry stay for the late-submit message)."""
    res = s.execute(
        update(QueueItem)
        .where(QueueItem.status == "leased", QueueItem.lease_expires_at < now)
        .values(status="queued")
        .execution_options(synchronize_session=False)
    )
    return int(res.rowcount or 0)


def release_expired(engine: Engine) -> int:
    """Return every expired lease to the queue; the count."""
    with session_scope(engine) as s:
        return release_expired_in(s, utcnow())
