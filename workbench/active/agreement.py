"""Agreement between experts: disagreement raises an adjudication item; training uses resolved labels.

Labels are append-only, so everything here is derived from the label history of a case:

* a labeller's **vote** on a case is their latest ``expert`` label, unless a later ``correction``
  by them withdrew it (undo) or it is "Unsure" (NULL): then they have no vote;
* two experts **disagree** when their votes on one case include both 0 and 1;
* the **training label** of a case is its adjudicator's current ``adjudication`` value when there
  is one (the latest); else nothing while experts disagree; else its latest non-null label of any
  source (import, expert, simulation) that is still its labeller's opinion (not superseded by
  that labeller's later answer, "Unsure" or undo).
"""

from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from workbench.db.engine import session_scope
from workbench.db.models import SPLITS, Case, Label, QueueItem, utcnow
from workbench.errors import NotFoundError, ValidationError

TRAINABLE_SPLITS = ("pool", "train")
PERSONAL_SOURCES = ("expert", "adjudication")


@dataclass(frozen=True)
class LabelRow:
    """The fields of one label event that agreement logic needs (rows of a case in id order)."""

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


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two labellers on the cases both voted on (kappa None when undefined)."""

    labeller_a: str
    labeller_b: str
    n_common: int
    n_agree: int
    raw_agreement: float
    kappa: float | None


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


def _latest_votes(rows: Sequence[LabelRow]) -> dict[str, LabelRow]:
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
        for who, row in _latest_votes(rows).items()
        if row.source == "expert" and row.value is not None
    }


def resolve(rows: Sequence[LabelRow]) -> Resolution:
    """The training label of one case from its label history (see the module docstring)."""
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


def _rows(session: Session, case_ids: Iterable[int] | None = None, splits: Sequence[str] | None = None):  # type: ignore[no-untyped-def]
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


def _name(value: int) -> str:
    return "Positive" if value == 1 else "Negative"


def sync_adjudication(session: Session, case_id: int, round_id: int | None = None) -> int | None:
    """Within the caller's transaction: queue an adjudication item if experts now disagree.

    Nothing is queued when an adjudication item is already open, or when a non-withdrawn
    adjudication label is newer than every current vote (already resolved). When the disagreement
    is gone (e.g. after an undo), a still-queued (unclaimed) ``disagreement`` item is cancelled.
    Returns the id of the item created, else None. Callers should hold a lock on the case row.
    """
    rows = _rows(session, [case_id]).get(case_id, [])
    votes = expert_votes(rows)
    open_item = session.scalar(
        select(QueueItem).where(
            QueueItem.case_id == case_id,
            QueueItem.kind == "adjudication",
            QueueItem.status.in_(("queued", "leased")),
        )
    )
    if len(set(votes.values())) < 2:
        if open_item is not None and open_item.status == "queued" and open_item.strategy == "disagreement":
            open_item.status, open_item.done_at = "cancelled", utcnow()
            open_item.reason = (open_item.reason or "") + "; cancelled: the experts no longer disagree"
        return None
    if open_item is not None:
        return None
    latest = _latest_votes(rows)
    newest_vote = max(latest[who].id for who in votes)
    gone = superseded_ids(rows)
    if any(
        r.source == "adjudication" and r.value is not None and r.id not in gone and r.id > newest_vote
        for r in rows
    ):
        return None
    reason = "experts disagree: " + ", ".join(f"{who}={_name(v)}" for who, v in sorted(votes.items()))
    top = float(session.scalar(select(func.max(QueueItem.priority))) or 0.0) + 1.0
    item = QueueItem(
        round_id=round_id,
        case_id=case_id,
        kind="adjudication",
        strategy="disagreement",
        reason=reason,
        score=float(len(votes)),
        priority=top,
    )
    session.add(item)
    session.flush()
    return item.id


def record_and_check_disagreement(engine: Engine, case_id: int, round_id: int | None = None) -> int | None:
    """Own-transaction form of :func:`sync_adjudication` (``submit_label`` calls that one itself)."""
    with session_scope(engine) as s:
        if s.scalar(select(Case.id).where(Case.id == case_id).with_for_update()) is None:
            raise NotFoundError(f"no case {case_id}")
        return sync_adjudication(s, case_id, round_id=round_id)


def _kappa(a: list[int], b: list[int]) -> float | None:
    from sklearn.metrics import cohen_kappa_score  # imported here: keeps the queue module light for the UI

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score(a, b, labels=[0, 1], replace_undefined_by=np.nan))
    return k if np.isfinite(k) else None


def agreement_report(engine: Engine) -> list[PairAgreement]:
    """For each pair of labellers with cases in common: n, raw agreement and Cohen's kappa of their votes."""
    with session_scope(engine) as s:
        grouped = _rows(s)
    votes_by_labeller: dict[str, dict[int, int]] = defaultdict(dict)
    for cid, rows in grouped.items():
        for who, value in expert_votes(rows).items():
            votes_by_labeller[who][cid] = value
    out: list[PairAgreement] = []
    for a, b in itertools.combinations(sorted(votes_by_labeller), 2):
        common = sorted(set(votes_by_labeller[a]) & set(votes_by_labeller[b]))
        if not common:
            continue
        va = [votes_by_labeller[a][c] for c in common]
        vb = [votes_by_labeller[b][c] for c in common]
        agree = sum(x == y for x, y in zip(va, vb, strict=True))
        out.append(PairAgreement(a, b, len(common), agree, agree / len(common), _kappa(va, vb)))
    return out


def resolved_labels(engine: Engine, splits: Sequence[str] | None = None) -> dict[int, Resolution]:
    """The :class:`Resolution` of every labelled case (optionally of some splits only)."""
    if splits is not None:
        bad = [x for x in splits if x not in SPLITS]
        if bad:
            raise ValidationError(f"unknown split(s) {bad} (one of {', '.join(SPLITS)})")
    with session_scope(engine) as s:
        grouped = _rows(s, splits=splits)
    return {cid: resolve(rows) for cid, rows in grouped.items()}


def training_labels(engine: Engine, splits: Sequence[str] | None = TRAINABLE_SPLITS) -> dict[int, int]:
    """case id -> 0/1 to train on: adjudication wins; disputed and unsure-only cases are left out.

    By default only the trainable splits (pool, train); pass ``splits=("val",)`` to get the same
    resolution for calibration, or None for every split.
    """
    return {cid: r.value for cid, r in resolved_labels(engine, splits).items() if r.value is not None}
