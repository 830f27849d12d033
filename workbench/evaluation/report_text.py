"""Plain-text rendering of an evaluation report: the card's tables, every metric line naming its split.

Flagged intervals (zero width, or pinned at 0/1 with the estimate on it) are marked with ``!`` and
explained in footnotes that name the split, n and positives; a baseline section is appended when the
report carries one (:func:`workbench.evaluation.baseline_verdict.baseline_lines`).
"""

from __future__ import annotations

from typing import Any

from workbench.evaluation.baseline_verdict import baseline_lines
from workbench.evaluation.metrics import (
    Estimate,
)
from workbench.evaluation.report import EvaluationReport


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
