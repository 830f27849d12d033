"""The label of a case, in one place: the label history read two ways, each for its own purpose.

Labels are append-only (``labels`` rows are never updated or deleted), so every meaning of "the label"
is derived from a case's label history:

* the **current label** (:func:`current_labels`, :func:`latest_label_subquery`,
  :func:`cases_with_labels`): the value of the case's latest label row, whatever its source ("Unsure"
  and an undo's ``correction`` are NULL). It is what the history says *now*: the label column of
  predictions, calibration and evaluation on a split (val and test cases are labelled once, at
  import, so there it is the imported label), the import's change detection, and the queue's
  "already labelled" filter (a case whose latest answer is "Unsure" may be queued again).
* the **resolved label** (:func:`resolve`, :func:`resolved_labels`, :func:`training_labels`): what to
  *train* on when experts may disagree. Rules:

  - a labeller's **vote** on a case is their latest ``expert`` label, unless a later ``correction``
    by them withdrew it (undo) or it is "Unsure" (NULL): then they have no vote;
  - two experts **disagree** when their votes on one case include both 0 and 1;
  - the resolved label is the adjudicator's current ``adjudication`` value when there is one (the
    latest); else nothing while experts disagree; else the latest non-null label of any source
    (import, expert, simulation) that is still its labeller's opinion (not superseded by that
    labeller's later answer, "Unsure" or undo).

  Training (``model.registry.training_data``) and the baseline fit (``evaluation.baseline``) use it,
  so a disputed case never trains and an adjudication settles it. ``active.agreement`` builds its
  adjudication queue and kappa on the same votes.

Why two: the current label answers "what was last recorded" (reports and the queue must show the
history as it stands, including an open dispute), the resolved one answers "what may a model learn
from"; both read the same rows with the rules above, here and nowhere else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session

from workbench.db.engine import session_scope
from workbench.db.models import SPLITS, Case, Label
from workbench.errors import ValidationError

#: Splits whose labelled cases train a model (pool cases join training once an expert labels them).
TRAINABLE_SPLITS = ("train", "pool")
#: Sources that carry one labeller's own opinion (superseded by their later answer or undo).
PERSONAL_SOURCES = ("expert", "adjudication")


# ------------------------------------------------------------------------------------------------
# The current label: the latest row


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


# ------------------------------------------------------------------------------------------------
# The resolved label: adjudication wins, disputes are left out


@dataclass(frozen=True)
class LabelRow:
    """The fields of one label event that resolution needs (rows of a case in id order)."""

    id: int
    case_id: int
    value: int | None
    labeller: str
    source: str


@dataclass(frozen=True)
class Resolution:
    """The resolved label of one case: ``status`` is adjudicated, disputed, labelled or unlabelled."""

    value: int | None
    status: str
    votes: dict[str, int]


def superseded_ids(rows: Sequence[LabelRow]) -> set[int]:
    """Ids of expert/adjudication labels no longer their labeller's opinion on the case.

    A label is superseded by any later expert, adjudication or correction row from the same
    labeller on the same case: a changed mind, a later "Unsure", or an undo (which withdraws).
    """
    latest: dict[str, int] = {}
    for row in rows:
        if row.source in (*PERSONAL_SOURCES, "correction"):
            latest[row.labeller] = max(row.id, latest.get(row.labeller, row.id))
    return {r.id for r in rows if r.source in PERSONAL_SOURCES and r.id < latest[r.labeller]}


def latest_votes(rows: Sequence[LabelRow]) -> dict[str, LabelRow]:
    """Each labeller's latest expert/correction row on one case (rows in id order)."""
    latest: dict[str, LabelRow] = {}
    for row in sorted(rows, key=lambda r: r.id):
        if row.source in ("expert", "correction"):
            latest[row.labeller] = row
    return latest


def expert_votes(rows: Sequence[LabelRow]) -> dict[str, int]:
    """labeller -> 0/1: each expert's current decisive label on one case (unsure/withdrawn: no vote)."""
    return {
        who: row.value
        for who, row in latest_votes(rows).items()
        if row.source == "expert" and row.value is not None
    }


def resolve(rows: Sequence[LabelRow]) -> Resolution:
    """The resolved (training) label of one case from its label history (see the module docstring)."""
    rows = sorted(rows, key=lambda r: r.id)
    gone = superseded_ids(rows)
    votes = expert_votes(rows)
    adjudicated = [r for r in rows if r.source == "adjudication" and r.value is not None and r.id not in gone]
    if adjudicated:
        return Resolution(adjudicated[-1].value, "adjudicated", votes)
    if len(set(votes.values())) > 1:
        return Resolution(None, "disputed", votes)
    usable = [r for r in rows if r.source != "correction" and r.value is not None and r.id not in gone]
    if usable:
        return Resolution(usable[-1].value, "labelled", votes)
    return Resolution(None, "unlabelled", votes)


def label_rows(
    session: Session, case_ids: Iterable[int] | None = None, splits: Sequence[str] | None = None
) -> dict[int, list[LabelRow]]:
    """case id -> its label rows in id order (of some cases, or of some splits, or all)."""
    q = select(Label.id, Label.case_id, Label.value, Label.labeller, Label.source).order_by(
        Label.case_id, Label.id
    )
    if case_ids is not None:
        q = q.where(Label.case_id.in_(list(case_ids)))
    if splits is not None:
        q = q.join(Case, Case.id == Label.case_id).where(Case.split.in_(list(splits)))
    grouped: dict[int, list[LabelRow]] = defaultdict(list)
    for rid, cid, value, labeller, source in session.execute(q):
        grouped[cid].append(LabelRow(rid, cid, value, labeller, source))
    return grouped


def resolved_labels(engine: Engine, splits: Sequence[str] | None = None) -> dict[int, Resolution]:
    """The :class:`Resolution` of every labelled case (optionally of some splits only)."""
    if splits is not None:
        bad = [x for x in splits if x not in SPLITS]
        if bad:
            raise ValidationError(f"unknown split(s) {bad} (one of {', '.join(SPLITS)})")
    with session_scope(engine) as s:
        grouped = label_rows(s, splits=splits)
    return {cid: resolve(rows) for cid, rows in grouped.items()}


def training_labels(engine: Engine, splits: Sequence[str] | None = TRAINABLE_SPLITS) -> dict[int, int]:
    """case id -> 0/1 to train on: adjudication wins; disputed and unsure-only cases are left out.

    By default only the trainable splits (train, pool); pass ``splits=("val",)`` to get the same
    resolution for validation, or None for every split.
    """
    return {cid: r.value for cid, r in resolved_labels(engine, splits).items() if r.value is not None}
