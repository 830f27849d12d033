"""Agreement between experts: disagreement raises an adjudication item; Cohen's kappa per pair.

Votes, disagreement and the resolved (training) label of a case are defined once, in
:mod:`workbench.data.labels`; this module acts on them: it queues an adjudication item when experts
disagree (and cancels it when they no longer do) and reports their agreement.
"""

from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from workbench.data.labels import expert_votes, label_rows, latest_votes, superseded_ids
from workbench.db.engine import session_scope
from workbench.db.models import Case, QueueItem, utcnow
from workbench.errors import NotFoundError


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two labellers on the cases both voted on (kappa None when undefined)."""

    labeller_a: str
    labeller_b: str
    n_common: int
    n_agree: int
    raw_agreement: float
    kappa: float | None


def _name(value: int) -> str:
    return "Positive" if value == 1 else "Negative"


def sync_adjudication(session: Session, case_id: int, round_id: int | None = None) -> int | None:
    """Within the caller's transaction: queue an adjudication item if experts now disagree.

    Nothing is queued when an adjudication item is already open, or when a non-withdrawn
    adjudication label is newer than every current vote (already resolved). When the disagreement
    is gone (e.g. after an undo), a still-queued (unclaimed) ``disagreement`` item is cancelled.
    Returns the id of the item created, else None. Callers should hold a lock on the case row.
    """
    rows = label_rows(session, [case_id]).get(case_id, [])
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
    latest = latest_votes(rows)
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
        grouped = label_rows(s)
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
