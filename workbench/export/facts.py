"""The facts of an exported version: everything its model card and the bundle's JSON files state.

:func:`collect_facts` reads them from the database into one JSON-safe dict (the version, its lineage,
calibrations, threshold, evaluations with the non-learned baseline comparison, label counts), so the
card (:func:`workbench.export.card.render_card`) can be rendered, and re-rendered from a bundle's
stored facts, without touching the database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from workbench import __version__
from workbench.config import Settings, get_settings
from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Calibration, Case, Evaluation, Label, ModelVersion, Round
from workbench.errors import WorkbenchError
from workbench.model.learning_check import not_ready_message


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _lineage(s: Any, version: ModelVersion) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: ModelVersion | None = version
    while current is not None and current.id not in seen:
        seen.add(current.id)
        rnd = s.get(Round, current.round_id) if current.round_id else None
        chain.append(
            {
                "model_version": current.id,
                "parent": current.parent_id,
                "round_id": current.round_id,
                "round": rnd.number if rnd else None,
                "status": current.status,
                "preset": current.preset,
                "backbone": current.backbone,
                "created_at": _iso(current.created_at),
                "data_counts": current.data_counts,
            }
        )
        current = s.get(ModelVersion, current.parent_id) if current.parent_id else None
    return chain


def _label_counts(s: Any, as_of: datetime | None) -> dict[str, Any]:
    """Label events by source and value recorded up to ``as_of`` (the training data's snapshot)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    names = {0: "negative", 1: "positive", None: "unsure"}
    for source, value, created in s.execute(select(Label.source, Label.value, Label.created_at)):
        if as_of is not None and created is not None and _aware(created) > _aware(as_of):
            continue
        counts[source][names.get(value, str(value))] += 1
    return {
        "as_of": _iso(as_of),
        "note": "label events (append-only; a relabelled case counts once per event) up to the training start",
        "by_source": {src: dict(sorted(c.items())) for src, c in sorted(counts.items())},
    }


def collect_facts(engine: Engine, version_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """Everything the card and the bundle's JSON files need about a version, as a JSON-safe dict.

    Requires a ready version with a selected calibration and an operating threshold (WorkbenchError
    otherwise, naming the command that fixes it). Each stored evaluation gets the non-learned
    baseline comparison (``report["baseline"]``), computed and stored when missing; ``settings``
    (default: the settings in effect) locates the baseline's feature cache.
    """
    facts = _collect(engine, version_id)
    _add_baselines(engine, settings, facts)
    return facts


def _add_baselines(engine: Engine, settings: Settings | None, facts: dict[str, Any]) -> None:
    """Put the baseline comparison into every evaluation's report (a reason when it cannot be had)."""
    from workbench.evaluation.version import attach_baseline

    for split, ev in (facts.get("evaluations") or {}).items():
        report = ev.get("report")
        if not isinstance(report, dict):
            continue
        current = report.get("baseline")
        if current and current.get("available"):
            continue
        try:
            section = attach_baseline(
                engine, settings or get_settings(), facts["model_version"], split, ev["method"]
            )
        except WorkbenchError as exc:
            section = {"available": False, "reason": str(exc), "split": split, "n": ev["n"]}
            section["positives"] = ev["positives"]
        if section is not None:
            ev["report"] = {**report, "baseline": section}


def _collect(engine: Engine, version_id: int) -> dict[str, Any]:
    with session_scope(engine) as s:
        version = get_version(s, version_id)
        if version.status != "ready":
            raise WorkbenchError(
                not_ready_message(version_id, version.status, version.error) + ": nothing to export"
            )
        if not version.artifact_uri:
            raise WorkbenchError(f"model version {version_id} has no recorded artifact: nothing to export")
        if version.calibration_id is None or version.threshold is None:
            raise WorkbenchError(
                f"model version {version_id} has no calibration and threshold yet: run "
                f"`workbench calibrate {version_id}` before exporting it"
            )
        selected = s.get(Calibration, version.calibration_id)
        if selected is None:
            raise WorkbenchError(f"model version {version_id}: its selected calibration row is missing")
        calibrations = s.scalars(
            select(Calibration).where(Calibration.model_version_id == version_id).order_by(Calibration.id)
        ).all()
        evaluations = s.scalars(
            select(Evaluation).where(
                Evaluation.model_version_id == version_id, Evaluation.method == selected.method
            )
        ).all()
        n_cases = s.scalar(select(func.count(Case.id))) or 0
        n_not_synthetic = s.scalar(select(func.count(Case.id)).where(~Case.external_id.like("synth-%"))) or 0
        report = version.threshold_report or {}
        return {
            "workbench_version": __version__,
            "model_version": version.id,
            "parent": version.parent_id,
            "round_id": version.round_id,
            "preset": version.preset,
            "backbone": version.backbone,
            "config": version.config or {},
            "created_at": _iso(version.created_at),
            "created_by": version.created_by,
            "finished_at": _iso(version.finished_at),
            "artifact_sha256": version.artifact_sha256,
            "artifact_uri": version.artifact_uri,
            "data_counts": version.data_counts,
            "training": (version.metrics or {}).get("training"),
            "calibration": {
                "id": selected.id,
                "method": selected.method,
                "parameters": selected.params,
                "fitted_on": {
                    "split": selected.fitted_on,
                    "n": selected.n_fit,
                    "positives": selected.positives_fit,
                },
                "selection_rule": report.get("selection_rule"),
            },
            "calibrations": [
                {"id": c.id, "method": c.method, "selected": c.id == selected.id, "metrics": c.metrics}
                for c in calibrations
            ],
            "threshold": {
                "value": float(version.threshold),
                "policy": version.threshold_policy,
                "applies_to": f"calibrated probability ({selected.method})",
                "decision": "positive when calibrated_probability >= value",
                "chosen_on": report.get("chosen_on"),
                "reported_on": report.get("test"),
            },
            "evaluations": {
                ev.split: {"method": ev.method, "n": ev.n, "positives": ev.positives, "report": ev.report}
                for ev in evaluations
            },
            "lineage": _lineage(s, version),
            "label_counts": _label_counts(s, version.created_at),
            "synthetic_data": n_cases > 0 and n_not_synthetic == 0,
        }
