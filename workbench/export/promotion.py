"""The current best model: explicit promotions by an admin, and a documented rule to suggest one.

A promotion is an audit record (who, when, why); the latest one names the current best version.
``best_by_rule`` only *suggests* a version (the CLI or UI can show it next to the current best); it
never promotes by itself, because choosing a model for use is a human decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Calibration, Evaluation, ModelVersion, Promotion
from workbench.errors import ValidationError, WorkbenchError
from workbench.evaluation.report import split_context
from workbench.users import authorize_actor

RULE = (
    "highest validation AUPRC (average precision on split 'val', computed on the probabilities of the "
    "version's selected calibration method) among ready versions that have a calibration; ties go to the "
    "newer version"
)


def promote(engine: Engine, version_id: int, actor: str, reason: str) -> None:
    """Record ``version_id`` as the current best (admin only); ``reason`` is required for the audit trail.

    Raises PermissionDenied for a non-admin actor, NotFoundError for an unknown version, WorkbenchError
    for a version that is not ready and ValidationError for an empty reason.
    """
    authorize_actor(engine, actor, "promote")
    why = (reason or "").strip()
    if not why:
        raise ValidationError("reason: say why this version is promoted (it is kept for the audit trail)")
    with session_scope(engine) as s:
        version = get_version(s, version_id)
        if version.status != "ready":
            from workbench.model.learning_check import not_ready_message

            raise WorkbenchError(
                f"{not_ready_message(version_id, version.status, version.error)}; "
                "only a ready version can be promoted"
            )
        s.add(Promotion(model_version_id=version_id, promoted_by=actor, reason=why))


def current_best(engine: Engine) -> int | None:
    """The version named by the latest promotion, or None when nothing was ever promoted."""
    with session_scope(engine) as s:
        return s.scalar(
            select(Promotion.model_version_id)
            .order_by(Promotion.created_at.desc(), Promotion.id.desc())
            .limit(1)
        )


def promotion_history(engine: Engine) -> list[dict[str, Any]]:
    """All promotions, newest first: version, who, when and why."""
    with session_scope(engine) as s:
        rows = s.scalars(select(Promotion).order_by(Promotion.created_at.desc(), Promotion.id.desc())).all()
        return [
            {
                "model_version": p.model_version_id,
                "promoted_by": p.promoted_by,
                "reason": p.reason,
                "created_at": p.created_at.isoformat() if p.created_at else None,
            }
            for p in rows
        ]


@dataclass(frozen=True)
class _Candidate:
    version_id: int
    method: str
    auprc: float
    low: float | None
    high: float | None
    n: int
    positives: int

    def text(self) -> str:
        ci = f" [{self.low:.3f}, {self.high:.3f}]" if self.low is not None and self.high is not None else ""
        return f"v{self.version_id} ({self.method}): {split_context('val', self.n, self.positives)} AUPRC {self.auprc:.3f}{ci}"


def best_by_rule(engine: Engine) -> tuple[int, str]:
    """The version the selection rule picks, and an explanation naming the rule and the candidates.

    Rule: among versions with status ``ready`` whose ``calibration_id`` is set, take the one with the
    highest validation AUPRC, read from its Evaluation row for split ``val`` and method = its selected
    calibration method (``report['auprc']['value']``); ties go to the newer (higher id) version.
    Validation, not test: the test split is only ever reported, never used to choose. WorkbenchError
    when no version qualifies (the message says what is missing).
    """
    candidates: list[_Candidate] = []
    skipped: list[str] = []
    with session_scope(engine) as s:
        ready = s.scalars(
            select(ModelVersion).where(ModelVersion.status == "ready").order_by(ModelVersion.id)
        ).all()
        uncalibrated = [v.id for v in ready if v.calibration_id is None]
        for version in ready:
            if version.calibration_id is None:
                continue
            cal = s.get(Calibration, version.calibration_id)
            if cal is None:
                skipped.append(f"v{version.id}: calibration row missing")
                continue
            ev = s.scalar(
                select(Evaluation).where(
                    Evaluation.model_version_id == version.id,
                    Evaluation.split == "val",
                    Evaluation.method == cal.method,
                )
            )
            auprc = ((ev.report or {}).get("auprc") or {}) if ev is not None else {}
            if ev is None or auprc.get("value") is None:
                why = "no validation evaluation" if ev is None else (auprc.get("reason") or "AUPRC undefined")
                skipped.append(f"v{version.id}: {why}")
                continue
            candidates.append(
                _Candidate(
                    version.id,
                    cal.method,
                    float(auprc["value"]),
                    auprc.get("low"),
                    auprc.get("high"),
                    int(ev.n),
                    int(ev.positives),
                )
            )
    if not candidates:
        parts = [f"{len(ready)} ready version(s)"]
        if uncalibrated:
            parts.append(
                f"uncalibrated: {', '.join(f'v{v}' for v in uncalibrated)} (run `workbench calibrate`)"
            )
        parts.extend(skipped)
        raise WorkbenchError(
            "no model version qualifies for the selection rule (" + RULE + "); " + "; ".join(parts)
        )
    best = max(candidates, key=lambda c: (c.auprc, c.version_id))
    lines = [f"v{best.version_id} by rule: {RULE}.", "Candidates:"]
    lines += [
        f"  {'*' if c is best else '-'} {c.text()}" for c in sorted(candidates, key=lambda c: -c.version_id)
    ]
    if len({(c.n, c.positives) for c in candidates}) > 1:
        lines.append(
            "Note: the candidates were validated on different validation sets (cases were added); "
            "compare their intervals, not only the point values."
        )
    if uncalibrated:
        lines.append(f"Not considered (no calibration): {', '.join(f'v{v}' for v in uncalibrated)}")
    lines += [f"Not considered: {why}" for why in skipped]
    return best.version_id, "\n".join(lines)


def resolve_version(engine: Engine, version_id: int | None) -> int:
    """``version_id`` when given, else the current best; WorkbenchError when neither exists (for the CLI)."""
    if version_id is not None:
        return int(version_id)
    best = current_best(engine)
    if best is None:
        raise WorkbenchError(
            "no model version given and none has been promoted: pass a version id, or promote one "
            "with `workbench promote VERSION --reason ...`"
        )
    return best
