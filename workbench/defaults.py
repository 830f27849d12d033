"""Defaults shared by several layers, in one home at the foundation layer.

The job parameter models (``jobs.params``), calibration, the settings, the CLI and the UI all need the
same default threshold policy, calibration method list, split names and lease length. Defining them
here, importing nothing, keeps them in agreement and lets a low layer (``jobs``, ``db``) use them
without importing a higher one (``calibration``) for a constant.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Threshold policy used when none is given: sensitivity of at least 0.9 with 95 % confidence
#: (one-sided Clopper-Pearson bound); see :mod:`workbench.calibration.thresholds` for the forms.
DEFAULT_POLICY = "sensitivity>=0.9@95"

#: Calibration methods fitted when none are named, in this order (every name is a registered
#: calibrator, see :data:`workbench.calibration.calibrators.METHOD_NAMES`).
DEFAULT_METHODS: tuple[str, ...] = (
    "identity",
    "temperature",
    "platt",
    "beta",
    "isotonic",
    "histogram",
    "bbq",
)

#: The splits a case can belong to (the ``cases.split`` CHECK constraint lists the same names).
SPLITS: tuple[str, ...] = ("pool", "train", "val", "test")

#: How long a labeller holds a claimed queue item, in seconds, unless the settings say otherwise.
DEFAULT_LEASE_SECONDS = 600

#: Who ranks the pool for the labelling queue (``active.ranker``); ``auto`` compares on validation.
Ranker = Literal["auto", "version", "baseline"]
RANKERS: tuple[str, ...] = get_args(Ranker)
DEFAULT_RANKER = "auto"
