"""Active-learning rounds as the pages show them, and the labelled pool round by round.

Read-only: one short session per call, plain dataclasses and dicts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from workbench.db.engine import session_scope
from workbench.db.models import Case, Label, QueueItem, Round
from workbench.model.learning_check import DID_NOT_LEARN

# A round whose batch is being labelled; "labelling" is what workbench.rounds sets when the queue is built.
LABELLING_STATUSES = ("labelling", "open")


@dataclass(frozen=True)
class RoundView:
    """One active-learning round as the pages show it."""

    id: int
    number: int
    status: str
    model_version_id: int | None
    threshold: float | None
    batch_size: int | None
    report: dict[str, Any] | None
    created_at: datetime


def _round_view(r: Round) -> RoundView:
    return RoundView(
        id=r.id,
        number=r.number,
        status=r.status,
        model_version_id=r.model_version_id,
        threshold=r.threshold,
        batch_size=r.batch_size,
        report=dict(r.report) if r.report else None,
        created_at=r.created_at,
    )


def current_round(engine: Engine) -> RoundView | None:
    """The round being labelled (the latest in a labelling status, or one that did not learn but queued
    a baseline-guided batch), else the latest round; None if none."""
    with session_scope(engine) as s:
        with_batch = select(QueueItem.round_id).where(
            QueueItem.kind == "label", QueueItem.round_id.is_not(None)
        )
        r = s.scalar(
            select(Round)
            .where(
                or_(
                    Round.status.in_(LABELLING_STATUSES),
                    and_(Round.status == DID_NOT_LEARN, Round.id.in_(with_batch)),
                )
            )
            .order_by(Round.number.desc())
            .limit(1)
        )
        if r is None:
            r = s.scalar(select(Round).order_by(Round.number.desc()).limit(1))
        return None if r is None else _round_view(r)


def list_rounds(engine: Engine) -> list[RoundView]:
    """All rounds, oldest first."""
    with session_scope(engine) as s:
        return [_round_view(r) for r in s.scalars(select(Round).order_by(Round.number))]


def label_history(engine: Engine) -> list[dict[str, Any]]:
    """Labelled vs pool and class balance after each round (round 0: before any round).

    Replays the append-only label log: after round r a case's label is its latest label from the
    import or from rounds up to r; rows are ``{round, labelled, positive, negative, pool_unlabelled}``.
    """
    with session_scope(engine) as s:
        numbers = dict(s.execute(select(Round.id, Round.number)).all())
        splits = dict(s.execute(select(Case.id, Case.split)).all())
        labels = s.execute(select(Label.case_id, Label.value, Label.round_id).order_by(Label.id)).all()
    round_numbers = sorted(set(numbers.values()))
    out = []
    for r in [0, *round_numbers]:
        latest: dict[int, int | None] = {}
        for case_id, value, rid in labels:
            n = numbers.get(rid, 0) if rid is not None else 0
            if n <= r:
                latest[case_id] = value
        pos = sum(1 for v in latest.values() if v == 1)
        neg = sum(1 for v in latest.values() if v == 0)
        pool_unlabelled = sum(1 for cid, sp in splits.items() if sp == "pool" and latest.get(cid) is None)
        out.append(
            {
                "round": r,
                "labelled": pos + neg,
                "positive": pos,
                "negative": neg,
                "pool_unlabelled": pool_unlabelled,
            }
        )
    return out
