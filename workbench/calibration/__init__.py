"""Calibration: calibrators (netcal-fitted, JSON-stored), measures, reliability curves, thresholds."""

from workbench.calibration.calibrator_base import Calibrator
from workbench.calibration.calibrators import CALIBRATORS, calibrator_from_json, get_calibrator
from workbench.calibration.compare import CrossFitResult, assess, compare_paired, cross_fit
from workbench.calibration.measures import brier, ece, mce, measure_calibration, nll
from workbench.calibration.plots import plot_reliability
from workbench.calibration.reliability import reliability_curve
from workbench.calibration.threshold_choice import (
    ThresholdChoice,
    ThresholdOutcome,
    apply_threshold,
    choose_threshold,
)
from workbench.calibration.thresholds import ThresholdPolicy, parse_policy

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "CrossFitResult",
    "ThresholdChoice",
    "ThresholdOutcome",
    "ThresholdPolicy",
    "apply_threshold",
    "assess",
    "brier",
    "calibrator_from_json",
    "choose_threshold",
    "compare_paired",
    "cross_fit",
    "ece",
    "get_calibrator",
    "mce",
    "measure_calibration",
    "nll",
    "parse_policy",
    "plot_reliability",
    "reliability_curve",
]
