"""Reading pair-check results back: flagged pairs, counts per status, and a case looked up by id or
external id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select

from workbench.db.engine import session_scope
from workbench.db.models import PAIR_STATUSES, Case
from workbench.errors import NotFoundError, ValidationError


@dataclass(frozen=True)
class FlaggedPair:
    """A case the check or an expert flagged, with the check's score and reason."""

    case_id: int
    external_id: str
    patient_id: str
    split: str
    status: str
    score: float | None
    reason: str | None
    pre_path: str
    post_path: str


def _check_statuses(statuses: Sequence[str]) -> tuple[str, ...]:
    out = tuple(statuses)
    bad = [st for st in out if st not in PAIR_STATUSES]
    if bad or not out:
        raise ValidationError(
            f"unknown pair status(es) {bad or '(none given)'} (one of {', '.join(PAIR_STATUSES)})"
        )
    return out


def flagged_pairs(engine: Engine, statuses: Sequence[str] = ("suspect",)) -> list[FlaggedPair]:
    """Cases with a pair status in ``statuses``, most suspect first."""
    wanted = _check_statuses(statuses)
    with session_scope(engine) as s:
        rows = s.scalars(select(Case).where(Case.pair_status.in_(wanted)).order_by(Case.id)).all()
        out = [
            FlaggedPair(
                c.id,
                c.external_id,
                c.patient_id,
                c.split,
                c.pair_status or "",
                c.pair_check_score,
                c.pair_check_reason,
                c.pre_path,
                c.post_path,
            )
            for c in rows
        ]
    return sorted(out, key=lambda f: -(f.score if f.score is not None else -math.inf))


def pair_status_counts(engine: Engine) -> dict[str, int]:
    """Number of cases per pair status, ``unchecked`` for NULL."""
    from sqlalchemy import func

    out = {"unchecked": 0, **{st: 0 for st in PAIR_STATUSES}}
    with session_scope(engine) as s:
        for status, n in s.execute(select(Case.pair_status, func.count()).group_by(Case.pair_status)):
            out[status or "unchecked"] += int(n)
    return out


def case_by_ref(engine: Engine, ref: str | int) -> int:
    """Case id from an id or an external id (``synth-00012``); NotFoundError otherwise."""
    text = str(ref).strip()
    with session_scope(engine) as s:
        found = s.scalar(select(Case.id).where(Case.external_id == text))
        if found is None and text.isdigit():
            found = s.scalar(select(Case.id).where(Case.id == int(text)))
    if found is None:
        raise NotFoundError(f"no case with id or external id {text!r}")
    return int(found)
