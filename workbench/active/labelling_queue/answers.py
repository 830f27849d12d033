"""Answers on the labelling queue: a leased item's label (0, 1 or "Unsure") and undo.

Accepted only from the lease holder, once; an expert answer may raise an adjudication item
(:mod:`workbench.active.agreement`). Undo never deletes: it appends a ``correction`` row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, exists, select
from sqlalchemy.orm import aliased

from workbench.active.agreement import sync_adjudication
from workbench.active.labelling_queue.rules import (
    aware,
    check_labeller,
    check_value,
    expired,
    lock_case,
    open_items,
    refuse_unless_leased,
    top_priority,
    value_name,
)
from workbench.db.engine import session_scope
from workbench.db.models import PAIR_CHECK_KIND, Label, QueueItem, utcnow
from workbench.defaults import DEFAULT_LEASE_SECONDS
from workbench.errors import ConflictError, NotFoundError, ValidationError

# submit_label's lookups, built once: building a statement per call costs more than running it, and
# on SQLite that time is spent holding the write lock every other labeller waits for (bench_queue.py).
_ITEM_ID = bindparam("item_id", type_=QueueItem.id.type)
_ITEM_CASE = select(QueueItem.case_id).where(QueueItem.id == _ITEM_ID)
_LOCK_ITEM = (
    select(QueueItem)
    .where(QueueItem.id == _ITEM_ID)
    .with_for_update()
    .execution_options(populate_existing=True)
)
_ITEM_LABEL = select(Label).where(Label.queue_item_id == _ITEM_ID)


@dataclass(frozen=True)
class LabelResult:
    """The outcome of :func:`submit_label`.

    ``duplicate`` is True when the same labeller submitted the same item again (the existing label is
    returned, nothing written). ``requeued_item_id`` is the new item made for someone else after
    "Unsure"; ``adjudication_item_id`` the adjudication item raised when experts now disagree.
    """

    label_id: int
    item_id: int
    case_id: int
    external_id: str
    value: int | None
    labeller: str
    source: str
    created_at: datetime
    duplicate: bool = False
    requeued_item_id: int | None = None
    adjudication_item_id: int | None = None


def _result(label: Label, item_id: int, external_id: str, **extra: object) -> LabelResult:
    created = aware(label.created_at)
    assert created is not None
    return LabelResult(
        label_id=label.id,
        item_id=item_id,
        case_id=label.case_id,
        external_id=external_id,
        value=label.value,
        labeller=label.labeller,
        source=label.source,
        created_at=created,
        **extra,  # type: ignore[arg-type]
    )


def submit_label(
    engine: Engine, item_id: int, labeller: str, value: int | None, note: str | None = None
) -> LabelResult:
    """Record ``labeller``'s answer for a leased item: 0, 1, or None ("Unsure").

    Accepted only while the labeller holds an unexpired lease on the item (else ConflictError
    saying why). Submitting the same item and value again returns the existing label (one row,
    guaranteed by the unique ``labels.queue_item_id``). 0/1 closes the item and may raise an
    adjudication item when experts now disagree; None records an unsure row, closes the item and
    queues the case again for someone else. Answers to ``adjudication`` items are stored with
    source ``adjudication``, all others with source ``expert``.
    """
    labeller = check_labeller(labeller)
    value = check_value(value)
    now = utcnow()
    with session_scope(engine) as s:
        case_id = s.scalar(_ITEM_CASE, {"item_id": item_id})
        if case_id is None:
            raise NotFoundError(f"no queue item {item_id}")
        case = lock_case(s, case_id)  # lock order everywhere: case, then item
        item = s.scalar(_LOCK_ITEM, {"item_id": item_id})
        assert item is not None
        existing = s.scalar(_ITEM_LABEL, {"item_id": item_id})
        if existing is not None:
            if existing.labeller != labeller:
                raise ConflictError(f"case {case.external_id} was already labelled by {existing.labeller}")
            if existing.value != value:
                raise ConflictError(
                    f"you already labelled case {case.external_id} as {value_name(existing.value)}; "
                    "use undo to change it"
                )
            return _result(existing, item.id, case.external_id, duplicate=True)
        if item.kind == PAIR_CHECK_KIND:
            raise ValidationError(
                f"the item for case {case.external_id} is a pair check: say whether the pair is sound "
                "(answer_pair_check), it takes no label"
            )
        refuse_unless_leased(item, labeller, case.external_id, now)

        source = "adjudication" if item.kind == "adjudication" else "expert"
        label = Label(
            case_id=item.case_id,
            value=value,
            labeller=labeller,
            source=source,
            round_id=item.round_id,
            queue_item_id=item.id,
            note=note,
            created_at=now,
        )
        s.add(label)
        item.status, item.done_at = "done", now
        s.flush()  # the item must be closed before a new open one for the same case/kind is inserted
        requeued = None
        if value is None:
            again = QueueItem(
                round_id=item.round_id,
                case_id=item.case_id,
                kind=item.kind,
                strategy=item.strategy,
                reason=f"{item.reason or item.strategy}; returned after 'Unsure' from {labeller}",
                score=item.score,
                priority=item.priority,
                exclude_labeller=labeller,
            )
            s.add(again)
            s.flush()
            requeued = again.id
        adjudication = (
            sync_adjudication(s, item.case_id, round_id=item.round_id) if source == "expert" else None
        )
        return _result(
            label, item.id, case.external_id, requeued_item_id=requeued, adjudication_item_id=adjudication
        )


def undo_last(engine: Engine, labeller: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Label | None:
    """Withdraw the labeller's latest label (expert, unsure or adjudication); None when nothing to undo.

    Appends a ``correction`` row (value NULL, note naming the withdrawn label id); history is kept.
    A label counts as undone once a later correction by the same labeller exists on its case, so
    calling undo again withdraws the one before. The case is re-opened leased to the same labeller
    at top priority (so :func:`claim_next` shows it to them next): a new item, or the open item of
    that case if it is queued (e.g. after "Unsure"). If that open item is leased to someone else,
    only the correction is written. Returns the correction row.
    """
    labeller = check_labeller(labeller)
    now = utcnow()
    later = aliased(Label, name="later")
    undone = exists().where(
        later.case_id == Label.case_id,
        later.labeller == Label.labeller,
        later.source == "correction",
        later.id > Label.id,
    )
    with session_scope(engine) as s:
        last = s.scalar(
            select(Label)
            .where(Label.labeller == labeller, Label.source.in_(("expert", "adjudication")), ~undone)
            .order_by(Label.id.desc())
            .limit(1)
        )
        if last is None:
            return None
        lock_case(s, last.case_id)
        correction = Label(
            case_id=last.case_id,
            value=None,
            labeller=labeller,
            source="correction",
            round_id=last.round_id,
            note=f"undo: withdraws label #{last.id} ({value_name(last.value)})",
            created_at=now,
        )
        s.add(correction)
        s.flush()
        orig = s.get(QueueItem, last.queue_item_id) if last.queue_item_id is not None else None
        kind = (
            orig.kind if orig is not None else ("adjudication" if last.source == "adjudication" else "label")
        )
        expires = now + timedelta(seconds=float(lease_seconds))
        top = top_priority(s)
        open_item = s.scalar(open_items(last.case_id, kind))
        lease = {"status": "leased", "lease_holder": labeller, "lease_expires_at": expires, "priority": top}
        if open_item is None:
            s.add(
                QueueItem(
                    round_id=orig.round_id if orig is not None else last.round_id,
                    case_id=last.case_id,
                    kind=kind,
                    strategy="undo",
                    reason=f"re-opened by undo: {labeller} withdrew label #{last.id} ({value_name(last.value)})",
                    score=orig.score if orig is not None else None,
                    **lease,
                )
            )
        elif open_item.status == "queued" or expired(open_item, now):
            for key, val in lease.items():
                setattr(open_item, key, val)
            open_item.exclude_labeller = None
        if last.source == "expert":
            sync_adjudication(s, last.case_id, round_id=last.round_id)
        s.flush()
        return correction
