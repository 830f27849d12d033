"""Evaluation report for one named split: the card's tables, with intervals, as data, text and a figure.

Every number is tied to the split it was computed on: the report stores the split name and class counts,
and :func:`format_report` repeats them on every metric line, so no line can be quoted out of context.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    bootstrap_distribution,
    percentile_interval,
    wilson_interval,
)
from workbench.evaluation.metrics import (
    SWEEP_THRESHOLDS,
    ClassReportRow,
    ConfusionMatrix,
    Estimate,
    SweepRow,
    auroc_statistic,
    average_precision_statistic,
    check_threshold,
    classification_report,
    confusion_at,
    confusion_statistics,
    pr_curve_points,
    roc_curve_points,
    threshold_sweep,
    validate_binary,
)

REPORT_VERSION = 1
_ESTIMATE_FIELDS = ("accuracy", "precision", "recall", "f1", "sensitivity", "specificity", "auroc", "auprc")


@dataclass
class EvaluationReport:
    """Everything the card reports, for one split, with 95% intervals. JSON-safe via :meth:`to_dict`."""

    split: str
    n: int
    positives: int
    negatives: int
    threshold: float
    sweep: list[SweepRow]
    confusion: ConfusionMatrix
    classification: list[ClassReportRow]
    accuracy: Estimate
    precision: Estimate
    recall: Estimate
    f1: Estimate
    sensitivity: Estimate
    specificity: Estimate
    auroc: Estimate
    auprc: Estimate
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    notes: list[str] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    """The non-learned baseline on the same cases and its paired comparison (see evaluation.baseline)."""

    @property
    def context(self) -> str:
        """Short provenance tag, e.g. ``test (n=49, 4 positive)``."""
        return split_context(self.split, self.n, self.positives)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "version": REPORT_VERSION,
            "split": self.split,
            "n": int(self.n),
            "positives": int(self.positives),
            "negatives": int(self.negatives),
            "threshold": float(self.threshold),
            "n_boot": int(self.n_boot),
            "seed": int(self.seed),
            "level": float(self.level),
            "sweep": [r.to_dict() for r in self.sweep],
            "confusion": self.confusion.to_dict(),
            "classification": [r.to_dict() for r in self.classification],
            "notes": list(self.notes),
        }
        for name in _ESTIMATE_FIELDS:
            d[name] = getattr(self, name).to_dict()
        if self.baseline is not None:
            d["baseline"] = self.baseline
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationReport:
        try:
            return cls(
                split=str(d["split"]),
                n=int(d["n"]),
                positives=int(d["positives"]),
                negatives=int(d["negatives"]),
                threshold=float(d["threshold"]),
                sweep=[SweepRow.from_dict(r) for r in d["sweep"]],
                confusion=ConfusionMatrix.from_dict(d["confusion"]),
                classification=[ClassReportRow.from_dict(r) for r in d["classification"]],
                n_boot=int(d.get("n_boot", DEFAULT_N_BOOT)),
                seed=int(d.get("seed", 0)),
                level=float(d.get("level", DEFAULT_LEVEL)),
                notes=list(d.get("notes", [])),
                baseline=d.get("baseline"),
                **{name: Estimate.from_dict(d[name]) for name in _ESTIMATE_FIELDS},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not a valid evaluation report: {exc}") from exc


def split_context(split: str, n: int, positives: int) -> str:
    """Provenance tag used on every metric line: ``<split> (n=<n>, <k> positive)``."""
    return f"{split} (n={n}, {positives} positive)"


def _estimate(
    point: float | None,
    samples: np.ndarray,
    level: float,
    reason: str | None,
    wilson: tuple[int, int] | None = None,
) -> Estimate:
    if point is None or not np.isfinite(point):
        return Estimate.undefined(reason or "undefined on this split")
    est = Estimate(value=float(point))
    ci = percentile_interval(samples, level)
    if ci is not None:
        est.low, est.high = ci
    if wilson is not None:
        wi = wilson_interval(wilson[0], wilson[1], level)
        if wi is not None:
            est.wilson_low, est.wilson_high = wi
    return est


def evaluate(
    y: Any,
    p: Any,
    split: str,
    threshold: float = 0.5,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    thresholds: Any = SWEEP_THRESHOLDS,
) -> EvaluationReport:
    """Evaluate probabilities ``p`` against labels ``y`` (0/1) on the named split.

    Intervals are stratified-bootstrap percentile intervals (``n_boot`` resamples, ``seed``); proportions
    (accuracy, precision, sensitivity, specificity) also get Wilson intervals. Undefined metrics are None
    with a reason (e.g. sensitivity and AUROC on a split without positives).
    """
    if not isinstance(split, str) or not split.strip():
        raise ValidationError("evaluate() needs the name of the split the scores come from (e.g. 'test')")
    y, p = validate_binary(y, p, what=f"split '{split}'")
    t = check_threshold(threshold)
    n = int(y.shape[0])
    positives = int(y.sum())
    negatives = n - positives
    ctx = split_context(split, n, positives)

    stats = {
        **confusion_statistics(y, p, t),
        "auroc": auroc_statistic(y, p),
        "auprc": average_precision_statistic(y, p),
    }
    ones = np.ones((1, n))
    points = {name: float(fn(ones)[0]) for name, fn in stats.items()}
    boot = bootstrap_distribution(y, stats, n_boot=n_boot, seed=seed)
    cm = confusion_at(y, p, t)

    no_pos = f"no positive cases in split '{split}'"
    no_neg = f"no negative cases in split '{split}'"
    one_class = no_pos if positives == 0 else no_neg
    sens = _estimate(points["sensitivity"], boot["sensitivity"], level, no_pos, (cm.tp, cm.tp + cm.fn))
    report = EvaluationReport(
        split=split,
        n=n,
        positives=positives,
        negatives=negatives,
        threshold=t,
        sweep=threshold_sweep(y, p, thresholds),
        confusion=cm,
        classification=classification_report(y, p, t),
        accuracy=_estimate(points["accuracy"], boot["accuracy"], level, None, (cm.tp + cm.tn, n)),
        precision=_estimate(points["precision"], boot["precision"], level, None, (cm.tp, cm.tp + cm.fp)),
        recall=sens,
        f1=_estimate(points["f1"], boot["f1"], level, no_pos),
        sensitivity=Estimate(**vars(sens)),
        specificity=_estimate(
            points["specificity"], boot["specificity"], level, no_neg, (cm.tn, cm.tn + cm.fp)
        ),
        auroc=_estimate(points["auroc"], boot["auroc"], level, one_class),
        auprc=_estimate(points["auprc"], boot["auprc"], level, no_pos),
        n_boot=int(n_boot),
        seed=int(seed),
        level=float(level),
    )
    if cm.tp + cm.fp == 0:
        report.notes.append(
            f"{ctx}: nothing predicted positive at {t:.2f}; precision reported as 0 (card convention)"
        )
    if 0 < positives < 10:
        report.notes.append(f"{ctx}: only {positives} positives; read the intervals before the point values")
    for name in _ESTIMATE_FIELDS:
        est = getattr(report, name)
        if est.value is None:
            report.notes.append(f"{ctx}: {name} undefined ({est.reason})")
    return report


# ----------------------------------------------------------------------------------------------------
# Plain-text rendering


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _estimate_text(est: Estimate, pct: int) -> str:
    if est.value is None:
        return f"undefined ({est.reason})" if est.reason else "undefined"
    parts = [_num(est.value)]
    if est.low is not None and est.high is not None:
        parts.append(f"[{_num(est.low)}, {_num(est.high)}]")
    if est.wilson_low is not None and est.wilson_high is not None:
        parts.append(f"(Wilson {pct}% [{_num(est.wilson_low)}, {_num(est.wilson_high)}])")
    return " ".join(parts)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def _baseline_lines(report: EvaluationReport) -> list[str]:
    if not report.baseline:
        return []
    from workbench.evaluation.baseline import baseline_lines  # imports this module

    return baseline_lines(report.baseline)


def format_report(report: EvaluationReport) -> str:
    """Render the report as plain-text tables; every metric line names the split, n and positives."""
    ctx = report.context
    pct = int(round(report.level * 100))
    thr = f"{report.threshold:.2f}"
    lines = [
        f"Evaluation of split {ctx}, {report.negatives} negative; threshold {thr}",
        f"Intervals: {pct}% stratified bootstrap percentile ({report.n_boot} resamples, seed {report.seed}); "
        "Wilson score intervals for proportions",
        "",
        f"{ctx}: AUROC {_estimate_text(report.auroc, pct)}",
        f"{ctx}: AUPRC (average precision) {_estimate_text(report.auprc, pct)}",
        *_baseline_lines(report),
        f"{ctx}: Accuracy @{thr} {_estimate_text(report.accuracy, pct)}",
        f"{ctx}: Precision @{thr} {_estimate_text(report.precision, pct)}",
        f"{ctx}: Recall @{thr} {_estimate_text(report.recall, pct)}",
        f"{ctx}: F1 @{thr} {_estimate_text(report.f1, pct)}",
        f"{ctx}: Sensitivity @{thr} {_estimate_text(report.sensitivity, pct)}",
        f"{ctx}: Specificity @{thr} {_estimate_text(report.specificity, pct)}",
        "",
        f"Confusion matrix, {ctx} @{thr} (rows true, columns predicted)",
    ]
    cm = report.confusion
    lines += _table(
        ["split", "true", "pred Negative", "pred Positive"],
        [[ctx, "Negative", str(cm.tn), str(cm.fp)], [ctx, "Positive", str(cm.fn), str(cm.tp)]],
    )
    lines += ["", f"Classification report, {ctx} @{thr}"]
    lines += _table(
        ["split", "class", "precision", "recall", "f1-score", "support"],
        [
            [ctx, r.label, _num(r.precision), _num(r.recall), _num(r.f1), str(r.support)]
            for r in report.classification
        ],
    )
    lines += ["", f"Threshold sweep, {ctx}"]
    lines += _table(
        ["split", "Threshold", "Accuracy", "Precision", "Recall", "F1"],
        [
            [
                ctx,
                f"{r.threshold:.2f}",
                _num(r.accuracy, 4),
                _num(r.precision, 4),
                _num(r.recall, 4),
                _num(r.f1, 4),
            ]
            for r in report.sweep
        ],
    )
    if report.notes:
        lines += ["", "Notes"]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# Figure


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure as PNG via a temporary file and rename, so readers never see half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def plot_report(report: EvaluationReport, y: Any, p: Any, path: str | os.PathLike[str]) -> Path:
    """Write a PNG with the ROC curve, the precision-recall curve and the threshold sweep of ``report``.

    ``y`` and ``p`` must be the arrays the report was computed from (checked by size and positives).
    """
    from matplotlib.figure import Figure

    y, p = validate_binary(y, p, what=f"split '{report.split}'")
    if y.shape[0] != report.n or int(y.sum()) != report.positives:
        raise ValidationError(
            f"plot_report: arrays have n={y.shape[0]}, {int(y.sum())} positive but the report is for {report.context}"
        )
    ctx = report.context
    fig = Figure(figsize=(15, 4.6))
    ax_roc, ax_pr, ax_sw = fig.subplots(1, 3)

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
    fig.tight_layout()
    return save_figure(fig, path)
