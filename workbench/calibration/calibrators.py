"""Probability calibrators behind one small contract, fitted with netcal and stored as plain JSON.

Contract (every method): ``fit(p, y) -> self``, ``transform(p) -> np.ndarray``, ``to_json() -> dict``,
``from_json(d)`` (classmethod) and the attribute ``method``. Inputs are positive-class probabilities (1-D),
not logits.

Why the parameters are stored by us: netcal's ``save_model`` is broken on current torch, and loading a
calibration should not need torch at all. After fitting with netcal we read the fitted parameters out,
and ``transform`` is always our numpy formula, identical before and after a JSON round trip:

* temperature: ``sigmoid(w * logit(p))`` with netcal's weight ``w`` (its ``.temperature``); T = 1 / w;
* platt: ``sigmoid(w * logit(p) + b)``;
* beta: ``sigmoid(a * log(p) - b * log(1 - p) + c)`` with a, b >= 0 (Kull et al. 2017);
* isotonic: piecewise-linear interpolation through the fitted (x, y) thresholds, clipped at the ends.

netcal traps handled here: inputs are cast to float64 (float32 makes netcal's MLE fit a silent no-op that
returns w = 1) and clipped to [1e-7, 1 - 1e-7] before any logit, both when fitting and transforming.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from workbench.errors import ValidationError

EPS = 1e-7
FORMAT_VERSION = 1


def clip_probabilities(p: np.ndarray) -> np.ndarray:
    """Clip to [EPS, 1 - EPS] so logits stay finite."""
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of clipped probabilities."""
    q = clip_probabilities(p)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


