"""Evaluation of a stored version on one named split, from stored (or freshly computed) predictions.

It sits above calibration (the report uses the version's selected calibrator and threshold) and the
baseline (the paired comparison with the non-learned score); DeLong comparisons of two versions on the
same cases live here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, select

from workbench.calibration.service import calibrated_probabilities, epoch_chosen_on_val, in_sample_note
from workbench.config import Settings
from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Calibration, Case, Evaluation, Prediction
from workbench.errors import ValidationError, WorkbenchError
from workbench.evaluation.baseline import BASELINE_VERSION, baseline_section
from workbench.evaluation.report import EvaluationReport, evaluate
from workbench.evaluation.report_plot import plot_report
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
        version = get_version(s, version_id)
        if version.status != "ready":
            raise WorkbenchError(not_ready_message(version_id, version.status, version.error))
        cal = s.get(Calibration, version.calibration_id) if version.calibration_id else None
        method = cal.method if (cal and calibrated) else "none"
        op_threshold = (
            threshold if threshold is not None else (version.threshold if method != "none" else None)
        )
        epoch_on_val = epoch_chosen_on_val(version.metrics)
    if _missing_predictions(engine, version_id, split):
        from workbench.model.scoring import infer_version

        infer_version(engine, settings, version_id, [split], mc_samples=0)
    data = load_predictions(engine, version_id, split).labelled()
    if data.n == 0:
        raise WorkbenchError(f"split {split} has no labelled cases to evaluate on")
    p = calibrated_probabilities(engine, version_id, data.logit, None if method != "none" else "none")
    t = 0.5 if op_threshold is None else float(op_threshold)
    report = evaluate(data.y, p, split=split, threshold=t, n_boot=n_boot)
    report.in_sample = in_sample_note(
        split, method != "none", threshold is None and op_threshold is not None, epoch_on_val
    )
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
        version = get_version(s, version_id)
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
    p = calibrated_probabilities(engine, version_id, data.logit, ev_method)
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


def _p_text(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _signed_interval(low: float | None, high: float | None, digits: int = 2) -> str:
    return "" if low is None or high is None else f" [{low:+.{digits}f}, {high:+.{digits}f}]"


def compare_versions(
    engine: Engine, version_id: int, other_id: int, split: str = "test", *, level: float = 0.95
) -> dict[str, Any]:
    """Paired DeLong comparison of two versions' AUROC on the SAME labelled cases of ``split``.

    Both versions' stored predictions are inner-joined on case id (labels are the cases' current ones);
    nothing is scored here, so a case only one version scored is left out and counted in ``notes``.
    AUROC is computed on the raw stored ``logit``: ranking is invariant to calibration, and logits do not
    saturate into ties at 0 or 1 as probabilities can. Returns a JSON-safe dict: ``version``, ``other``,
    ``split``, ``n``, ``positives``, ``negatives``, ``a``/``b`` (each version's DeLong AUROC),
    ``delta`` (version minus other) with ``se``, ``low``/``high``, ``z``, ``p_value``, ``significant``,
    ``winner`` (a version id or None), a plain-language ``verdict`` and ``notes``.
    """
    from workbench.evaluation.delong import delong_auroc, delong_paired_test
    from workbench.evaluation.report import split_context

    if split not in EVAL_SPLITS:
        raise ValidationError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if int(version_id) == int(other_id):
        raise ValidationError(f"compare version {version_id} with a different version, not with itself")
    epoch_on_val = []
    with session_scope(engine) as s:
        for vid in (version_id, other_id):
            row = get_version(s, vid)
            if epoch_chosen_on_val(row.metrics):
                epoch_on_val.append(f"v{vid}")
    a = load_predictions(engine, version_id, split).labelled()
    b = load_predictions(engine, other_id, split).labelled()
    common, ia, ib = np.intersect1d(a.case_ids, b.case_ids, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise WorkbenchError(
            f"versions {version_id} and {other_id} have no labelled {split} cases both scored: nothing to "
            f"compare (`workbench evaluate <version> --split {split}` scores a version's missing cases)"
        )
    y = a.y[ia]
    test = delong_paired_test(y, a.logit[ia], b.logit[ib], level)
    n, positives = int(common.size), int(y.sum())
    ctx = split_context(split, n, positives)
    alpha = 1.0 - level
    p = test["p_value"]
    significant = None if p is None else bool(p < alpha)
    winner = None
    if significant:
        winner = int(version_id) if test["delta"] > 0 else int(other_id)
    va, vb = f"v{version_id}", f"v{other_id}"
    effect = (
        ""
        if test["delta"] is None
        else f": ΔAUROC {test['delta']:+.2f}{_signed_interval(test['low'], test['high'])}, {_p_text(p)}"
    )
    if significant is None:
        verdict = f"{va} and {vb} cannot be compared on {ctx}: {test['reason']}"
        if test["delta"] is not None:
            verdict += f" (ΔAUROC {test['delta']:+.2f})"
    elif winner == int(version_id):
        verdict = f"{va} beats {vb} on {ctx}{effect}"
    elif winner == int(other_id):
        verdict = f"{va} is worse than {vb} on {ctx}{effect}"
    else:
        verdict = f"no detectable difference between {va} and {vb} on {ctx}{effect}"
    notes = []
    only_a, only_b = int(a.n - common.size), int(b.n - common.size)
    for vid, k in ((version_id, only_a), (other_id, only_b)):
        if k:
            notes.append(
                f"{k} labelled {split} case(s) scored only by v{vid} are left out (compared on the {n} both scored)"
            )
    if split == "train":
        notes.append(
            "in-sample: both versions were fitted on these cases; compare on test for an honest answer"
        )
    elif split == "val" and epoch_on_val:
        notes.append(f"in-sample for {', '.join(epoch_on_val)}: its training epoch was picked on these cases")
    if positives and positives < 10:
        notes.append(
            f"only {positives} positives: the DeLong normal approximation is rough; read it cautiously"
        )
    return {
        "version": int(version_id),
        "other": int(other_id),
        "split": split,
        "n": n,
        "positives": positives,
        "negatives": n - positives,
        "score": "logit",
        "method": "paired DeLong test (Sun & Xu midranks) on raw logits",
        "level": level,
        "a": {"version": int(version_id), **delong_auroc(y, a.logit[ia], level).to_dict()},
        "b": {"version": int(other_id), **delong_auroc(y, b.logit[ib], level).to_dict()},
        "delta": test["delta"],
        "se": test["se"],
        "low": test["low"],
        "high": test["high"],
        "z": test["z"],
        "p_value": p,
        "reason": test["reason"],
        "significant": significant,
        "winner": winner,
        "verdict": verdict,
        "excluded": {"only_version": only_a, "only_other": only_b},
        "notes": notes,
    }


def comparison_lines(result: dict[str, Any]) -> list[str]:
    """Plain-text lines of a :func:`compare_versions` result; every metric line names split, n, positives."""
    from workbench.evaluation.report import split_context

    ctx = split_context(result["split"], int(result["n"]), int(result["positives"]))
    pct = f"{float(result.get('level', 0.95)) * 100:g}%"

    def auroc(side: dict[str, Any]) -> str:
        if side.get("value") is None:
            return f"v{side['version']} AUROC undefined ({side.get('reason')})"
        out = f"v{side['version']} AUROC {side['value']:.3f}"
        if side.get("low") is not None and side.get("high") is not None:
            out += f" [{side['low']:.3f}, {side['high']:.3f}]" + ("!" if side.get("flag") else "")
        return out

    lines = [
        f"Comparison of v{result['version']} with v{result['other']} on {ctx}, the labelled cases both "
        f"scored: {result['method']}, {pct} intervals",
        f"{ctx}: {auroc(result['a'])} vs {auroc(result['b'])}",
    ]
    if result.get("delta") is not None:
        se = "" if result.get("se") is None else f", SE {result['se']:.3f}"
        lines.append(
            f"{ctx}: ΔAUROC (v{result['version']} - v{result['other']}) {result['delta']:+.3f}"
            f"{_signed_interval(result.get('low'), result.get('high'), 3)}{se}, {_p_text(result.get('p_value'))}"
        )
    lines.append(f"Verdict: {result['verdict']}")
    lines += [f"- {ctx}: {note}" for note in result.get("notes") or []]
    return lines
