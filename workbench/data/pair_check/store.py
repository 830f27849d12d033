"""The pair check against the database: which cases to check (with a reference set), writing the
verdicts to ``cases.pair_status`` and queueing suspects for an expert.

Why apart: the only part that writes; an expert's ``confirmed`` / ``rejected`` is never overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from workbench.data.pair_check.verdicts import PairCheckResult, check_pair_files
from workbench.db.engine import session_scope
from workbench.db.models import OPEN_QUEUE_STATUSES, PAIR_CHECK_KIND, Case, QueueItem, utcnow
from workbench.errors import NotFoundError, ValidationError

#: Statuses whose pairs are kept out of training (and out of the reference set).
EXCLUDED_FROM_TRAINING = ("suspect", "rejected")


#: Statuses a check may (re)write; the others are an expert's decision and are never overwritten.
CHECK_STATUSES = ("ok", "suspect")
REFERENCE_SIZE = 500


@dataclass
class PairCheckSummary:
    """What one run of the check did (counts of this run's targets)."""

    checked: int = 0
    ok: int = 0
    suspect: int = 0
    swapped: int = 0
    mismatched: int = 0
    unreadable: int = 0
    queued: int = 0
    reference: int = 0
    seconds: float = 0.0
    note: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        """One line for the CLI, the UI and job messages."""
        if self.note and not self.checked:
            return f"pair check: {self.note}"
        text = f"pair check: {self.checked} pair(s) checked, {self.ok} ok, {self.suspect} suspect"
        if self.suspect:
            text += (
                f" ({self.swapped} probably swapped, {self.mismatched} not the same cervix; kept out of "
                f"training, {self.queued} queued for an expert)"
            )
        if self.unreadable:
            text += f"; {self.unreadable} unreadable, left unchecked"
        return text + (f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


@dataclass(frozen=True)
class _CaseRow:
    id: int
    external_id: str
    patient_id: str
    pre_path: str
    post_path: str
    split: str
    status: str | None


def _rows(engine: Engine) -> list[_CaseRow]:
    with session_scope(engine) as s:
        return [
            _CaseRow(*r)
            for r in s.execute(
                select(
                    Case.id,
                    Case.external_id,
                    Case.patient_id,
                    Case.pre_path,
                    Case.post_path,
                    Case.split,
                    Case.pair_status,
                ).order_by(Case.id)
            )
        ]


def check_pairs(
    engine: Engine,
    case_ids: Sequence[int] | None = None,
    *,
    recheck: bool = False,
    reference_size: int = REFERENCE_SIZE,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PairCheckSummary:
    """Check unchecked cases (or ``case_ids``) and store score, reason and status; queue the suspects.

    ``recheck`` also re-checks cases already ``ok`` or ``suspect`` (all of them when ``case_ids`` is None).
    Expert decisions are never changed. Too few pairs: nothing is written and the summary's note says why.
    """
    if not isinstance(reference_size, int) or isinstance(reference_size, bool) or reference_size < 0:
        raise ValidationError(f"reference_size must be a non-negative integer, got {reference_size!r}")
    started = time.perf_counter()
    rows = _rows(engine)
    by_id = {r.id: r for r in rows}
    if case_ids is not None:
        missing = [int(c) for c in case_ids if int(c) not in by_id]
        if missing:
            raise NotFoundError(f"no case with id {missing[0]}")
        wanted = {int(c) for c in case_ids}
    else:
        wanted = set(by_id)
    checkable = (None, *CHECK_STATUSES) if recheck else (None,)
    targets = [r for r in rows if r.id in wanted and r.status in checkable]
    summary = PairCheckSummary()
    if not targets:
        summary.note = "no unchecked pair"
        return summary
    target_ids = {r.id for r in targets}
    pool = [r for r in rows if r.id not in target_ids and r.status in ("ok", "confirmed")]
    if len(pool) > reference_size:
        pick = np.sort(np.random.default_rng(seed).choice(len(pool), size=reference_size, replace=False))
        pool = [pool[int(i)] for i in pick]
    chosen = targets + pool
    summary.reference = len(pool)
    try:
        result = check_pair_files(
            [(r.pre_path, r.post_path) for r in chosen],
            [r.patient_id for r in chosen],
            targets=range(len(targets)),
            seed=seed,
            workers=workers,
            progress=progress,
        )
    except ValidationError as exc:
        summary.note = f"{exc}; {len(targets)} case(s) left unchecked"
        summary.seconds = round(time.perf_counter() - started, 2)
        return summary
    summary.stats = result.stats
    _store(engine, targets, result, summary)
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _store(
    engine: Engine, targets: list[_CaseRow], result: PairCheckResult, summary: PairCheckSummary
) -> None:
    """Write verdicts (never over an expert's decision) and queue each new suspect, in one transaction."""
    suspects: list[tuple[int, float, str]] = []
    cleared: list[int] = []
    with session_scope(engine) as s:
        for k, row in enumerate(targets):
            verdict = result.verdicts.get(k)
            if verdict is None:
                summary.unreadable += 1
                s.execute(
                    update(Case)
                    .where(Case.id == row.id, Case.pair_status.is_(None))
                    .values(pair_check_reason=f"unchecked: {result.errors.get(k, 'not analysed')}")
                )
                continue
            written = s.execute(
                update(Case)
                .where(
                    Case.id == row.id, or_(Case.pair_status.is_(None), Case.pair_status.in_(CHECK_STATUSES))
                )
                .values(
                    pair_check_score=round(verdict.score, 4),
                    pair_check_reason=verdict.reason,
                    pair_status=verdict.status,
                )
            ).rowcount
            if not written:  # an expert decided meanwhile
                continue
            summary.checked += 1
            if verdict.status == "suspect":
                summary.suspect += 1
                summary.swapped += verdict.fault == "swapped"
                summary.mismatched += verdict.fault == "mismatched"
                suspects.append((row.id, verdict.score, verdict.reason))
            else:
                summary.ok += 1
                cleared.append(row.id)
        summary.queued = _queue_for_experts(s, suspects, cancel=cleared)


def _queue_for_experts(
    session: Session, suspects: Sequence[tuple[int, float, str]], cancel: Sequence[int] = ()
) -> int:
    """In the caller's transaction: one open ``pair-check`` item per suspect ``(case id, score, reason)``
    (a case that has one already keeps it) and the queued pair checks of the ``cancel`` cases (found
    sound when checked again) cancelled. Returns the number of items created.

    The check writes its own review items, beside the verdicts and in the same transaction, so a
    suspect is never left without one; the labelling queue (``workbench.active.labelling_queue``)
    hands them out and takes the answers."""
    ids = [int(c) for c, _, _ in suspects]
    open_ids: set[int] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        open_ids.update(
            session.scalars(
                select(QueueItem.case_id).where(
                    QueueItem.case_id.in_(chunk),
                    QueueItem.kind == PAIR_CHECK_KIND,
                    QueueItem.status.in_(OPEN_QUEUE_STATUSES),
                )
            )
        )
    created = 0
    for case_id, score, reason in suspects:
        if int(case_id) in open_ids:
            continue
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


def check_unchecked_safely(engine: Engine, when: str) -> dict[str, Any]:
    """Check the unchecked cases for ``when`` ("import" or "round"); never raises: a failure is reported.

    Returns the summary as a dict with ``message``, plus ``error`` when the check failed: the import
    stays committed, the round goes on, and the cases stay unchecked (not excluded from training) until
    the next check.
    """
    if when not in ("import", "round"):
        raise ValidationError(f"when must be 'import' or 'round', got {when!r}")
    try:
        return check_pairs(engine).to_dict()
    except Exception as exc:  # the caller's own work must never be undone or masked by the check
        error = f"{type(exc).__name__}: {exc}"
        if when == "import":
            message = (
                f"pair check failed after the import ({error}); the import is kept and the cases stay "
                "unchecked (checked again before the next round)"
            )
        else:
            message = (
                f"pair check failed before training ({error}); the round goes on and unchecked cases "
                "stay unchecked (checked again at the next import or round)"
            )
        return {"error": error, "message": message}
