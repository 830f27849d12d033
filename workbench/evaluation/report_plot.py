"""The evaluation figure: ROC, precision-recall, threshold sweep and decision curve of one report.

PNG files are written to a temporary name and renamed (:func:`save_figure`), so a reader never sees half
a file. matplotlib is imported inside the functions only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.decision_curve import decision_curve
from workbench.evaluation.metrics import (
    pr_curve_points,
    roc_curve_points,
    validate_binary,
)
from workbench.evaluation.report import EvaluationReport
from workbench.files import atomic_replace


def _plot_decision_curve(ax: Any, dc: dict[str, Any], ctx: str) -> None:
    """Net benefit of the model, treat-all and treat-none against the threshold probability."""
    t = np.asarray(dc["thresholds"])
    model, treat_all = np.asarray(dc["model"]), np.asarray(dc["treat_all"])
    ax.plot(t, model, label="model")
    ax.plot(t, treat_all, ls="--", color="grey", lw=0.9, label="treat all")
    ax.plot(t, dc["treat_none"], ls=":", color="black", lw=0.9, label="treat none")
    top = max(float(dc["prevalence"]), float(model.max()), 0.0)
    span = top if top > 0 else 0.05
    ax.set_ylim(-0.25 * span, 1.1 * span)
    ax.set_xlim(float(t.min()), float(t.max()))
    ax.set(
        xlabel="Threshold probability (calibrated risk at which one would refer)",
        ylabel="Net benefit",
        title=f"Decision curve: {ctx}",
    )
    ax.legend(loc="upper right", fontsize="small")


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure as PNG via a temporary file and rename, so readers never see half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return target


def plot_report(
    report: EvaluationReport,
    y: Any,
    p: Any,
    path: str | os.PathLike[str],
    decision_thresholds: Any = None,
) -> Path:
    """Write a PNG with the ROC curve, the precision-recall curve, the threshold sweep and the decision
    curve (net benefit, :func:`workbench.evaluation.decision_curve.decision_curve`) of ``report``.

    ``y`` and ``p`` must be the arrays the report was computed from (checked by size and positives).
    ``decision_thresholds`` are the decision curve's threshold probabilities (default 0.01..0.50).
    """
    from matplotlib.figure import Figure

    y, p = validate_binary(y, p, what=f"split '{report.split}'")
    if y.shape[0] != report.n or int(y.sum()) != report.positives:
        raise ValidationError(
            f"plot_report: arrays have n={y.shape[0]}, {int(y.sum())} positive but the report is for {report.context}"
        )
    ctx = report.context
    fig = Figure(figsize=(13, 9.5))
    (ax_roc, ax_pr), (ax_sw, ax_dc) = fig.subplots(2, 2)

    roc = roc_curve_points(y, p)
    auroc = "n/a" if report.auroc.value is None else f"{report.auroc.value:.2f}"
    if report.positives and report.negatives:
        ax_roc.plot(roc["fpr"], roc["tpr"], drawstyle="steps-post", label=f"AUROC {auroc}")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
    ax_roc.set(xlabel="False positive rate (1 - specificity)", ylabel="Sensitivity", title=f"ROC: {ctx}")
    ax_roc.set_xlim(0, 1)
    ax_roc.set_ylim(0, 1.02)
    ax_roc.legend(loc="lower right")

    pr = pr_curve_points(y, p)
    auprc = "n/a" if report.auprc.value is None else f"{report.auprc.value:.2f}"
    if report.positives:
        ax_pr.plot(pr["recall"], pr["precision"], drawstyle="steps-post", label=f"AUPRC {auprc}")
    prevalence = report.positives / report.n
    ax_pr.axhline(prevalence, ls="--", color="grey", lw=0.8, label=f"prevalence {prevalence:.2f}")
    ax_pr.set(xlabel="Recall (sensitivity)", ylabel="Precision", title=f"Precision-recall: {ctx}")
    ax_pr.set_xlim(0, 1)
    ax_pr.set_ylim(0, 1.02)
    ax_pr.legend(loc="upper right")

    ts = [r.threshold for r in report.sweep]
    for key in ("accuracy", "precision", "recall", "f1"):
        vals = [np.nan if getattr(r, key) is None else getattr(r, key) for r in report.sweep]
        ax_sw.plot(ts, vals, marker="o", ms=3, label=key)
    ax_sw.axvline(report.threshold, color="black", lw=0.8, ls=":", label=f"threshold {report.threshold:.2f}")
    ax_sw.set(xlabel="Threshold", ylabel="Value", title=f"Threshold sweep: {ctx}")
    ax_sw.set_xlim(0, 1)
    ax_sw.set_ylim(0, 1.02)
    ax_sw.legend(loc="best", fontsize="small")

    _plot_decision_curve(ax_dc, decision_curve(y, p, decision_thresholds, split=report.split), ctx)
    fig.tight_layout()
    return save_figure(fig, path)
