"""Pair-check items: an expert says whether a pair flagged by :mod:`workbench.data.pair_check` is sound.

The check writes the items (``pair-check`` kind) with its verdicts; here they are answered, in the
queue (:func:`answer_pair_check`, same lease rules as a label) or outside it (:func:`resolve_pair`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from workbench.active.labelling_queue.rules import (
    check_labeller,
    lock_case,
    open_items,
    refuse_unless_leased,
    when,
)
from workbench.db.engine import session_scope
from workbench.db.models import PAIR_CHECK_KIND, Case, QueueItem, utcnow
from workbench.errors import NotFoundError, ValidationError

PAIR_DECISIONS = {True: "confirmed", False: "rejected"}


@dataclass(frozen=True)
class PairAnswer:
    """The outcome of a pair-check answer: the case's new ``pair_status`` and the items it closed."""

    case_id: int
    external_id: str
    status: str
    expert: str
    closed_items: tuple[int, ...]
    duplicate: bool = False


def _decide_pair(
    s: Session, case: Case, expert: str, sound: bool, note: str | None, now: datetime, item_id: int | None
) -> PairAnswer:
    """Set the case's pair status; close its open pair-check items (the answered one held by ``expert``)."""
    status = PAIR_DECISIONS[bool(sound)]
    extra = f": {note.strip()}" if note and note.strip() else ""
    earlier = f"; the check said: {case.pair_check_reason}" if case.pair_check_reason else ""
    case.pair_status = status
    case.pair_check_reason = f"{status} by {expert} on {when(now)}{extra}{earlier}"[:4000]
    items = s.scalars(open_items(case.id, PAIR_CHECK_KIND)).all()
    for item in items:
        if item.id == item_id or item.status == "queued":  # a lease held by someone else stays on record
            item.lease_holder = expert
        item.status, item.done_at = "done", now
    s.flush()
    return PairAnswer(case.id, case.external_id, status, expert, tuple(sorted(i.id for i in items)))


def _check_sound(sound: object) -> bool:
    if not isinstance(sound, bool):
        raise ValidationError(
            f"the answer must be True (the pair is sound) or False (reject it), got {sound!r}"
        )
    return sound


def answer_pair_check(
    engine: Engine, item_id: int, expert: str, sound: bool, note: str | None = None
) -> PairAnswer:
    """Answer a leased ``pair-check`` item: ``sound`` True confirms the pair (it goes back into training),
    False rejects it. Same lease rules as :func:`submit_label`; the same answer again is a no-op."""
    expert = check_labeller(expert)
    sound = _check_sound(sound)
    now = utcnow()
    with session_scope(engine) as s:
        case_id = s.scalar(select(QueueItem.case_id).where(QueueItem.id == item_id))
        if case_id is None:
            raise NotFoundError(f"no queue item {item_id}")
        case = lock_case(s, case_id)
        item = s.scalar(
            select(QueueItem)
            .where(QueueItem.id == item_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert item is not None
        if item.kind != PAIR_CHECK_KIND:
            raise ValidationError(
                f"queue item {item_id} is a {item.kind} item for case {case.external_id}: it takes a label "
                "(submit_label), not a pair-check answer"
            )
        if (
            item.status == "done"
            and item.lease_holder == expert
            and case.pair_status == PAIR_DECISIONS[sound]
        ):
            return PairAnswer(case.id, case.external_id, case.pair_status, expert, (item.id,), duplicate=True)
        refuse_unless_leased(item, expert, case.external_id, now)
        return _decide_pair(s, case, expert, sound, note, now, item.id)


def resolve_pair(
    engine: Engine, case_id: int, expert: str, sound: bool, note: str | None = None
) -> PairAnswer:
    """An expert's decision on a case's pair outside the queue (CLI ``workbench cases confirm-pair``):
    ``confirmed`` or ``rejected`` whatever the status was; open pair-check items of the case are closed."""
    expert = check_labeller(expert)
    sound = _check_sound(sound)
    with session_scope(engine) as s:
        case = lock_case(s, int(case_id))
        return _decide_pair(s, case, expert, sound, note, utcnow(), None)
