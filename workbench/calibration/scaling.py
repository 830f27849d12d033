"""Scaling calibrators: identity, temperature, Platt and beta (smooth, parametric maps of the logit).

Temperature, Platt and beta are fitted by netcal on float64 probabilities against Platt's smoothed
targets (:func:`~workbench.calibration.calibrator_base.platt_targets`); ``transform`` is our formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.calibration.calibrator_base import (
    Calibrator,
    _check_z,
    _finite,
    _fit_probabilities,
    _quiet_netcal,
    log_sigmoid,
    platt_targets,
    sigmoid,
)
from workbench.errors import ValidationError


class IdentityCalibrator(Calibrator):
    """No fitted calibration: ``sigmoid(z - prior_offset)``, the model's own probability at the real base rate."""

    method = "identity"

    def fit(self, z: Any, y: Any) -> Calibrator:
        z_arr = _check_z(z)
        y_arr = np.asarray(y)
        if y_arr.shape[0] != z_arr.shape[0]:
            raise ValidationError(
                f"identity calibration: {y_arr.shape[0]} labels for {z_arr.shape[0]} logits"
            )
        self.fitted = True
        self.n_fit, self.positives_fit = int(z_arr.shape[0]), int(np.asarray(y_arr, dtype=np.float64).sum())
        return self

    def _transform(self, u: np.ndarray) -> np.ndarray:
        return sigmoid(u)

    def _params(self) -> dict[str, Any]:
        return {}

    def _load_params(self, params: dict[str, Any]) -> None:
        return None


class TemperatureCalibrator(Calibrator):
    """Temperature scaling (Guo et al. 2017) via ``netcal.scaling.TemperatureScaling`` (MLE).

    netcal fits a single weight ``w`` on the logit, with no bias: ``p' = sigmoid(w * u)``; its
    ``.temperature`` property returns ``w``. We report ``temperature = 1 / w`` (T > 1 softens). It has no
    bias, which is why the prior offset is removed first.
    """

    method = "temperature"

    def __init__(self, prior_offset: float = 0.0) -> None:
        super().__init__(prior_offset)
        self.weight: float | None = None

    @property
    def temperature(self) -> float | None:
        if self.weight is None or self.weight <= 0:
            return None
        return 1.0 / self.weight

    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        from netcal.scaling import TemperatureScaling

        model = TemperatureScaling(method="mle")
        with _quiet_netcal():
            model.fit(_fit_probabilities(u), platt_targets(y), tensorboard=False)
        self.weight = float(np.asarray(model.temperature, dtype=np.float64).reshape(-1)[0])
        self.backend = model

    def _transform(self, u: np.ndarray) -> np.ndarray:
        return sigmoid(self.weight * u)

    def _params(self) -> dict[str, Any]:
        return {"weight": self.weight, "temperature": self.temperature}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.weight = _finite(params["weight"], "weight")


class PlattCalibrator(Calibrator):
    """Platt / logistic calibration via ``netcal.scaling.LogisticCalibration``: ``sigmoid(w * u + b)``."""

    method = "platt"

    def __init__(self, prior_offset: float = 0.0) -> None:
        super().__init__(prior_offset)
        self.weight: float | None = None
        self.bias: float | None = None

    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        from netcal.scaling import LogisticCalibration

        model = LogisticCalibration(method="mle")
        with _quiet_netcal():
            model.fit(_fit_probabilities(u), platt_targets(y), tensorboard=False)
        self.weight = float(np.asarray(model.weights, dtype=np.float64).reshape(-1)[0])
        self.bias = float(np.asarray(model.intercept, dtype=np.float64).reshape(-1)[0])
        self.backend = model

    def _transform(self, u: np.ndarray) -> np.ndarray:
        return sigmoid(self.weight * u + self.bias)

    def _params(self) -> dict[str, Any]:
        return {"weight": self.weight, "bias": self.bias}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.weight = _finite(params["weight"], "weight")
        self.bias = _finite(params["bias"], "bias")


class BetaCalibrator(Calibrator):
    """Beta calibration via ``netcal.scaling.BetaCalibration``: ``sigmoid(a*log p - b*log(1-p) + c)``.

    ``log p`` and ``log(1 - p)`` are computed from the logit (``log_sigmoid(±u)``), so they never saturate.
    """

    method = "beta"

    def __init__(self, prior_offset: float = 0.0) -> None:
        super().__init__(prior_offset)
        self.a: float | None = None
        self.b: float | None = None
        self.c: float | None = None

    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        from netcal.scaling import BetaCalibration

        model = BetaCalibration(method="mle")
        with _quiet_netcal():
            model.fit(_fit_probabilities(u), platt_targets(y), tensorboard=False)
        # netcal's BetaCalibration.weights property is broken (reads a missing key); read the sites directly.
        weights = np.asarray(model._sites["weights"]["values"], dtype=np.float64).reshape(-1)
        bias = np.asarray(model._sites["bias"]["values"], dtype=np.float64).reshape(-1)
        self.a, self.b, self.c = float(weights[0]), float(weights[1]), float(bias[0])
        self.backend = model

    def _transform(self, u: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * log_sigmoid(u) - self.b * log_sigmoid(-u) + self.c)

    def _params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "c": self.c}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.a = _finite(params["a"], "a")
        self.b = _finite(params["b"], "b")
        self.c = _finite(params["c"], "c")
