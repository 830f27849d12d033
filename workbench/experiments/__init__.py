"""Experiments: the simulator that replays a fully labelled data set with the pool labels hidden, to
compare acquisition strategies with random sampling.

``config`` checks the settings, ``oracle`` holds the hidden labels, ``splits`` deals each seed's test set,
pool and initial labels, ``head`` trains the feature extractor and refits the head, ``protocol`` runs the
rounds (:func:`simulate`) and ``report`` summarises and writes the results.
"""

from workbench.experiments.config import (
    BASELINE,
    DEFAULT_FEATURE_EPOCHS,
    DEFAULT_HEAD_BATCH,
    DEFAULT_HEAD_EPOCHS,
    DEFAULT_STRATEGIES,
    parse_strategy,
)
from workbench.experiments.oracle import LabelledCase, load_labelled
from workbench.experiments.protocol import prevalence_threshold, simulate
from workbench.experiments.report import CURVE_COLUMNS, QUERY_COLUMNS, SUMMARY_COLUMNS, SimulationResult
from workbench.experiments.splits import SeedSplit, split_for_seed

__all__ = [
    "BASELINE",
    "CURVE_COLUMNS",
    "DEFAULT_FEATURE_EPOCHS",
    "DEFAULT_HEAD_BATCH",
    "DEFAULT_HEAD_EPOCHS",
    "DEFAULT_STRATEGIES",
    "QUERY_COLUMNS",
    "SUMMARY_COLUMNS",
    "LabelledCase",
    "SeedSplit",
    "SimulationResult",
    "load_labelled",
    "parse_strategy",
    "prevalence_threshold",
    "simulate",
    "split_for_seed",
]