@contextmanager
def _quiet_netcal() -> Iterator[None]:
    """netcal/pyro emit deprecation chatter on every fit; keep logs readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _check_p(p: Any, what: str = "probabilities") -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValidationError(
            f"{what} must be a 1-D array of positive-class probabilities, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValidationError(f"{what}: {int((~np.isfinite(arr)).sum())} values are NaN or infinite")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValidationError(f"{what} must lie in [0, 1]; found range [{arr.min():.4g}, {arr.max():.4g}]")
    return arr


def _check_fit_inputs(p: Any, y: Any, method: str) -> tuple[np.ndarray, np.ndarray]:
    p_arr = _check_p(p)
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or y_arr.shape[0] != p_arr.shape[0]:
        raise ValidationError(
            f"{method} calibration: {y_arr.shape} labels do not match {p_arr.shape[0]} probabilities"
        )
    if not np.isin(y_arr.astype(np.float64), (0.0, 1.0)).all():
        raise ValidationError(f"{method} calibration: labels must be 0 or 1")
    y_int = y_arr.astype(np.int64)
    positives = int(y_int.sum())
    if positives == 0 or positives == y_int.shape[0]:
        raise ValidationError(
            f"{method} calibration needs both classes to fit; got {positives} positive of {y_int.shape[0]}"
        )
    return p_arr, y_int


class Calibrator:
    """Base class; subclasses set ``method`` and implement ``_fit``, ``_transform`` and ``_params``."""

    method: ClassVar[str] = ""

    def __init__(self) -> None:
        self.fitted = False
        self.n_fit: int | None = None
        self.positives_fit: int | None = None
        self.backend: Any = None  # the fitted netcal object (in memory only; never serialised)

    # -- contract ------------------------------------------------------------------------------------
    def fit(self, p: Any, y: Any) -> Calibrator:
        """Fit on validation probabilities ``p`` and labels ``y``; returns self."""
        p_arr, y_arr = _check_fit_inputs(p, y, self.method)
        self._fit(p_arr, y_arr)
        self.fitted = True
        self.n_fit = int(y_arr.shape[0])
        self.positives_fit = int(y_arr.sum())
        return self

    def transform(self, p: Any) -> np.ndarray:
        """Calibrated probabilities (float64, in [0, 1]) for raw probabilities ``p``."""
        if not self.fitted:
            raise ValidationError(
                f"{self.method} calibrator is not fitted; call fit(p, y) or load it from JSON"
            )
        out = self._transform(_check_p(p))
        return np.clip(out, 0.0, 1.0)

    def fit_transform(self, p: Any, y: Any) -> np.ndarray:
        return self.fit(p, y).transform(p)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict with the method and the fitted parameters (enough to rebuild ``transform``)."""
        if not self.fitted:
            raise ValidationError(f"{self.method} calibrator is not fitted; nothing to save")
        return {
            "method": self.method,
            "format_version": FORMAT_VERSION,
            "params": self._params(),
            "clip": EPS,
            "fitted_on": {"n": self.n_fit, "positives": self.positives_fit},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibrator:
        """Rebuild a fitted calibrator from :meth:`to_json` output (no netcal or torch needed).

        Called on the base class it dispatches on ``d['method']``.
        """
        if not isinstance(d, dict) or "method" not in d:
            raise ValidationError("calibration JSON must be an object with a 'method' field")
        target = CALIBRATORS.get(str(d["method"]))
        if target is None:
            raise ValidationError(
                f"unknown calibration method {d['method']!r}; valid: {', '.join(CALIBRATORS)}"
            )
        if cls is not Calibrator and target is not cls:
            raise ValidationError(f"JSON holds a {d['method']!r} calibrator, not {cls.method!r}")
        if int(d.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise ValidationError(
                f"calibration JSON format {d['format_version']} is newer than this workbench"
            )
        obj = target()
        try:
            obj._load_params(d.get("params") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"{target.method} calibration JSON has bad parameters: {exc}") from exc
        fitted_on = d.get("fitted_on") or {}
        obj.n_fit, obj.positives_fit = fitted_on.get("n"), fitted_on.get("positives")
        obj.fitted = True
        return obj

    def __repr__(self) -> str:
        state = self._params() if self.fitted else "unfitted"
        return f"{type(self).__name__}({state})"

    # -- to implement --------------------------------------------------------------------------------
    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _transform(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError


def _finite(value: Any, name: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} is not finite")
    return v


class IdentityCalibrator(Calibrator):
    """No calibration: returns the probabilities unchanged (the 'before' baseline)."""

    method = "identity"

    def fit(self, p: Any, y: Any) -> Calibrator:
        p_arr = _check_p(p)
        y_arr = np.asarray(y)
        if y_arr.shape[0] != p_arr.shape[0]:
            raise ValidationError(
                f"identity calibration: {y_arr.shape[0]} labels for {p_arr.shape[0]} probabilities"
            )
        self.fitted = True
        self.n_fit, self.positives_fit = int(p_arr.shape[0]), int(np.asarray(y_arr, dtype=np.float64).sum())
        return self

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return p.copy()

    def _params(self) -> dict[str, Any]:
        return {}

    def _load_params(self, params: dict[str, Any]) -> None:
        return None


class TemperatureCalibrator(Calibrator):
    """Temperature scaling (Guo et al. 2017) via ``netcal.scaling.TemperatureScaling`` (MLE).

    netcal fits a single weight ``w`` on the logit, with no bias: ``p' = sigmoid(w * logit(p))``; its
    ``.temperature`` property returns ``w``. We report ``temperature = 1 / w`` (T > 1 softens).
    """

    method = "temperature"

    def __init__(self) -> None:
        super().__init__()
        self.weight: float | None = None

    @property
    def temperature(self) -> float | None:
        if self.weight is None or self.weight <= 0:
            return None
        return 1.0 / self.weight

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        from netcal.scaling import TemperatureScaling

        model = TemperatureScaling(method="mle")
        with _quiet_netcal():
            model.fit(clip_probabilities(p), y, tensorboard=False)
        self.weight = float(np.asarray(model.temperature, dtype=np.float64).reshape(-1)[0])
        self.backend = model

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return sigmoid(self.weight * logit(p))

    def _params(self) -> dict[str, Any]:
        return {"weight": self.weight, "temperature": self.temperature}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.weight = _finite(params["weight"], "weight")


class PlattCalibrator(Calibrator):
    """Platt / logistic calibration via ``netcal.scaling.LogisticCalibration``: ``sigmoid(w*logit(p) + b)``."""

    method = "platt"

    def __init__(self) -> None:
        super().__init__()
        self.weight: float | None = None
        self.bias: float | None = None

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        from netcal.scaling import LogisticCalibration

        model = LogisticCalibration(method="mle")
        with _quiet_netcal():
            model.fit(clip_probabilities(p), y, tensorboard=False)
        self.weight = float(np.asarray(model.weights, dtype=np.float64).reshape(-1)[0])
        self.bias = float(np.asarray(model.intercept, dtype=np.float64).reshape(-1)[0])
        self.backend = model

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return sigmoid(self.weight * logit(p) + self.bias)

    def _params(self) -> dict[str, Any]:
        return {"weight": self.weight, "bias": self.bias}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.weight = _finite(params["weight"], "weight")
        self.bias = _finite(params["bias"], "bias")


class BetaCalibrator(Calibrator):
    """Beta calibration via ``netcal.scaling.BetaCalibration``: ``sigmoid(a*log p - b*log(1-p) + c)``."""

    method = "beta"

    def __init__(self) -> None:
        super().__init__()
        self.a: float | None = None
        self.b: float | None = None
        self.c: float | None = None

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        from netcal.scaling import BetaCalibration

        model = BetaCalibration(method="mle")
        with _quiet_netcal():
            model.fit(clip_probabilities(p), y, tensorboard=False)
        # netcal's BetaCalibration.weights property is broken (reads a missing key); read the sites directly.
        weights = np.asarray(model._sites["weights"]["values"], dtype=np.float64).reshape(-1)
        bias = np.asarray(model._sites["bias"]["values"], dtype=np.float64).reshape(-1)
        self.a, self.b, self.c = float(weights[0]), float(weights[1]), float(bias[0])
        self.backend = model

    def _transform(self, p: np.ndarray) -> np.ndarray:
        q = clip_probabilities(p)
        return sigmoid(self.a * np.log(q) - self.b * np.log1p(-q) + self.c)

    def _params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "c": self.c}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.a = _finite(params["a"], "a")
        self.b = _finite(params["b"], "b")
        self.c = _finite(params["c"], "c")


class IsotonicCalibrator(Calibrator):
    """Isotonic regression via ``netcal.binning.IsotonicRegression`` (monotone, piecewise linear).

    The fitted sklearn thresholds are stored; outside the fitted range the end values are used.
    """

    method = "isotonic"

    def __init__(self) -> None:
        super().__init__()
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        from netcal.binning import IsotonicRegression

        model = IsotonicRegression()
        with _quiet_netcal():
            model.fit(p, y)
        iso = model._iso
        self.x = np.asarray(iso.X_thresholds_, dtype=np.float64).copy()
        self.y = np.asarray(iso.y_thresholds_, dtype=np.float64).copy()
        self.backend = model

    def _transform(self, p: np.ndarray) -> np.ndarray:
        if self.x.shape[0] == 1:
            return np.full(p.shape, self.y[0])
        return np.interp(np.clip(p, self.x[0], self.x[-1]), self.x, self.y)

    def _params(self) -> dict[str, Any]:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}

    def _load_params(self, params: dict[str, Any]) -> None:
        x = np.asarray(params["x"], dtype=np.float64)
        y = np.asarray(params["y"], dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError("x and y must be non-empty lists of equal length")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("x and y must be finite")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("x and y must be non-decreasing")
        self.x, self.y = x, y


CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        IdentityCalibrator,
        TemperatureCalibrator,
        IsotonicCalibrator,
        PlattCalibrator,
        BetaCalibrator,
    )
}
ALIASES = {"none": "identity", "temperature_scaling": "temperature", "logistic": "platt"}


def get_calibrator(name: str) -> Calibrator:
    """A new, unfitted calibrator for ``name`` (case-insensitive); ValidationError lists the valid names."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CALIBRATORS:
        raise ValidationError(f"unknown calibration method {name!r}; valid: {', '.join(CALIBRATORS)}")
    return CALIBRATORS[key]()


def calibrator_from_json(d: dict[str, Any]) -> Calibrator:
    """Rebuild any fitted calibrator from its JSON (dispatches on ``d['method']``)."""
    return Calibrator.from_json(d)
