"""Claiming from the labelling queue under a time-limited lease, skipping, and expired leases.

Claiming is ONE conditional ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING id``: on PostgreSQL
the inner SELECT takes ``FOR UPDATE SKIP LOCKED`` so concurrent experts never block on or double-lease a
row; on SQLite the engine starts every transaction with ``BEGIN IMMEDIATE``, which serialises writers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Engine,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    or_,
    select,
    update,
)
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


#: The statements of a claim are built once (per kinds and backend) with bound parameters: building a
#: pick with its two correlated EXISTS costs more than running it at a million rows (bench_queue.py).
_LABELLER = bindparam("labeller", type_=QueueItem.lease_holder.type)
_NOW = bindparam("now", type_=QueueItem.lease_expires_at.type)
_EXPIRES = bindparam("expires", type_=QueueItem.lease_expires_at.type)
_ITEM_ID = bindparam("item_id", type_=QueueItem.id.type)
_CORE = {"synchronize_session": False}

_LOAD_CLAIMED = (
    select(
        QueueItem.id,
        QueueItem.case_id,
        Case.external_id,
        Case.pre_path,
        Case.post_path,
        QueueItem.kind,
        QueueItem.strategy,
        QueueItem.reason,
        QueueItem.score,
        QueueItem.priority,
        QueueItem.round_id,
        QueueItem.lease_holder,
        QueueItem.lease_expires_at,
    )
    .join(Case, Case.id == QueueItem.case_id)
    .where(QueueItem.id == _ITEM_ID)
)
_RENEW = (
    update(QueueItem)
    .where(QueueItem.id == _ITEM_ID)
    .values(lease_expires_at=_EXPIRES)
    .execution_options(**_CORE)
)
_RELEASE_EXPIRED = (
    update(QueueItem)
    .where(QueueItem.status == "leased", QueueItem.lease_expires_at < _NOW)
    .values(status="queued")
    .execution_options(**_CORE)
)


def _claimed(s: Session, item_id: int) -> ClaimedItem:
    row = s.connection().execute(_LOAD_CLAIMED, {"item_id": item_id}).one()
    expires = aware(row.lease_expires_at)
    assert row.lease_holder is not None and expires is not None
    return ClaimedItem(
        item_id=row.id,
        case_id=row.case_id,
        external_id=row.external_id,
        pre_path=row.pre_path,
        post_path=row.post_path,
        kind=row.kind,
        strategy=row.strategy,
        reason=row.reason,
        score=row.score,
        priority=row.priority,
        round_id=row.round_id,
        lease_holder=row.lease_holder,
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
        item_id = (
            s.connection()
            .execute(_lease_statement(kinds_t, is_sqlite(engine)), {"labeller": labeller, "expires": expires})
            .scalar()
        )
        return None if item_id is None else _claimed(s, item_id)


@lru_cache(maxsize=64)
def _held_statement(kinds: tuple[str, ...]) -> Select[Any]:
    """The id of the unexpired item ``:labeller`` holds (of ``kinds``; any kind when empty)."""
    held = select(QueueItem.id).where(
        QueueItem.status == "leased", QueueItem.lease_holder == _LABELLER, QueueItem.lease_expires_at > _NOW
    )
    if kinds:
        held = held.where(QueueItem.kind.in_(kinds))
    return held.order_by(QueueItem.priority.desc(), QueueItem.id).limit(1)


@lru_cache(maxsize=64)
def _lease_statement(kinds: tuple[str, ...], sqlite: bool) -> Update:
    """Lease the best ``queued`` item of ``kinds`` that ``:labeller`` may take, until ``:expires``."""
    cand = aliased(QueueItem, name="cand")
    pick = (
        select(cand.id)
        .where(cand.status == "queued", *offer_conditions(cand, _LABELLER), cand.kind.in_(kinds))
        .order_by(cand.priority.desc(), cand.id)
        .limit(1)
    )
    return lease_update(pick, sqlite)


def renew_held_lease(
    s: Session, labeller: str, now: datetime, expires: datetime, kinds: Iterable[str] | None = None
) -> int | None:
    """Id of the unexpired item ``labeller`` already holds (of ``kinds``, if given), its lease renewed
    to ``expires``; None when they hold none. A reloaded page gets the same item, not a second one."""
    conn = s.connection()
    held_id = conn.execute(_held_statement(tuple(kinds or ())), {"labeller": labeller, "now": now}).scalar()
    if held_id is not None:
        conn.execute(_RENEW, {"item_id": held_id, "expires": expires})
    return held_id


def offer_conditions(cand: Any, labeller: str | BindParameter[str]) -> list[ColumnElement[bool]]:
    """Conditions on ``cand`` (an alias of QueueItem) for offering it to ``labeller`` (a name or a bound
    parameter): not the item they skipped, not a case they already answered for this kind, and for
    independent reads not a case they read before."""
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


def lease_update(pick: Select[Any], sqlite: bool) -> Update:
    """``UPDATE ... WHERE id = (pick) RETURNING id`` leasing the item ``pick`` (a one-row id select) to
    ``:labeller`` until ``:expires``. PostgreSQL skips rows other claims hold locked."""
    if not sqlite:
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(QueueItem)
        .where(QueueItem.id == pick.scalar_subquery())
        .values(status="leased", lease_holder=_LABELLER, lease_expires_at=_EXPIRES)
        .returning(QueueItem.id)
        .execution_options(**_CORE)
    )


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
    return int(s.connection().execute(_RELEASE_EXPIRED, {"now": now}).rowcount or 0)


def release_expired(engine: Engine) -> int:
    """Return every expired lease to the queue; the count."""
    with session_scope(engine) as s:
        return release_expired_in(s, utcnow())
