"""Evaluation report of a version on one named split, from stored (or freshly computed) predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select

from workbench.calibration.service import calibrated_probabilities
from workbench.config import Settings
from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.models import Calibration, Case, Evaluation, ModelVersion, Prediction
from workbench.errors import NotFoundError, ValidationError, WorkbenchError
from workbench.evaluation.baseline import BASELINE_VERSION, baseline_section
from workbench.evaluation.report import EvaluationReport, evaluate, plot_report
from workbench.model.learning_check import not_ready_message
from workbench.model.predictions import load_predictions

EVAL_SPLITS = ("train", "val", "test")


def _missing_predictions(engine: Engine, version_id: int, split: str) -> int:
    cur = latest_label_subquery()
    with session_scope(engine) as s:
        scored = select(Prediction.case_id).where(Prediction.model_version_id == version_id)
        return int(
            s.scalar(
                select(func.count())
                .select_from(Case)
                .join(cur, cur.c.case_id == Case.id)
                .where(Case.split == split, cur.c.value.is_not(None), Case.id.not_in(scored))
            )
        )


def evaluate_version(
    engine: Engine,
    settings: Settings,
    version_id: int,
    split: str = "test",
    *,
    calibrated: bool = True,
    threshold: float | None = None,
    n_boot: int = 1000,
    png: Path | None = None,
    baseline: bool = True,
) -> tuple[EvaluationReport, str]:
    """Report on ``split`` (scoring its missing labelled cases first); returns (report, method).

    Uses the version's selected calibration (unless ``calibrated`` is False) and its operating
    threshold (0.5 before calibration) unless ``threshold`` is given. With ``baseline`` the report
    also holds the non-learned baseline on the same cases and the paired comparison
    (``report.baseline``, see :mod:`workbench.evaluation.baseline`). The report is stored.
    """
    if split not in EVAL_SPLITS:
        raise ValidationError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            raise NotFoundError(f"no model version {version_id}")
        if version.status != "ready":
            raise WorkbenchError(not_ready_message(version_id, version.status, version.error))
        cal = s.get(Calibration, version.calibration_id) if version.calibration_id else None
        method = cal.method if (cal and calibrated) else "none"
        op_threshold = (
            threshold if threshold is not None else (version.threshold if method != "none" else None)
        )
    if _missing_predictions(engine, version_id, split):
        from workbench.model.scoring import infer_version

        infer_version(engine, settings, version_id, [split], mc_samples=0)
    data = load_predictions(engine, version_id, split).labelled()
    if data.n == 0:
        raise WorkbenchError(f"split {split} has no labelled cases to evaluate on")
    p = (
        calibrated_probabilities(engine, version_id, data.probability)
        if method != "none"
        else data.probability
    )
    t = 0.5 if op_threshold is None else float(op_threshold)
    report = evaluate(data.y, p, split=split, threshold=t, n_boot=n_boot)
    if baseline:
        report.baseline = baseline_section(
            engine, settings, data.case_ids.tolist(), data.y, p, split, n_boot=n_boot, seed=report.seed
        )
    with session_scope(engine) as s:
        s.execute(
            delete(Evaluation).where(
                Evaluation.model_version_id == version_id,
                Evaluation.split == split,
                Evaluation.method == method,
            )
        )
        s.add(
            Evaluation(
                model_version_id=version_id,
                split=split,
                method=method,
                n=report.n,
                positives=report.positives,
                report=report.to_dict(),
            )
        )
    if png is not None:
        plot_report(report, data.y, p, png)
    return report, method


def attach_baseline(
    engine: Engine,
    settings: Settings,
    version_id: int,
    split: str = "test",
    method: str | None = None,
    *,
    n_boot: int | None = None,
) -> dict[str, Any] | None:
    """The baseline comparison of a stored evaluation, computed and stored when it is missing.

    Works on the evaluation row of ``(version, split, method)`` (``method`` None: the version's
    selected calibration method, else the latest row of the split), on the same labelled cases and
    probabilities the row was computed from (n and positives are checked). Returns None when no
    evaluation is stored; a baseline that cannot be computed comes back as ``{"available": False, ...}``
    and is not stored, so it is tried again later.
    """
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            raise NotFoundError(f"no model version {version_id}")
        if method is None and version.calibration_id:
            cal = s.get(Calibration, version.calibration_id)
            method = cal.method if cal else None
        q = select(Evaluation).where(Evaluation.model_version_id == version_id, Evaluation.split == split)
        if method is not None:
            q = q.where(Evaluation.method == method)
        ev = s.scalar(q.order_by(Evaluation.id.desc()))
        if ev is None:
            return None
        stored = dict(ev.report or {})
        ev_id, ev_method, ev_n, ev_pos = ev.id, ev.method, ev.n, ev.positives
    current = stored.get("baseline")
    if current and current.get("available") and current.get("version") == BASELINE_VERSION:
        return current
    data = load_predictions(engine, version_id, split).labelled()
    if data.n != ev_n or int(data.y.sum()) != ev_pos:
        return {
            "available": False,
            "reason": (
                f"the stored evaluation is on n={ev_n} ({ev_pos} positive) but the split now has "
                f"n={data.n} ({int(data.y.sum())} positive) labelled predictions: re-run "
                f"`workbench evaluate {version_id} --split {split}`"
            ),
            "split": split,
            "n": ev_n,
            "positives": ev_pos,
        }
    p = calibrated_probabilities(engine, version_id, data.probability, ev_method)
    section = baseline_section(
        engine,
        settings,
        data.case_ids.tolist(),
        data.y,
        p,
        split,
        n_boot=int(n_boot or stored.get("n_boot") or 1000),
        seed=int(stored.get("seed") or 0),
    )
    if section.get("available"):
        with session_scope(engine) as s:
            ev = s.get(Evaluation, ev_id)
            if ev is not None:
                ev.report = {**(ev.report or {}), "baseline": section}
    return section
