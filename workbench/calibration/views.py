"""Data behind the Calibration page beyond :mod:`workbench.read.calibration`: the calibration slope, intercept and
ECE readings stored with each calibrator, calibrated (y, p) of a split, and the decision curve drawn from it.

Library code (no Streamlit), so the page stays thin and these are testable on their own. Measures are read
from the stored ``Calibration.metrics`` (validation rows are cross-fitted there, never scored in-sample);
the decision curve needs the probabilities themselves, so it recomputes them from the stored logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.calibration.measures import read_ece
from workbench.calibration.service import calibrated_probabilities
from workbench.db.engine import session_scope
from workbench.db.models import Calibration, ModelVersion
from workbench.errors import WorkbenchError
from workbench.evaluation.decision_curve import decision_curve
from workbench.model.predictions import load_predictions

READING_KEYS = (
    "ece",
    "ece_quantile",
    "brier",
    "nll",
    "calibration_slope",
    "calibration_intercept",
    "ece_debiased",
    "ece_null",
)


@dataclass(frozen=True)
class CalibratedSplit:
    """Labels and calibrated probabilities of one version on the labelled cases of one split."""

    version_id: int
    method: str | None  # the calibrator applied; None: the version's selected one
    split: str
    y: np.ndarray
    p: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def calibrated_split(
    engine: Engine, version_id: int, split: str, method: str | None = None
) -> CalibratedSplit:
    """Calibrated probabilities (``method``, or the selected calibrator when None) on a split's labelled
    cases, from the version's stored raw logits."""
    data = load_predictions(engine, version_id, split).labelled()
    if data.n == 0:
        return CalibratedSplit(version_id, method, split, np.zeros(0, dtype=np.int64), np.zeros(0))
    p = calibrated_probabilities(engine, version_id, data.logit, method)
    return CalibratedSplit(version_id, method, split, data.y, np.asarray(p, dtype=np.float64))


def decision_curve_view(
    engine: Engine,
    version_id: int,
    method: str | None = None,
    splits: Sequence[str] = ("test", "val"),
    thresholds: Any = None,
) -> dict[str, Any]:
    """Decision curve (net benefit vs threshold, with treat-all and treat-none) of a version's calibrated
    probabilities on the first of ``splits`` with labelled predictions (test, falling back to val).

    Returns :func:`~workbench.evaluation.decision_curve.decision_curve`'s dict plus ``version``,
    ``method`` and ``notes`` (why a fallback split was used; that a calibrator was fitted on the cases
    shown). Raises WorkbenchError when no split has labelled predictions.
    """
    notes: list[str] = []
    for split in splits:
        data = calibrated_split(engine, version_id, split, method)
        if data.n == 0:
            notes.append(f"no labelled {split} predictions")
            continue
        curve = decision_curve(data.y, data.p, thresholds, split=split)
        if split == "val" and method not in ("none", "identity"):
            notes.append(
                "the calibrator was fitted on these validation cases, so this curve is optimistic; "
                "label test cases for an honest one"
            )
        curve.update(version=version_id, method=method, notes=notes)
        return curve
    raise WorkbenchError(
        f"model version {version_id} has no labelled predictions on {' or '.join(splits)}: "
        f"run `workbench submit infer {version_id}` or label cases"
    )


def calibration_readings(
    engine: Engine, version_ids: Sequence[int], methods: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per stored (version, method, split): plug-in ECE (equal width and equal mass), Brier, NLL,
    calibration slope and intercept, debiased ECE and the ECE reference level (Estimate dicts, None when stored before they existed), and the
    :func:`~workbench.calibration.measures.read_ece` sentence, with the split's n and positives."""
    out: list[dict[str, Any]] = []
    with session_scope(engine) as s:
        q = select(Calibration).where(Calibration.model_version_id.in_(list(version_ids)))
        if methods:
            q = q.where(Calibration.method.in_(list(methods)))
        selected = dict(
            s.execute(
                select(ModelVersion.id, ModelVersion.calibration_id).where(
                    ModelVersion.id.in_(list(version_ids))
                )
            ).all()
        )
        for cal in s.scalars(q.order_by(Calibration.model_version_id, Calibration.id)):
            for entry in (cal.metrics or {}).get("splits", []):
                measures = (entry.get("calibrated") or {}).get("measures") or {}
                row: dict[str, Any] = {
                    "version": cal.model_version_id,
                    "method": cal.method,
                    "selected": selected.get(cal.model_version_id) == cal.id,
                    "split": entry.get("split"),
                    "n": entry.get("n"),
                    "positives": entry.get("positives"),
                    "reason": entry.get("reason"),
                }
                row.update({key: measures.get(key) for key in READING_KEYS})
                row["reading"] = read_ece(measures) if measures else None
                out.append(row)
    return out


def decision_curve_figure(curve: dict[str, Any]) -> Any:
    """Matplotlib Figure of a decision curve: the model against treat-all and treat-none, the split, n and
    positives in the title, and the y axis cut a little below 0 (treat-all falls steeply at high
    thresholds and would flatten everything else)."""
    from matplotlib.figure import Figure

    t = np.asarray(curve["thresholds"], dtype=np.float64)
    model = np.asarray(curve["model"], dtype=np.float64)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    ax.plot(t, model, color="C0", label=f"model ({curve.get('method') or 'selected calibrator'})")
    ax.plot(t, curve["treat_all"], ls="--", color="grey", lw=0.9, label="treat all")
    ax.plot(t, curve["treat_none"], ls=":", color="black", lw=0.9, label="treat none")
    prevalence = curve["positives"] / curve["n"] if curve["n"] else 0.0
    top = max(prevalence, float(np.nanmax(model)) if model.size else 0.0, 0.0) or 0.05
    ax.set_ylim(-0.25 * top, 1.1 * top)
    ax.set_xlim(float(t.min()), float(t.max()))
    ax.set(
        xlabel="Threshold probability (risk at which one would act)",
        ylabel="Net benefit",
        title=f"v{curve.get('version')} {curve.get('method') or 'selected'}: "
        f"{curve['split']} (n={curve['n']}, {curve['positives']} positive)",
    )
    ax.legend(loc="upper right", fontsize="small")
    return fig


def useful_range(curve: dict[str, Any]) -> tuple[float, float] | None:
    """Lowest and highest threshold where the model's net benefit beats both treat-all and treat-none."""
    model = np.asarray(curve["model"], dtype=np.float64)
    best_ref = np.maximum(np.asarray(curve["treat_all"]), np.asarray(curve["treat_none"]))
    useful = model > best_ref
    if not useful.any():
        return None
    t = np.asarray(curve["thresholds"], dtype=np.float64)[useful]
    return float(t.min()), float(t.max())
