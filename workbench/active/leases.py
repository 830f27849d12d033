"""The labelling queue: experts claim items under a time-limited lease, label them, skip or undo.

Each function is one transaction (``session_scope``). Claiming is ONE conditional
``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING id``: on PostgreSQL the inner SELECT takes
``FOR UPDATE SKIP LOCKED`` so concurrent experts never block on or double-lease a row; on SQLite the
engine starts every transaction with ``BEGIN IMMEDIATE``, which serialises writers. A lease that
runs out returns its item to the queue (lazily in :func:`claim_next`, or by :func:`release_expired`);
a late submit on it is refused with a message that says so.

Rules, all enforced here rather than in the UI:

* a labeller who holds an unexpired lease gets that same item back (a page reload is harmless),
  and the lease is renewed;
* an item never goes to the labeller named in ``exclude_labeller`` (who skipped it or said
  "Unsure"), nor to one who already labelled that case for the same kind of item, nor - for
  ``second_read`` and ``adjudication`` items - to anyone who already gave the case an expert label;
* "Unsure" records a label row with value NULL, closes the item and queues a new one for the same
  case that excludes this labeller; :func:`skip` (no label row) puts the SAME row back to
  ``queued`` with ``exclude_labeller`` set and the lease cleared;
* undo never deletes: it appends a ``correction`` label (value NULL) that withdraws the labeller's
  latest label and re-opens the case, leased to them at top priority;
* ``pair-check`` items (pairs the pair sanity check flagged) ask whether the pair is sound, not for a
  label: they are claimed only when asked for by kind, refused by :func:`submit_label`, and answered
  with :func:`answer_pair_check` (or, outside the queue, :func:`resolve_pair`), which sets the case's
  ``pair_status`` to ``confirmed`` (back into training) or ``rejected``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from workbench.active.agreement import sync_adjudication
from workbench.active.strategies import Selected
from workbench.data.labels import current_labels
from workbench.db.engine import is_sqlite, session_scope
from workbench.db.models import PAIR_CHECK_KIND, QUEUE_KINDS, SPLITS, Case, Label, QueueItem, utcnow
from workbench.errors import ConflictError, NotFoundError, ValidationError

OPEN_STATUSES = ("queued", "leased")
# Kinds whose whole point is an independent opinion: never offered to someone who already read the case.
INDEPENDENT_KINDS = ("second_read", "adjudication")
# Splits that active learning may offer for (first) labelling; val/test stay untouched.
LABELLABLE_SPLITS = ("pool", "train")
# What claim_next offers when no kinds are asked for: items that want a label (not pair checks).
LABEL_KINDS = tuple(k for k in QUEUE_KINDS if k != PAIR_CHECK_KIND)
DEFAULT_LEASE_SECONDS = 600


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


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _expired(item: QueueItem, now: datetime) -> bool:
    expires = _aware(item.lease_expires_at)
    return expires is None or expires <= now


def _when(dt: datetime | None) -> str:
    aware = _aware(dt)
    return aware.strftime("%Y-%m-%d %H:%M:%S UTC") if aware else "an unknown time"


def _value_name(value: int | None) -> str:
    return {0: "Negative", 1: "Positive"}.get(value, "Unsure") if value is not None else "Unsure"


def _check_labeller(labeller: str) -> str:
    if not isinstance(labeller, str) or not labeller.strip():
        raise ValidationError("labeller must be a non-empty user name")
    if len(labeller) > 128:
        raise ValidationError("labeller name is longer than 128 characters")
    return labeller


def _check_kinds(kinds: Iterable[str] | None) -> tuple[str, ...] | None:
    if kinds is None:
        return None
    out = tuple(kinds)
    bad = [k for k in out if k not in QUEUE_KINDS]
    if bad or not out:
        raise ValidationError(
            f"unknown queue kind(s) {bad or '(none given)'} (one of {', '.join(QUEUE_KINDS)})"
        )
    return out


def _check_value(value: int | None) -> int | None:
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


def enqueue(
    engine: Engine, selected: Sequence[Selected], *, round_id: int | None = None, kind: str = "label"
) -> list[int]:
    """Queue a selected batch in its own transaction; see :func:`enqueue_in`."""
    with session_scope(engine) as s:
        return enqueue_in(s, selected, round_id=round_id, kind=kind)


def enqueue_in(
    s: Session, selected: Sequence[Selected], *, round_id: int | None = None, kind: str = "label"
) -> list[int]:
    """Queue a selected batch in the caller's transaction; returns the new item ids, in the batch's order.

    Priority follows the order given (first = highest). Guards: :func:`ensure_queueable` on every
    case; for ``label`` items a case that already has a current (non-unsure) label is refused (send
    it as ``second_read`` instead); a case that already has an open item of this kind is left as it
    is (skipped, not an error).
    """
    ids = [int(sel.case_id) for sel in selected]
    if len(set(ids)) != len(ids):
        raise ValidationError("the batch holds the same case twice")
    cases = {c.id: c for c in s.scalars(select(Case).where(Case.id.in_(ids)))}
    missing = [i for i in ids if i not in cases]
    if missing:
        raise NotFoundError(f"no case with id(s) {missing[:10]}")
    for i in ids:
        ensure_queueable(cases[i].split, kind, cases[i].external_id)
    if kind == "label":
        labelled = [cid for cid, v in current_labels(s, ids).items() if v is not None]
        if labelled:
            refs = ", ".join(cases[c].external_id for c in labelled[:5])
            raise ValidationError(
                f"{len(labelled)} case(s) already labelled ({refs}); queue them as 'second_read' instead"
            )
    open_ids = set(
        s.scalars(
            select(QueueItem.case_id).where(
                QueueItem.case_id.in_(ids), QueueItem.kind == kind, QueueItem.status.in_(OPEN_STATUSES)
            )
        )
    )
    new: list[QueueItem] = []
    for pos, sel in enumerate(selected):
        if sel.case_id in open_ids:
            continue
        item = QueueItem(
            round_id=round_id,
            case_id=int(sel.case_id),
            kind=kind,
            strategy=sel.strategy[:32],
            reason=sel.reason,
            score=float(sel.score),
            priority=float(len(selected) - pos),
        )
        s.add(item)
        new.append(item)
    s.flush()
    return [item.id for item in new]


def _claimed(s: Session, item_id: int) -> ClaimedItem:
    item, case = s.execute(
        select(QueueItem, Case)
        .join(Case, Case.id == QueueItem.case_id)
        .where(QueueItem.id == item_id)
        .execution_options(populate_existing=True)
    ).one()
    expires = _aware(item.lease_expires_at)
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
    labeller = _check_labeller(labeller)
    kinds_t = _check_kinds(kinds) or LABEL_KINDS
    if not lease_seconds > 0:
        raise ValidationError(f"lease_seconds must be > 0, got {lease_seconds}")
    now = utcnow()
    expires = now + timedelta(seconds=float(lease_seconds))
    with session_scope(engine) as s:
        held = select(QueueItem.id).where(
            QueueItem.status == "leased", QueueItem.lease_holder == labeller, QueueItem.lease_expires_at > now
        )
        if kinds_t:
            held = held.where(QueueItem.kind.in_(kinds_t))
        held_id = s.scalar(held.order_by(QueueItem.priority.desc(), QueueItem.id).limit(1))
        if held_id is not None:  # reload-safe: the same item again, lease renewed
            s.execute(
                update(QueueItem)
                .where(QueueItem.id == held_id)
                .values(lease_expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            return _claimed(s, held_id)

        # Expired leases go back to the queue first, so the pick below reads only status = 'queued'
        # through the (status, priority DESC, id) index: one short index scan at a million rows,
        # where an OR over two statuses made both databases sort the whole queue (bench_queue.py).
        _release_expired(s, now)
        cand = aliased(QueueItem, name="cand")
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
        pick = (
            select(cand.id)
            .where(
                cand.status == "queued",
                or_(cand.exclude_labeller.is_(None), cand.exclude_labeller != labeller),
                ~same_kind_done,
                ~and_(cand.kind.in_(INDEPENDENT_KINDS), read_before),
            )
            .order_by(cand.priority.desc(), cand.id)
            .limit(1)
        )
        if kinds_t:
            pick = pick.where(cand.kind.in_(kinds_t))
        if not is_sqlite(engine):
            pick = pick.with_for_update(skip_locked=True)
        item_id = s.execute(
            update(QueueItem)
            .where(QueueItem.id == pick.scalar_subquery())
            .values(status="leased", lease_holder=labeller, lease_expires_at=expires)
            .returning(QueueItem.id)
            .execution_options(synchronize_session=False)
        ).scalar()
        return None if item_id is None else _claimed(s, item_id)


def _refuse_unless_leased(item: QueueItem, labeller: str, external_id: str, now: datetime) -> None:
    """ConflictError with a specific message unless ``labeller`` holds an unexpired lease on ``item``."""
    expires = _aware(item.lease_expires_at)
    if item.status == "leased":
        if item.lease_holder != labeller:
            raise ConflictError(f"case {external_id} is leased to {item.lease_holder}, not to you")
        if expires is None or expires <= now:
            raise ConflictError(
                f"your lease on case {external_id} expired at {_when(expires)}; it was returned to the queue"
            )
        return
    if item.status == "queued":
        if item.lease_holder == labeller:
            raise ConflictError(
                f"your lease on case {external_id} expired at {_when(expires)}; it was returned to the queue"
            )
        raise ConflictError(f"case {external_id} is not leased to you: claim it from the queue first")
    raise ConflictError(f"the queue item for case {external_id} is already {item.status}")


def _lock_case(s: Session, case_id: int) -> Case:
    """Lock the case row (PostgreSQL) so label events on one case are serialised."""
    case = s.scalar(select(Case).where(Case.id == case_id).with_for_update())
    if case is None:
        raise NotFoundError(f"no case {case_id}")
    return case


def _top_priority(s: Session) -> float:
    return float(s.scalar(select(func.max(QueueItem.priority))) or 0.0) + 1.0


def _result(label: Label, item_id: int, external_id: str, **extra: object) -> LabelResult:
    created = _aware(label.created_at)
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
    labeller = _check_labeller(labeller)
    value = _check_value(value)
    now = utcnow()
    with session_scope(engine) as s:
        case_id = s.scalar(select(QueueItem.case_id).where(QueueItem.id == item_id))
        if case_id is None:
            raise NotFoundError(f"no queue item {item_id}")
        case = _lock_case(s, case_id)  # lock order everywhere: case, then item
        item = s.scalar(
            select(QueueItem)
            .where(QueueItem.id == item_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert item is not None
        existing = s.scalar(select(Label).where(Label.queue_item_id == item.id))
        if existing is not None:
            if existing.labeller != labeller:
                raise ConflictError(f"case {case.external_id} was already labelled by {existing.labeller}")
            if existing.value != value:
                raise ConflictError(
                    f"you already labelled case {case.external_id} as {_value_name(existing.value)}; "
                    "use undo to change it"
                )
            return _result(existing, item.id, case.external_id, duplicate=True)
        if item.kind == PAIR_CHECK_KIND:
            raise ValidationError(
                f"the item for case {case.external_id} is a pair check: say whether the pair is sound "
                "(answer_pair_check), it takes no label"
            )
        _refuse_unless_leased(item, labeller, case.external_id, now)

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


def skip(engine: Engine, item_id: int, labeller: str) -> None:
    """Give a leased item back for someone else: no label row; the SAME item returns to ``queued``.

    The lease is cleared and ``exclude_labeller`` set, so :func:`claim_next` will not offer it to this
    labeller again (only the latest skipper is remembered). Skipping an item one already skipped is a
    no-op; skipping someone else's item is a ConflictError. An expired lease may still be skipped.
    """
    labeller = _check_labeller(labeller)
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


def undo_last(engine: Engine, labeller: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Label | None:
    """Withdraw the labeller's latest label (expert, unsure or adjudication); None when nothing to undo.

    Appends a ``correction`` row (value NULL, note naming the withdrawn label id); history is kept.
    A label counts as undone once a later correction by the same labeller exists on its case, so
    calling undo again withdraws the one before. The case is re-opened leased to the same labeller
    at top priority (so :func:`claim_next` shows it to them next): a new item, or the open item of
    that case if it is queued (e.g. after "Unsure"). If that open item is leased to someone else,
    only the correction is written. Returns the correction row.
    """
    labeller = _check_labeller(labeller)
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
        _lock_case(s, last.case_id)
        correction = Label(
            case_id=last.case_id,
            value=None,
            labeller=labeller,
            source="correction",
            round_id=last.round_id,
            note=f"undo: withdraws label #{last.id} ({_value_name(last.value)})",
            created_at=now,
        )
        s.add(correction)
        s.flush()
        orig = s.get(QueueItem, last.queue_item_id) if last.queue_item_id is not None else None
        kind = (
            orig.kind if orig is not None else ("adjudication" if last.source == "adjudication" else "label")
        )
        expires = now + timedelta(seconds=float(lease_seconds))
        top = _top_priority(s)
        open_item = s.scalar(
            select(QueueItem)
            .where(
                QueueItem.case_id == last.case_id,
                QueueItem.kind == kind,
                QueueItem.status.in_(OPEN_STATUSES),
            )
            .with_for_update()
        )
        lease = {"status": "leased", "lease_holder": labeller, "lease_expires_at": expires, "priority": top}
        if open_item is None:
            s.add(
                QueueItem(
                    round_id=orig.round_id if orig is not None else last.round_id,
                    case_id=last.case_id,
                    kind=kind,
                    strategy="undo",
                    reason=f"re-opened by undo: {labeller} withdrew label #{last.id} ({_value_name(last.value)})",
                    score=orig.score if orig is not None else None,
                    **lease,
                )
            )
        elif open_item.status == "queued" or _expired(open_item, now):
            for key, val in lease.items():
                setattr(open_item, key, val)
            open_item.exclude_labeller = None
        if last.source == "expert":
            sync_adjudication(s, last.case_id, round_id=last.round_id)
        s.flush()
        return correction


def _release_expired(s: Session, now: datetime) -> int:
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
        return _release_expired(s, utcnow())


def queue_progress(
    engine: Engine, round_id: int | None = None, kinds: Iterable[str] | None = None
) -> dict[str, int]:
    """Counts of queue items (all, or one round's / some kinds'): total, done, queued, leased, ...

    ``total`` = queued + leased + done (cancelled items are counted apart). An "Unsure" answer closes
    its item and opens a new one, so it adds one to both ``total`` and ``done``. ``expired`` counts
    leased items whose lease has run out (they are claimable). ``positives_found`` is the number of
    distinct cases given a Positive label through these items; ``unsure`` the number of unsure answers.
    """
    kinds_t = _check_kinds(kinds)
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


# ------------------------------------------------------------------------------------------------
# Pair checks: an expert says whether a pair flagged by workbench.data.pair_check is sound

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


def enqueue_pair_checks(
    session: Session, suspects: Sequence[tuple[int, float, str]], cancel: Sequence[int] = ()
) -> int:
    """In the caller's transaction: one open ``pair-check`` item per suspect ``(case id, score, reason)``
    (a case that has one already keeps it) and the queued pair checks of the ``cancel`` cases (found
    sound when checked again) cancelled. Returns the number of items created."""
    ids = [int(c) for c, _, _ in suspects]
    open_ids: set[int] = set()
    splits: dict[int, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        open_ids.update(
            session.scalars(
                select(QueueItem.case_id).where(
                    QueueItem.case_id.in_(chunk),
                    QueueItem.kind == PAIR_CHECK_KIND,
                    QueueItem.status.in_(OPEN_STATUSES),
                )
            )
        )
        splits.update(
            {
                cid: split
                for cid, split in session.execute(select(Case.id, Case.split).where(Case.id.in_(chunk)))
            }
        )
    created = 0
    for case_id, score, reason in suspects:
        if int(case_id) in open_ids:
            continue
        ensure_queueable(splits[int(case_id)], PAIR_CHECK_KIND, case_id)
        session.add(
            QueueItem(
                case_id=int(case_id),
                kind=PAIR_CHECK_KIND,
                strategy="pair-check",
                reason=reason,
                score=float(score),
                priority=float(score),
            )
        )
        created += 1
    cancel_ids = [int(c) for c in cancel]
    for i in range(0, len(cancel_ids), 500):
        session.execute(
            update(QueueItem)
            .where(
                QueueItem.case_id.in_(cancel_ids[i : i + 500]),
                QueueItem.kind == PAIR_CHECK_KIND,
                QueueItem.status == "queued",
            )
            .values(status="cancelled", done_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return created


def _decide_pair(
    s: Session, case: Case, expert: str, sound: bool, note: str | None, now: datetime, item_id: int | None
) -> PairAnswer:
    """Set the case's pair status; close its open pair-check items (the answered one held by ``expert``)."""
    status = PAIR_DECISIONS[bool(sound)]
    extra = f": {note.strip()}" if note and note.strip() else ""
    earlier = f"; the check said: {case.pair_check_reason}" if case.pair_check_reason else ""
    case.pair_status = status
    case.pair_check_reason = f"{status} by {expert} on {_when(now)}{extra}{earlier}"[:4000]
    items = s.scalars(
        select(QueueItem)
        .where(
            QueueItem.case_id == case.id,
            QueueItem.kind == PAIR_CHECK_KIND,
            QueueItem.status.in_(OPEN_STATUSES),
        )
        .with_for_update()
    ).all()
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
    expert = _check_labeller(expert)
    sound = _check_sound(sound)
    now = utcnow()
    with session_scope(engine) as s:
        case_id = s.scalar(select(QueueItem.case_id).where(QueueItem.id == item_id))
        if case_id is None:
            raise NotFoundError(f"no queue item {item_id}")
        case = _lock_case(s, case_id)
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
        _refuse_unless_leased(item, expert, case.external_id, now)
        return _decide_pair(s, case, expert, sound, note, now, item.id)


def resolve_pair(
    engine: Engine, case_id: int, expert: str, sound: bool, note: str | None = None
) -> PairAnswer:
    """An expert's decision on a case's pair outside the queue (CLI ``workbench cases confirm-pair``):
    ``confirmed`` or ``rejected`` whatever the status was; open pair-check items of the case are closed."""
    expert = _check_labeller(expert)
    sound = _check_sound(sound)
    with session_scope(engine) as s:
        case = _lock_case(s, int(case_id))
        return _decide_pair(s, case, expert, sound, note, utcnow(), None)
