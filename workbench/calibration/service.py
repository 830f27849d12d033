"""Calibrate a model version: fit each method on validation, judge it where it was not fitted, store it.

Every calibrator works on the stored float64 logits with the version's training prior shift removed
(:mod:`workbench.model.prior`), so identity and temperature scaling start from the real base rate.
The selected method is the simplest one whose cross-fitted validation log loss is within
:data:`NLL_TOLERANCE` of the best (log loss punishes the overconfidence that Brier barely sees; the test
split is only ever reported, never used to choose); when validation has too few positives to cross-fit,
prior-corrected temperature scaling (one parameter, hard to overfit) is selected. The operating threshold
is chosen by policy on calibrated validation probabilities and reported on test. Figures on validation
computed with the calibrator fitted there and the threshold chosen there are stored marked in-sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, select

from workbench.calibration.calibrator_base import sigmoid
from workbench.calibration.calibrators import calibrator_from_json, get_calibrator
from workbench.calibration.compare import assess
from workbench.calibration.measures import read_ece
from workbench.calibration.reliability import reliability_curve
from workbench.calibration.threshold_choice import apply_threshold, choose_threshold
from workbench.calibration.thresholds import format_operating_point, parse_policy
from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Calibration, Evaluation, ModelVersion, ReliabilityCurve
from workbench.defaults import DEFAULT_METHODS, DEFAULT_POLICY
from workbench.errors import WorkbenchError
from workbench.evaluation.report import evaluate, split_context
from workbench.jobs.context import JobContext
from workbench.jobs.params import CalibrateParams
from workbench.jobs.results import CalibrateResult
from workbench.model.predictions import PredictionSet, load_predictions
from workbench.model.prior import prior_offset_of

FALLBACK_METHOD = "temperature"
# Fewest fitted parameters first: among methods within NLL_TOLERANCE of the best, the earliest wins.
COMPLEXITY_ORDER = ("identity", "temperature", "platt", "beta", "histogram", "isotonic", "bbq")
NLL_TOLERANCE = 0.002  # nats: below what ~100 validation cases can resolve


def in_sample_note(
    split: str, calibrated: bool, threshold_chosen: bool, epoch_chosen: bool = False
) -> str | None:
    """What was fitted or chosen on ``split`` (None when nothing: figures there are out of sample).

    Calibrators are fitted and thresholds chosen on validation only; the tuning slice that picks the
    epoch is carved from training (``epoch_chosen``: it fell back to validation), so test stays clean.
    """
    if split != "val":
        return None
    what = [
        w
        for w, on in (
            ("the epoch was picked", epoch_chosen),
            ("the calibrator was fitted", calibrated),
            ("the threshold chosen", threshold_chosen),
        )
        if on
    ]
    return "in-sample: " + ", ".join(what) + " on this split" if what else None


def epoch_chosen_on_val(metrics: dict[str, Any] | None) -> bool:
    """Whether training picked its epoch on validation (no tuning slice; older versions always did)."""
    selection = (metrics or {}).get("epoch_selection")
    return True if selection is None else bool(selection.get("val_in_sample"))


@dataclass
class CalibrationSummary:
    """What a calibration run stored: one assessment per method, the selection and the threshold."""

    version_id: int
    assessments: dict[str, dict[str, Any]]
    calibration_ids: dict[str, int]
    selected: str
    selection_rule: str
    threshold: dict[str, Any]
    threshold_test: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


def _split_data(engine: Engine, version_id: int, split: str) -> PredictionSet:
    return load_predictions(engine, version_id, split).labelled()


def calibrate_version(
    engine: Engine,
    version_id: int,
    methods: list[str] | tuple[str, ...] = DEFAULT_METHODS,
    policy: str = DEFAULT_POLICY,
    select_method: str | None = None,
    n_boot: int = 1000,
    progress: Callable[[float, str], None] | None = None,
) -> CalibrationSummary:
    """Fit, assess and store calibrators for a version; set its calibration and operating threshold."""
    parsed_policy = parse_policy(policy)
    methods = [get_calibrator(m).method for m in methods]  # validates names early
    with session_scope(engine) as s:
        version = get_version(s, version_id)
        if version.status != "ready":
            from workbench.model.learning_check import not_ready_message

            raise WorkbenchError(not_ready_message(version_id, version.status, version.error))
        offset = prior_offset_of(version.config, version.data_counts, version.metrics)
        epoch_on_val = epoch_chosen_on_val(version.metrics)
    val = _split_data(engine, version_id, "val")
    test = _split_data(engine, version_id, "test")
    if val.n == 0:
        raise WorkbenchError(
            f"model version {version_id} has no predictions on labelled validation cases: "
            f"run `workbench submit infer {version_id}` first"
        )
    if val.y.sum() == 0 or val.y.sum() == val.n:
        raise WorkbenchError(
            f"{split_context('val', val.n, int(val.y.sum()))}: calibration needs both classes in validation"
        )
    has_test = test.n > 0
    assessments: dict[str, dict[str, Any]] = {}
    for i, method in enumerate(methods):
        if progress:
            progress(
                i / (len(methods) + 1), f"fitting {method} on {split_context('val', val.n, int(val.y.sum()))}"
            )
        assessments[method] = assess(
            method,
            val.logit,
            val.y,
            test.logit if has_test else None,
            test.y if has_test else None,
            n_boot=n_boot,
            prior_offset=offset,
        )
    selected, rule, notes = _select(assessments, select_method)
    if offset:
        notes.append(f"training prior shift {offset:+.3f} (logit) removed before every calibrator")
    calibrator = calibrator_from_json(assessments[selected]["calibrator"])
    p_val_cal = calibrator.transform(val.logit)
    choice = choose_threshold(parsed_policy, val.y, p_val_cal, split="val")
    outcome = (
        apply_threshold(choice, test.y, calibrator.transform(test.logit), split="test") if has_test else None
    )
    if not has_test:
        notes.append("no labelled test predictions: the threshold is reported on validation only")

    ids: dict[str, int] = {}
    with session_scope(engine) as s:
        old = s.scalars(select(Calibration.id).where(Calibration.model_version_id == version_id)).all()
        if old:
            s.execute(delete(ReliabilityCurve).where(ReliabilityCurve.calibration_id.in_(old)))
        version = s.get(ModelVersion, version_id)
        assert version is not None
        version.calibration_id = None
        s.flush()
        s.execute(delete(Calibration).where(Calibration.model_version_id == version_id))
        for method, result in assessments.items():
            cal = Calibration(
                model_version_id=version_id,
                method=method,
                params=result["calibrator"],
                fitted_on="val",
                n_fit=val.n,
                positives_fit=int(val.y.sum()),
                metrics=result,
            )
            s.add(cal)
            s.flush()
            ids[method] = cal.id
            fitted = calibrator_from_json(result["calibrator"])
            for data in (val, test) if has_test else (val,):
                p_cal = fitted.transform(data.logit)
                for binning in ("uniform", "quantile"):
                    s.add(
                        ReliabilityCurve(
                            calibration_id=cal.id,
                            split=data.split,
                            binning=binning,
                            n=data.n,
                            positives=int(data.y.sum()),
                            bins=reliability_curve(data.y, p_cal, strategy=binning, split=data.split),
                        )
                    )
        version.calibration_id = ids[selected]
        version.threshold = float(choice.value)
        version.threshold_policy = str(parsed_policy)
        version.threshold_report = {
            "chosen_on": {**choice.to_dict(), "in_sample": in_sample_note("val", True, True, epoch_on_val)},
            "test": outcome.to_dict() if outcome else None,
            "method": selected,
            "selection_rule": rule,
            "prior_offset": offset,
        }
        for data in (val, test) if has_test else (val,):
            report = evaluate(
                data.y, calibrator.transform(data.logit), split=data.split, threshold=choice.value
            )
            report.in_sample = in_sample_note(data.split, True, True, epoch_on_val)
            s.execute(
                delete(Evaluation).where(
                    Evaluation.model_version_id == version_id,
                    Evaluation.split == data.split,
                    Evaluation.method == selected,
                )
            )
            s.add(
                Evaluation(
                    model_version_id=version_id,
                    split=data.split,
                    method=selected,
                    n=data.n,
                    positives=int(data.y.sum()),
                    report=report.to_dict(),
                )
            )
    if progress:
        progress(1.0, f"selected {selected}; threshold {choice.value:.3f} ({parsed_policy})")
    return CalibrationSummary(
        version_id=version_id,
        assessments=assessments,
        calibration_ids=ids,
        selected=selected,
        selection_rule=rule,
        threshold=choice.to_dict(),
        threshold_test=outcome.to_dict() if outcome else None,
        notes=notes,
    )


def _select(assessments: dict[str, dict[str, Any]], forced: str | None) -> tuple[str, str, list[str]]:
    """Pick the method: forced, else the simplest within NLL_TOLERANCE of the lowest cross-fitted
    validation log loss, else (too few positives to cross-fit) temperature."""
    notes: list[str] = []
    if forced:
        method = get_calibrator(forced).method
        if method not in assessments:
            raise WorkbenchError(f"--select {forced}: not among the fitted methods {', '.join(assessments)}")
        return method, "chosen by the user", notes
    scores = {}
    for method, result in assessments.items():
        val_entry = result["splits"][0]
        measures = (val_entry.get("calibrated") or {}).get("measures") or {}
        nll = (measures.get("nll") or {}).get("value")
        if nll is not None and np.isfinite(nll):
            scores[method] = nll
    if not scores:
        fallback = FALLBACK_METHOD if FALLBACK_METHOD in assessments else next(iter(assessments))
        notes.append(
            f"validation has too few positives to cross-fit; falling back to prior-corrected {fallback}"
        )
        return fallback, "fallback: too few validation positives to compare methods", notes
    best = min(scores.values())
    close = [m for m in scores if scores[m] <= best + NLL_TOLERANCE]
    rank = {m: i for i, m in enumerate(COMPLEXITY_ORDER)}
    chosen = min(close, key=lambda m: (rank.get(m, len(rank)), scores[m]))
    rule = f"simplest method within {NLL_TOLERANCE} nats of the lowest cross-fitted validation log loss"
    return chosen, rule, notes


def calibrated_probabilities(
    engine: Engine, version_id: int, logits: np.ndarray, method: str | None = None
) -> np.ndarray:
    """Calibrated probabilities for raw float64 ``logits`` of a version: its selected calibrator
    (``method`` None; plain sigmoid when it has none yet), none at all (``"none"``: the model's own
    probability), or its latest stored calibrator of ``method`` (an error if absent)."""
    raw = np.asarray(logits, dtype=np.float64)
    if method == "none":
        return sigmoid(raw)
    with session_scope(engine) as s:
        version = get_version(s, version_id)
        if method is None:
            cal = s.get(Calibration, version.calibration_id) if version.calibration_id else None
        else:
            cal = s.scalar(
                select(Calibration)
                .where(Calibration.model_version_id == version_id, Calibration.method == method)
                .order_by(Calibration.id.desc())
            )
            if cal is None:
                raise WorkbenchError(f"model version {version_id} has no {method} calibration stored")
        params = cal.params if cal else None
    if params is None:
        return sigmoid(raw)
    return calibrator_from_json(params).transform(raw)


def format_summary(summary: CalibrationSummary) -> str:
    """Comparison table: each method on each split, with intervals, split, n and positives."""

    flagged: list[str] = []

    def est(m: dict[str, Any], key: str) -> str:
        e = (m.get("measures") or {}).get(key) or {}
        if e.get("value") is None:
            return "n/a"
        if e.get("low") is None:
            return f"{e['value']:.4f}"
        mark = "!" if e.get("flag") else ""
        if mark:
            flagged.append(e["flag"])
        return f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]{mark}"

    lines = [
        f"model version {summary.version_id}: calibrators fitted on validation, scored where not fitted",
        f"{'method':<12} {'split':<34} {'ECE (15 bins)':<26} {'ECE (equal mass)':<26} {'Brier':<26} {'NLL':<26}",
    ]
    for method, result in summary.assessments.items():
        for entry in result["splits"]:
            m = entry.get("calibrated") or {}
            where = split_context(entry["split"], entry["n"], entry["positives"])
            if not m:
                lines.append(f"{method:<12} {where:<34} {entry.get('reason') or 'not available'}")
                continue
            lines.append(
                f"{method:<12} {where:<34} {est(m, 'ece'):<26} {est(m, 'ece_quantile'):<26} "
                f"{est(m, 'brier'):<26} {est(m, 'nll'):<26}"
            )
    if flagged:
        lines.append(f"! {len(flagged)} interval(s) not to be read as evidence, e.g.: {flagged[0]}")
    lines.append(f"selected: {summary.selected} ({summary.selection_rule})")
    for entry in summary.assessments[summary.selected]["splits"]:
        measures = (entry.get("calibrated") or {}).get("measures") or {}
        if not measures:
            continue
        where = split_context(entry["split"], entry["n"], entry["positives"])
        slope, intercept = (
            measures.get("calibration_slope") or {},
            measures.get("calibration_intercept") or {},
        )
        lines.append(
            f"{summary.selected} on {where}: {read_ece(measures)}; calibration slope {_value_text(slope)}, "
            f"intercept {_value_text(intercept)}"
        )
    for label, point in (("chosen on", summary.threshold), ("reported on", summary.threshold_test)):
        if point:
            lines.append(format_operating_point(point, label))
    lines.extend(f"note: {n}" for n in summary.notes)
    return "\n".join(lines)


def _value_text(e: dict[str, Any]) -> str:
    if e.get("value") is None:
        return f"n/a ({e.get('reason') or 'undefined'})"
    if e.get("low") is None:
        return f"{e['value']:.2f}"
    return f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"


def load_curves(
    engine: Engine, version_ids: list[int], method: str | None, split: str, binning: str = "uniform"
) -> list[tuple[str, dict[str, Any]]]:
    """Stored reliability curves (label, curve) for versions x method on a split, for overlay plots."""
    out: list[tuple[str, dict[str, Any]]] = []
    with session_scope(engine) as s:
        for vid in version_ids:
            get_version(s, vid)  # a missing version is an error, not an empty overlay
            q = select(Calibration).where(Calibration.model_version_id == vid)
            if method:
                q = q.where(Calibration.method == get_calibrator(method).method)
            cals = s.scalars(q.order_by(Calibration.id)).all()
            if not cals:
                raise WorkbenchError(
                    f"model version {vid} has no calibration: run `workbench calibrate {vid}`"
                )
            for cal in cals:
                curve = s.scalar(
                    select(ReliabilityCurve).where(
                        ReliabilityCurve.calibration_id == cal.id,
                        ReliabilityCurve.split == split,
                        ReliabilityCurve.binning == binning,
                    )
                )
                if curve is None:
                    raise WorkbenchError(
                        f"model version {vid} has no {split} reliability curve for {cal.method}"
                    )
                label = f"v{vid} {cal.method} ({split_context(split, curve.n, curve.positives)})"
                out.append((label, curve.bins))
    return out


def calibrate_job(ctx: JobContext[CalibrateParams]) -> CalibrateResult:
    """Job handler (``calibrate`` kind): calibrate a version and return what was selected."""
    p = ctx.params
    summary = calibrate_version(
        ctx.engine, p.model_version, p.methods, p.policy, p.select, progress=lambda f, m: ctx.progress(f, m)
    )
    return CalibrateResult(
        model_version=summary.version_id,
        selected=summary.selected,
        threshold=summary.threshold["value"],
        calibration_ids=summary.calibration_ids,
    )
