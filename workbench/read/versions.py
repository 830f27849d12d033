"""Model versions as the Models and Jobs pages list them, and paired comparisons between them.

Read-only: one short session per call, plain dataclasses and dicts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from workbench.db.engine import session_scope
from workbench.db.models import Calibration, Case, Evaluation, ModelVersion, Prediction, Round


@dataclass(frozen=True)
class VersionRow:
    """A model version with everything the Models page lists."""

    id: int
    status: str
    parent_id: int | None
    round_number: int | None
    preset: str
    backbone: str
    data_counts: dict[str, Any] | None
    test: dict[str, Any] | None  # the test-split evaluation report (calibrated, at the threshold)
    calibration_method: str | None
    threshold: float | None
    threshold_policy: str | None
    promoted: bool
    created_by: str
    created_at: datetime
    error: str | None


def version_rows(engine: Engine) -> list[VersionRow]:
    """Every model version, newest first, with round, calibration, threshold and test report."""
    from workbench.export.promotion import current_best

    best = current_best(engine)
    with session_scope(engine) as s:
        versions = list(s.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))
        rounds = dict(s.execute(select(Round.id, Round.number)).all())
        methods = dict(s.execute(select(Calibration.id, Calibration.method)).all())
        tests: dict[int, Evaluation] = {}
        for ev in s.scalars(select(Evaluation).where(Evaluation.split == "test").order_by(Evaluation.id)):
            tests[ev.model_version_id] = ev  # latest wins
        out = []
        for v in versions:
            method = methods.get(v.calibration_id) if v.calibration_id else None
            ev = tests.get(v.id)
            if ev is not None and method is not None and ev.method != method:
                ev = (
                    s.scalar(
                        select(Evaluation).where(
                            Evaluation.model_version_id == v.id,
                            Evaluation.split == "test",
                            Evaluation.method == method,
                        )
                    )
                    or ev
                )
            out.append(
                VersionRow(
                    id=v.id,
                    status=v.status,
                    parent_id=v.parent_id,
                    round_number=rounds.get(v.round_id) if v.round_id else None,
                    preset=v.preset,
                    backbone=v.backbone,
                    data_counts=dict(v.data_counts) if v.data_counts else None,
                    test=dict(ev.report, method=ev.method) if ev is not None else None,
                    calibration_method=method,
                    threshold=v.threshold,
                    threshold_policy=v.threshold_policy,
                    promoted=v.id == best,
                    created_by=v.created_by,
                    created_at=v.created_at,
                    error=v.error,
                )
            )
        return out


def ready_versions(engine: Engine) -> list[int]:
    """Ids of ready versions, newest first (choices for fine-tuning, inference, calibration)."""
    with session_scope(engine) as s:
        return list(
            s.scalars(
                select(ModelVersion.id).where(ModelVersion.status == "ready").order_by(ModelVersion.id.desc())
            )
        )


def versions_scoring_split(engine: Engine, split: str) -> list[int]:
    """Versions with stored predictions on cases of ``split``, newest first (choices for a comparison)."""
    with session_scope(engine) as s:
        return list(
            s.scalars(
                select(Prediction.model_version_id)
                .join(Case, Case.id == Prediction.case_id)
                .where(Case.split == split)
                .distinct()
                .order_by(Prediction.model_version_id.desc())
            )
        )


def version_comparison(engine: Engine, version_id: int, other_id: int, split: str = "test") -> dict[str, Any]:
    """Paired DeLong AUROC comparison of two versions on the labelled ``split`` cases both scored.

    Read-only: see :func:`workbench.evaluation.version.compare_versions` (raw logits, inner join on case ids).
    """
    from workbench.evaluation.version import compare_versions

    return compare_versions(engine, version_id, other_id, split)
