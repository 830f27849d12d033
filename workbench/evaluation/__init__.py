"""Evaluation of binary probabilities on a named split: sweep, confusion, AUROC/AUPRC with intervals."""

from workbench.evaluation.bootstrap import (
    bootstrap_distribution,
    bootstrap_interval,
    percentile_interval,
    stratified_bootstrap_weights,
    wilson_interval,
)
from workbench.evaluation.metrics import (
    SWEEP_THRESHOLDS,
    ClassReportRow,
    ConfusionMatrix,
    Estimate,
    SweepRow,
    average_precision,
    classification_report,
    confusion_at,
    roc_auc,
    sensitivity_specificity,
    threshold_sweep,
    validate_binary,
)
from workbench.evaluation.report import EvaluationReport, evaluate, format_report, plot_report

__all__ = [
    "SWEEP_THRESHOLDS",
    "ClassReportRow",
    "ConfusionMatrix",
    "Estimate",
    "EvaluationReport",
    "SweepRow",
    "average_precision",
    "bootstrap_distribution",
    "bootstrap_interval",
    "classification_report",
    "confusion_at",
    "evaluate",
    "format_report",
    "percentile_interval",
    "plot_report",
    "roc_auc",
    "sensitivity_specificity",
    "stratified_bootstrap_weights",
    "threshold_sweep",
    "validate_binary",
    "wilson_interval",
]
