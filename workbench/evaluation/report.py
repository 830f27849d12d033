"""Evaluation report for one named split: the card's tables, with intervals, as data, text and a figure.

Every number is tied to the split it was computed on: the report stores the split name and class counts,
and :func:`format_report` repeats them on every metric line, so no line can be quoted out of context.

AUROC gets a DeLong interval (logit scale, :mod:`workbench.evaluation.delong`) beside the bootstrap one.
An interval that cannot be evidence of precision (zero width, or pinned at 0/1 with the estimate on it, as
on a perfectly separated split) carries a ``flag`` saying what to read instead (the exact interval of a
proportion, the exact bound of a perfect AUROC); the text marks it with ``!`` and a footnote.
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
from workbench.evaluation.decision_curve import decision_curve
from workbench.evaluation.delong import delong_auroc
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
    exact_proportion_interval,
    interval_flag,
    pr_curve_points,
    roc_curve_points,
    threshold_sweep,
    validate_binary,
)

REPORT_VERSION = 2  # 2: auroc_delong, Estimate.exact_low/exact_high/flag (version 1 dicts still load)
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
    auroc_delong: dict[str, Any] | None = None
    """AUROC with its DeLong variance and logit-scale interval (``DelongAUROC.to_dict()``)."""
    in_sample: str | None = None
    """Set when something was fitted or chosen on this split (calibrator, threshold): what, in words."""

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
            "in_sample": self.in_sample,
        }
        for name in _ESTIMATE_FIELDS:
            d[name] = getattr(self, name).to_dict()
        d["auroc_delong"] = self.auroc_delong
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
                auroc_delong=d.get("auroc_delong"),
                in_sample=d.get("in_sample"),
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
        ex = exact_proportion_interval(wilson[0], wilson[1], level)
        if ex is not None:
            est.exact_low, est.exact_high = ex
    return est


def _flag_estimates(
    report: EvaluationReport, counts: dict[str, tuple[int, int]], delong: dict[str, Any] | None
) -> None:
    """Set ``flag`` on every estimate whose bootstrap interval is degenerate, with what to read instead.

    ``counts`` maps each proportion to its (successes, total), ``delong`` is the AUROC's DeLong dict.
    """
    pct = f"{report.level * 100:g}%"
    sample = f"{report.n} cases, {report.positives} positive"
    for name in _ESTIMATE_FIELDS:
        est = getattr(report, name)
        if name in counts:
            k, total = counts[name]
            if est.exact_low is not None and est.exact_high is not None:
                instead = (
                    f"read the exact (Clopper-Pearson) {pct} interval "
                    f"[{est.exact_low:.2f}, {est.exact_high:.2f}] for {k}/{total} instead"
                )
            else:
                instead = "nothing is counted in this proportion, so it cannot be bounded"
        elif name == "auroc":
            if delong and delong.get("flag") and delong.get("exact_bound") is not None:
                side = "lower" if delong["value"] == 1.0 else "upper"
                one_sided = f"{100 - (100 - report.level * 100) / 2:g}%"
                instead = (
                    f"the DeLong variance is 0 too; an honest exact one-sided {one_sided} "
                    f"{side} bound is {delong['exact_bound']:.2f} (conservative: "
                    f"{min(report.positives, report.negatives)} independent positive-negative pairs of "
                    f"{report.positives} positive and {report.negatives} negative cases)"
                )
            elif delong and delong.get("flag"):
                instead = f"the DeLong interval is degenerate too ({delong['flag']})"
            elif delong and delong.get("low") is not None:
                instead = f"read the DeLong {pct} interval [{delong['low']:.2f}, {delong['high']:.2f}]"
            else:
                instead = f"the sample ({sample}) cannot show its uncertainty; read it as a point value"
        else:
            instead = f"the sample ({sample}) cannot show its uncertainty; read it as a point value"
        est.flag = interval_flag(est, instead)


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
    (accuracy, precision, sensitivity, specificity) also get Wilson and exact (Clopper-Pearson) intervals,
    AUROC a DeLong interval (``report.auroc_delong``). Degenerate bootstrap intervals are flagged
    (``Estimate.flag``). Undefined metrics are None with a reason (e.g. sensitivity and AUROC on a split
    without positives).
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
        auroc_delong=delong_auroc(y, p, level).to_dict(),
    )
    _flag_estimates(
        report,
        {
            "accuracy": (cm.tp + cm.tn, n),
            "precision": (cm.tp, cm.tp + cm.fp),
            "recall": (cm.tp, cm.tp + cm.fn),
            "sensitivity": (cm.tp, cm.tp + cm.fn),
            "specificity": (cm.tn, cm.tn + cm.fp),
        },
        report.auroc_delong,
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


FLAG_MARK = "!"


def _estimate_text(est: Estimate, pct: int) -> str:
    """``value [low, high]`` (bootstrap), ``!`` if flagged, then Wilson and (if flagged) exact intervals."""
    if est.value is None:
        return f"undefined ({est.reason})" if est.reason else "undefined"
    parts = [_num(est.value)]
    if est.low is not None and est.high is not None:
        parts.append(f"[{_num(est.low)}, {_num(est.high)}]" + (FLAG_MARK if est.flag else ""))
    if est.wilson_low is not None and est.wilson_high is not None:
        parts.append(f"(Wilson {pct}% [{_num(est.wilson_low)}, {_num(est.wilson_high)}])")
    if est.flag and est.exact_low is not None and est.exact_high is not None:
        parts.append(f"(exact {pct}% [{_num(est.exact_low)}, {_num(est.exact_high)}])")
    return " ".join(parts)


def _delong_text(d: dict[str, Any] | None, pct: int) -> str:
    """`` (DeLong 95% [low, high])`` for the AUROC line; empty when AUROC is undefined."""
    if not d or d.get("value") is None:
        return ""
    if d.get("low") is None or d.get("high") is None:
        return f" (DeLong: {d.get('reason') or 'no interval'})"
    mark = FLAG_MARK if d.get("flag") else ""
    return f" (DeLong {pct}% [{_num(d['low'])}, {_num(d['high'])}]{mark})"


def _flag_lines(report: EvaluationReport) -> list[str]:
    """Footnotes for the ``!`` marks: one line per flagged interval, naming split, n and positives."""
    thr = f"{report.threshold:.2f}"
    labels = {
        "auroc": "AUROC",
        "auprc": "AUPRC",
        "accuracy": f"Accuracy @{thr}",
        "precision": f"Precision @{thr}",
        "recall": f"Recall @{thr}",
        "f1": f"F1 @{thr}",
        "sensitivity": f"Sensitivity @{thr}",
        "specificity": f"Specificity @{thr}",
    }
    lines = []
    for name in labels:
        flag = getattr(report, name).flag
        if name == "auroc" and not flag:
            flag = (report.auroc_delong or {}).get("flag")
        if flag:
            lines.append(f"{FLAG_MARK} {report.context}: {labels[name]}: {flag}")
    if not lines:
        return []
    return ["", f"Flagged intervals ({FLAG_MARK}): not evidence of precision on this sample", *lines]


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
        *(
            [f"IN-SAMPLE ({report.split}): {report.in_sample}; read the test split for an honest figure"]
            if report.in_sample
            else []
        ),
        f"Intervals: {pct}% stratified bootstrap percentile ({report.n_boot} resamples, seed {report.seed}); "
        "Wilson score intervals for proportions; DeLong (logit scale) for AUROC",
        "",
        f"{ctx}: AUROC {_estimate_text(report.auroc, pct)}{_delong_text(report.auroc_delong, pct)}",
        f"{ctx}: AUPRC (average precision) {_estimate_text(report.auprc, pct)}",
        *_baseline_lines(report),
        f"{ctx}: Accuracy @{thr} {_estimate_text(report.accuracy, pct)}",
        f"{ctx}: Precision @{thr} {_estimate_text(report.precision, pct)}",
        f"{ctx}: Recall @{thr} {_estimate_text(report.recall, pct)}",
        f"{ctx}: F1 @{thr} {_estimate_text(report.f1, pct)}",
        f"{ctx}: Sensitivity @{thr} {_estimate_text(report.sensitivity, pct)}",
        f"{ctx}: Specificity @{thr} {_estimate_text(report.specificity, pct)}",
        *_flag_lines(report),
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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
