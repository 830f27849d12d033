"""Evaluation report for one named split: the card's tables, with intervals, as data, text and a figure.

Every number is tied to the split it was computed on: the report stores the split name and class counts,
and :func:`format_report` repeats them on every metric line, so no line can be quoted out of context.

AUROC gets a DeLong interval (logit scale, :mod:`workbench.evaluation.delong`) beside the bootstrap one.
An interval that cannot be evidence of precision (zero width, or pinned at 0/1 with the estimate on it, as
on a perfectly separated split) carries a ``flag`` saying what to read instead (the exact interval of a
proportion, the exact bound of a perfect AUROC); the text marks it with ``!`` and a footnote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from workbench.evaluation.confusion import (
    SWEEP_THRESHOLDS,
    ClassReportRow,
    ConfusionMatrix,
    SweepRow,
    classification_report,
    confusion_at,
    confusion_statistics,
    threshold_sweep,
)
from workbench.evaluation.delong import delong_auroc
from workbench.evaluation.metrics import (
    Estimate,
    auroc_statistic,
    average_precision_statistic,
    check_threshold,
    exact_proportion_interval,
    interval_flag,
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
