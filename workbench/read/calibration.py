"""Calibration as the Calibration page shows it: versions with calibrations, their readings, paired
calibrated predictions for a comparison, and a version's operating point with its threshold sweeps.

Read-only: one short session per call, plain dataclasses, dicts and arrays out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Calibration, Evaluation, ModelVersion
from workbench.errors import NotFoundError, WorkbenchError


@dataclass(frozen=True)
class CalibratedVersion:
    """A version that has stored calibrations: its methods and the selected one."""

    id: int
    methods: list[str]
    selected: str | None
    threshold: float | None
    threshold_policy: str | None


@dataclass(frozen=True)
class ThresholdView:
    """A version's operating point and the card's threshold sweep on each evaluated split."""

    version_id: int
    threshold: float | None
    policy: str | None
    method: str | None
    chosen_on: dict[str, Any] | None
    test: dict[str, Any] | None
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> report dict


def calibrated_versions(engine: Engine) -> list[CalibratedVersion]:
    """Versions with stored calibrations, newest first."""
    with session_scope(engine) as s:
        rows = s.execute(
            select(Calibration.model_version_id, Calibration.id, Calibration.method).order_by(
                Calibration.model_version_id.desc(), Calibration.id
            )
        ).all()
        by_version: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for vid, cid, method in rows:
            by_version[vid].append((cid, method))
        out = []
        for vid, cals in by_version.items():
            v = s.get(ModelVersion, vid)
            if v is None:
                continue
            selected = next((m for cid, m in cals if cid == v.calibration_id), None)
            out.append(
                CalibratedVersion(vid, [m for _, m in cals], selected, v.threshold, v.threshold_policy)
            )
        return out


def calibration_rows(
    engine: Engine, version_ids: list[int], methods: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row per (version, method, split) from the stored ``Calibration.metrics`` (see
    :func:`workbench.calibration.views.calibration_readings`: ECE, Brier, NLL, slope, intercept, ...)."""
    from workbench.calibration.views import calibration_readings

    return calibration_readings(engine, version_ids, methods)


def paired_predictions(
    engine: Engine, a: tuple[int, str], b: tuple[int, str], split: str = "test"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and the two calibrated probability vectors of ``(version, method)`` a and b on the SAME
    labelled cases of ``split`` (the cases both versions scored), for a paired comparison."""
    from workbench.calibration.calibrators import calibrator_from_json
    from workbench.model.predictions import load_predictions

    prepared = []
    for vid, method in (a, b):
        with session_scope(engine) as s:
            cal = s.scalar(
                select(Calibration).where(Calibration.model_version_id == vid, Calibration.method == method)
            )
            if cal is None:
                raise NotFoundError(f"model version {vid} has no {method} calibration")
            params = dict(cal.params)
        preds = load_predictions(engine, vid, split).labelled()
        p = calibrator_from_json(params).transform(preds.logit)
        prepared.append(
            dict(zip(preds.case_ids.tolist(), zip(p.tolist(), preds.y.tolist(), strict=True), strict=True))
        )
    common = sorted(set(prepared[0]) & set(prepared[1]))
    if not common:
        raise WorkbenchError(
            f"versions {a[0]} and {b[0]} have no labelled {split} cases in common: nothing to compare"
        )
    y = np.array([prepared[0][c][1] for c in common], dtype=np.int64)
    p_a = np.array([prepared[0][c][0] for c in common], dtype=np.float64)
    p_b = np.array([prepared[1][c][0] for c in common], dtype=np.float64)
    return y, p_a, p_b


def threshold_view(engine: Engine, version_id: int) -> ThresholdView:
    """A version's chosen operating point and its stored evaluations (with the threshold sweep)."""
    with session_scope(engine) as s:
        v = get_version(s, version_id)
        report = dict(v.threshold_report or {})
        method = report.get("method")
        evals: dict[str, dict[str, Any]] = {}
        q = select(Evaluation).where(Evaluation.model_version_id == version_id).order_by(Evaluation.id)
        for ev in s.scalars(q):
            if method is None or ev.method == method or ev.split not in evals:
                evals[ev.split] = dict(ev.report, method=ev.method)
        return ThresholdView(
            version_id=version_id,
            threshold=v.threshold,
            policy=v.threshold_policy,
            method=method,
            chosen_on=report.get("chosen_on"),
            test=report.get("test"),
            evaluations=evals,
        )
