"""Putting cases on the labelling queue: a selected batch, in the caller's transaction or its own.

Why apart: the round's queue step and tests insert batches; the guards (frozen splits, already
labelled cases, one open item per case and kind) apply to every insertion.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from workbench.active.labelling_queue.rules import OPEN_STATUSES, ensure_queueable
from workbench.active.strategies import Selected
from workbench.data.labels import current_labels
from workbench.db.engine import session_scope
from workbench.db.models import Case, QueueItem
from workbench.errors import NotFoundError, ValidationError


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
