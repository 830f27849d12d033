"""What the model says about one case while it is labelled: raw and calibrated probability,
threshold and uncertainty of the round's version (see :func:`case_context`).

Read-only: one short session, a plain dataclass out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, select

from workbench.db.engine import session_scope
from workbench.db.models import Calibration, ModelVersion, Prediction, Round


@dataclass(frozen=True)
class CaseContext:
    """What the model says about one case: raw and calibrated probability, threshold, uncertainty.

    ``version_id`` is None when no model version has scored the case yet (``note`` says so).
    """

    version_id: int | None
    probability: float | None = None
    calibrated: float | None = None
    calibration_method: str | None = None
    threshold: float | None = None
    threshold_policy: str | None = None
    uncertainty: float | None = None
    note: str | None = None


def case_context(engine: Engine, case_id: int, round_id: int | None = None) -> CaseContext:
    """The model's view of a case: the round's version (else the latest round's, else the newest
    ready version that scored it), its raw and calibrated probability, threshold and uncertainty."""
    from workbench.calibration.service import calibrated_probabilities

    with session_scope(engine) as s:
        version_id = None
        round_threshold = None
        if round_id is not None:
            rnd = s.get(Round, round_id)
            if rnd is not None:
                version_id, round_threshold = rnd.model_version_id, rnd.threshold
        if version_id is None:
            row = s.execute(
                select(Round.model_version_id, Round.threshold)
                .where(Round.model_version_id.is_not(None))
                .order_by(Round.number.desc())
                .limit(1)
            ).first()
            if row is not None:
                version_id, round_threshold = row
        if version_id is None:
            version_id = s.scalar(
                select(ModelVersion.id)
                .join(Prediction, Prediction.model_version_id == ModelVersion.id)
                .where(ModelVersion.status == "ready", Prediction.case_id == case_id)
                .order_by(ModelVersion.id.desc())
                .limit(1)
            )
        if version_id is None:
            return CaseContext(None, note="no model version has scored this case yet")
        version = s.get(ModelVersion, version_id)
        if version is None:
            return CaseContext(None, note=f"model version {version_id} no longer exists")
        pred = s.scalar(
            select(Prediction).where(Prediction.model_version_id == version_id, Prediction.case_id == case_id)
        )
        cal = s.get(Calibration, version.calibration_id) if version.calibration_id else None
        threshold = version.threshold if version.threshold is not None else round_threshold
        policy, method = version.threshold_policy, (cal.method if cal else None)
        if pred is None:
            return CaseContext(
                version_id,
                calibration_method=method,
                threshold=threshold,
                threshold_policy=policy,
                note=f"model version {version_id} has no prediction for this case",
            )
        raw, unc = float(pred.probability), pred.uncertainty
        raw_logit = float(pred.logit)
    calibrated = float(calibrated_probabilities(engine, version_id, np.array([raw_logit]))[0])
    return CaseContext(
        version_id,
        probability=raw,
        calibrated=calibrated,
        calibration_method=method,
        threshold=threshold,
        threshold_policy=policy,
        uncertainty=None if unc is None else float(unc),
    )
