"""Current labels: labels are append-only, so a case's current label is its latest label row."""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from workbench.db.models import Case, Label


def latest_label_subquery():  # type: ignore[no-untyped-def]
    """Subquery (case_id, value) of each labelled case's latest label ("unsure" is NULL)."""
    last = select(Label.case_id, func.max(Label.id).label("last_id")).group_by(Label.case_id).subquery()
    return (
        select(Label.case_id.label("case_id"), Label.value.label("value"))
        .join(last, Label.id == last.c.last_id)
        .subquery()
    )


def cases_with_labels() -> Select:  # type: ignore[type-arg]
    """Select (Case, current label value or None) for every case."""
    cur = latest_label_subquery()
    return select(Case, cur.c.value).outerjoin(cur, cur.c.case_id == Case.id)


def current_labels(session: Session, case_ids: list[int]) -> dict[int, int | None]:
    """Current label value per case id (absent when never labelled)."""
    cur = latest_label_subquery()
    out: dict[int, int | None] = {}
    for i in range(0, len(case_ids), 500):
        chunk = case_ids[i : i + 500]
        out.update(session.execute(select(cur.c.case_id, cur.c.value).where(cur.c.case_id.in_(chunk))).all())
    return out
