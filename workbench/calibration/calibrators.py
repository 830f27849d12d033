"""Calibrators behind one small contract: fitted with netcal on float64 logits, stored as plain JSON.

Contract (every method): ``fit(z, y) -> self``, ``transform(z) -> np.ndarray``, ``to_json() -> dict``,
``from_json(d)`` (classmethod) and the attribute ``method``. Inputs are the model's raw **logits**
(1-D, float64), never probabilities: a float32 probability saturates to exactly 1.0 above a logit of
~17 and then ties with every other confident case. Each calibrator may carry a ``prior_offset``
(the logit shift that imbalance handling put into training, see :mod:`workbench.model.prior`);
it is subtracted first, so every method (identity included) starts from the real base rate.

Why the parameters are stored by us: netcal's ``save_model`` is broken on current torch, and loading a
calibration should not need torch at all. After fitting with netcal we read the fitted parameters out,
and ``transform`` is always our numpy formula on ``u = z - prior_offset``, identical before and after a
JSON round trip:

* identity: ``sigmoid(u)``;
* temperature: ``sigmoid(w * u)`` with netcal's weight ``w`` (its ``.temperature``); T = 1 / w;
  (temperature, Platt and beta are fitted to Platt's smoothed targets, see :func:`platt_targets`)
* platt: ``sigmoid(w * u + b)``;
* beta: ``sigmoid(a * log sigmoid(u) - b * log sigmoid(-u) + c)`` with a, b >= 0 (Kull et al. 2017);
* isotonic: piecewise-linear interpolation in logit space through the fitted thresholds, flat outside;
* histogram: equal-width bins on ``sigmoid(u)`` (netcal ``HistogramBinning``), bin frequencies made
  non-decreasing by pooling adjacent violators (empty or small bins otherwise reorder cases);
* bbq: Bayesian binning into quantiles (netcal ``BBQ``): a score-weighted sum of such binnings.

Ties never depend on row order: isotonic and binning outputs are step functions, so every method's output
is mixed with a strictly increasing function of the raw logit at weight :data:`TIE_WEIGHT` (1e-9, far below
any reported digit). Ranking by calibrated probability is then ranking by raw logit within a step, for the
queue, the threshold and the exported model alike.

netcal traps handled here: it gets float64 probabilities ``sigmoid(u)`` (float32 makes its MLE fit a silent
no-op returning w = 1), which do not saturate before |u| ~ 36. Format 1 JSON (fitted on probabilities
clipped at 1e-7) still loads and gives the same outputs as before.
"""

from __future__ import annotations

from typing import Any

from workbench.calibration.binning import BBQCalibrator, HistogramCalibrator, IsotonicCalibrator
from workbench.calibration.calibrator_base import Calibrator
from workbench.calibration.scaling import (
    BetaCalibrator,
    IdentityCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
)
from workbench.errors import ValidationError

CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        IdentityCalibrator,
        TemperatureCalibrator,
        IsotonicCalibrator,
        PlattCalibrator,
        BetaCalibrator,
        HistogramCalibrator,
        BBQCalibrator,
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(CALIBRATORS)
ALIASES = {
    "none": "identity",
    "temperature_scaling": "temperature",
    "logistic": "platt",
    "histogram_binning": "histogram",
    "binning": "histogram",
}


def get_calibrator(name: str, prior_offset: float = 0.0) -> Calibrator:
    """A new, unfitted calibrator for ``name`` (case-insensitive); ValidationError lists the valid names."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CALIBRATORS:
        raise ValidationError(f"unknown calibration method {name!r}; valid: {', '.join(CALIBRATORS)}")
    return CALIBRATORS[key](prior_offset=prior_offset)


def calibrator_from_json(d: dict[str, Any]) -> Calibrator:
    """Rebuild any fitted calibrator from its JSON (dispatches on ``d['method']``)."""
    return Calibrator.from_json(d)
