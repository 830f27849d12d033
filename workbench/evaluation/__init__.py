"""Evaluation of binary probabilities on a named split: sweep, confusion, AUROC/AUPRC with intervals,
DeLong variance and paired test, decision curves."""

from workbench.evaluation.bootstrap import (
    bootstrap_distribution,
    bootstrap_interval,
    percentile_interval,
    stratified_bootstrap_weights,
    wilson_interval,
)
from workbench.evaluation.confusion import (
    SWEEP_THRESHOLDS,
    ClassReportRow,
    ConfusionMatrix,
    SweepRow,
    classification_report,
    confusion_at,
    sensitivity_specificity,
    threshold_sweep,
)
from workbench.evaluation.decision_curve import decision_curve, net_benefit
from workbench.evaluation.delong import (
    DelongAUROC,
    delong_auroc,
    delong_covariance,
    delong_paired_test,
    exact_auroc_bound,
    placement_values,
)
from workbench.evaluation.metrics import (
    Estimate,
    average_precision,
    exact_proportion_interval,
    interval_flag,
    roc_auc,
    validate_binary,
)
from workbench.evaluation.report import EvaluationReport, evaluate
from workbench.evaluation.report_plot import plot_report
from workbench.evaluation.report_text import format_report

__all__ = [
    "SWEEP_THRESHOLDS",
    "ClassReportRow",
    "ConfusionMatrix",
    "DelongAUROC",
    "Estimate",
    "EvaluationReport",
    "SweepRow",
    "average_precision",
    "bootstrap_distribution",
    "bootstrap_interval",
    "classification_report",
    "confusion_at",
    "decision_curve",
    "delong_auroc",
    "delong_covariance",
    "delong_paired_test",
    "evaluate",
    "exact_auroc_bound",
    "exact_proportion_interval",
    "format_report",
    "interval_flag",
    "net_benefit",
    "percentile_interval",
    "placement_values",
    "plot_report",
    "roc_auc",
    "sensitivity_specificity",
    "stratified_bootstrap_weights",
    "threshold_sweep",
    "validate_binary",
    "wilson_interval",
]
