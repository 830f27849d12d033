"""The labelling queue's shared rules: statuses and kinds, lease times, argument checks, locks.

Every module of the queue refuses the same bad input with the same message and takes locks in the
same order (case, then item), so these live once, here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

from workbench.db.models import OPEN_QUEUE_STATUSES, PAIR_CHECK_KIND, QUEUE_KINDS, SPLITS, Case, QueueItem
from workbench.errors import ConflictError, NotFoundError, ValidationError

OPEN_STATUSES = OPEN_QUEUE_STATUSES
# Kinds whose whole point is an independent opinion: never offered to someone who already read the case.
INDEPENDENT_KINDS = ("second_read", "adjudication")
# Splits that active learning may offer for (first) labelling; val/test stay untouched.
LABELLABLE_SPLITS = ("pool", "train")
# What claim_next offers when no kinds are asked for: items that want a label (not pair checks).
LABEL_KINDS = tuple(k for k in QUEUE_KINDS if k != PAIR_CHECK_KIND)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def expired(item: QueueItem, now: datetime) -> bool:
    expires = aware(item.lease_expires_at)
    return expires is None or expires <= now


def when(dt: datetime | None) -> str:
    stamp = aware(dt)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC") if stamp else "an unknown time"


def value_name(value: int | None) -> str:
    return {0: "Negative", 1: "Positive"}.get(value, "Unsure") if value is not None else "Unsure"


def check_labeller(labeller: str) -> str:
    if not isinstance(labeller, str) or not labeller.strip():
        raise ValidationError("labeller must be a non-empty user name")
    if len(labeller) > 128:
        raise ValidationError("labeller name is longer than 128 characters")
    return labeller


def check_kinds(kinds: Iterable[str] | None) -> tuple[str, ...] | None:
    if kinds is None:
        return None
    out = tuple(kinds)
    bad = [k for k in out if k not in QUEUE_KINDS]
    if bad or not out:
        raise ValidationError(
            f"unknown queue kind(s) {bad or '(none given)'} (one of {', '.join(QUEUE_KINDS)})"
        )
    return out


def check_value(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value not in (0, 1):
        raise ValidationError(
            f"label value must be 0 (Negative), 1 (Positive) or None (Unsure), got {value!r}"
        )
    return int(value)


def ensure_queueable(case_split: str, kind: str = "label", case_ref: str | int | None = None) -> None:
    """Refuse to queue a validation/test case for labelling: those splits are frozen at import.

    Call this wherever queue items are inserted. Kinds other than ``label`` (second reads,
    relabels, adjudication) are quality control of existing labels and are allowed on any split.
    """
    if kind not in QUEUE_KINDS:
        raise ValidationError(f"unknown queue kind {kind!r} (one of {', '.join(QUEUE_KINDS)})")
    if case_split not in SPLITS:
        raise ValidationError(f"unknown split {case_split!r} (one of {', '.join(SPLITS)})")
    if kind == "label" and case_split not in LABELLABLE_SPLITS:
        what = f"case {case_ref}" if case_ref is not None else "the case"
        raise ValidationError(
            f"{what} is in the {case_split!r} split: validation and test cases are never queued for "
            "active-learning labelling"
        )


def refuse_unless_leased(item: QueueItem, labeller: str, external_id: str, now: datetime) -> None:
    """ConflictError with a specific message unless ``labeller`` holds an unexpired lease on ``item``."""
    expires = aware(item.lease_expires_at)
    if item.status == "leased":
        if item.lease_holder != labeller:
            raise ConflictError(f"case {external_id} is leased to {item.lease_holder}, not to you")
        if expires is None or expires <= now:
            raise ConflictError(
                f"your lease on case {external_id} expired at {when(expires)}; it was returned to the queue"
            )
        return
    if item.status == "queued":
        if item.lease_holder == labeller:
            raise ConflictError(
                f"your lease on case {external_id} expired at {when(expires)}; it was returned to the queue"
            )
        raise ConflictError(f"case {external_id} is not leased to you: claim it from the queue first")
    raise ConflictError(f"the queue item for case {external_id} is already {item.status}")


_LOCK_CASE = select(Case).where(Case.id == bindparam("case_id", type_=Case.id.type)).with_for_update()


def lock_case(s: Session, case_id: int) -> Case:
    """Lock the case row (PostgreSQL) so label events on one case are serialised."""
    case = s.scalar(_LOCK_CASE, {"case_id": case_id})
    if case is None:
        raise NotFoundError(f"no case {case_id}")
    return case


def top_priority(s: Session) -> float:
    return float(s.scalar(select(func.max(QueueItem.priority))) or 0.0) + 1.0


def open_items(case_id: int, kind: str) -> Select[tuple[QueueItem]]:
    """The case's open (queued or leased) items of ``kind``, locked for update."""
    return (
        select(QueueItem)
        .where(QueueItem.case_id == case_id, QueueItem.kind == kind, QueueItem.status.in_(OPEN_STATUSES))
        .with_for_update()
    )
