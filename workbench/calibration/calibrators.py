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

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from workbench.errors import ValidationError

EPS = 1e-7  # format 1 clipped probabilities here before taking logits
FORMAT_VERSION = 2
TIE_WEIGHT = 1e-9
_V1_LOGIT_LIMIT = math.log((1.0 - EPS) / EPS)  # |logit| reachable by format-1 calibrators (~16.1)
_FIT_EPS = float(np.finfo(np.float64).eps)


def clip_probabilities(p: np.ndarray) -> np.ndarray:
    """Clip to [EPS, 1 - EPS] (the format-1 convention) so logits stay finite."""
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities clipped to [EPS, 1 - EPS] (for callers that only have probabilities)."""
    q = clip_probabilities(p)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """log(sigmoid(z)) without underflow: -log(1 + exp(-z))."""
    return -np.logaddexp(0.0, -np.asarray(z, dtype=np.float64))


def tie_break(calibrated: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mix in a strictly increasing function of the raw logit so equal outputs order by logit.

    ``(1 - TIE_WEIGHT) * calibrated + TIE_WEIGHT * (0.5 + atan(z) / pi)`` stays inside [0, 1], moves no
    value by more than 1e-9, and separates logits 25 and 30 (unlike any float sigmoid of them).
    """
    return (1.0 - TIE_WEIGHT) * calibrated + TIE_WEIGHT * (0.5 + np.arctan(z) / np.pi)


@contextmanager
def _quiet_netcal() -> Iterator[None]:
    """netcal/pyro emit deprecation chatter and tqdm bars on every fit; keep logs readable."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _check_z(z: Any, what: str = "logits") -> np.ndarray:
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValidationError(f"{what} must be a 1-D array of positive-class logits, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValidationError(f"{what}: {int((~np.isfinite(arr)).sum())} values are NaN or infinite")
    return arr


def _check_fit_inputs(z: Any, y: Any, method: str) -> tuple[np.ndarray, np.ndarray]:
    z_arr = _check_z(z)
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or y_arr.shape[0] != z_arr.shape[0]:
        raise ValidationError(
            f"{method} calibration: {y_arr.shape} labels do not match {z_arr.shape[0]} logits"
        )
    if not np.isin(y_arr.astype(np.float64), (0.0, 1.0)).all():
        raise ValidationError(f"{method} calibration: labels must be 0 or 1")
    y_int = y_arr.astype(np.int64)
    positives = int(y_int.sum())
    if positives == 0 or positives == y_int.shape[0]:
        raise ValidationError(
            f"{method} calibration needs both classes to fit; got {positives} positive of {y_int.shape[0]}"
        )
    return z_arr, y_int


def _fit_probabilities(u: np.ndarray) -> np.ndarray:
    """float64 probabilities for netcal, kept off exactly 0 and 1 (netcal takes logs of them)."""
    return np.clip(sigmoid(u), _FIT_EPS, 1.0 - _FIT_EPS)


def platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's (1999) smoothed targets, (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2) for negatives.

    The scaling methods (temperature, Platt, beta) fit these instead of 0/1, as scikit-learn's sigmoid
    calibration does: on (nearly) separable validation the 0/1 maximum-likelihood weight runs away and
    the calibrator turns overconfident (T = 0.17 on a 120-case example), while these keep it finite.
    """
    y = np.asarray(y, dtype=np.float64)
    n_pos = float(y.sum())
    n_neg = float(y.shape[0] - n_pos)
    return np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def _finite(value: Any, name: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} is not finite")
    return v


class Calibrator:
    """Base class; subclasses set ``method`` and implement ``_fit``, ``_transform``, ``_params``, ``_load_params``.

    ``_fit`` and ``_transform`` receive prior-corrected logits ``u = z - prior_offset`` (float64).
    """

    method: ClassVar[str] = ""

    def __init__(self, prior_offset: float = 0.0) -> None:
        self.prior_offset = _finite(prior_offset, "prior_offset")
        self.fitted = False
        self.format_version = FORMAT_VERSION
        self.n_fit: int | None = None
        self.positives_fit: int | None = None
        self.backend: Any = None  # the fitted netcal object (in memory only; never serialised)

    # -- contract ------------------------------------------------------------------------------------
    def fit(self, z: Any, y: Any) -> Calibrator:
        """Fit on validation logits ``z`` and labels ``y``; returns self."""
        z_arr, y_arr = _check_fit_inputs(z, y, self.method)
        self._fit(z_arr - self.prior_offset, y_arr)
        self.fitted = True
        self.format_version = FORMAT_VERSION
        self.n_fit = int(y_arr.shape[0])
        self.positives_fit = int(y_arr.sum())
        return self

    def transform(self, z: Any) -> np.ndarray:
        """Calibrated probabilities (float64, in [0, 1], strictly increasing in ``z``) for raw logits ``z``."""
        if not self.fitted:
            raise ValidationError(
                f"{self.method} calibrator is not fitted; call fit(z, y) or load it from JSON"
            )
        z_arr = _check_z(z)
        u = z_arr - self.prior_offset
        if self.format_version == 1:  # fitted on probabilities clipped at 1e-7
            u = np.clip(u, -_V1_LOGIT_LIMIT, _V1_LOGIT_LIMIT)
        return tie_break(np.clip(self._transform(u), 0.0, 1.0), z_arr)

    def fit_transform(self, z: Any, y: Any) -> np.ndarray:
        return self.fit(z, y).transform(z)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict with the method and the fitted parameters (enough to rebuild ``transform``)."""
        if not self.fitted:
            raise ValidationError(f"{self.method} calibrator is not fitted; nothing to save")
        return {
            "method": self.method,
            "format_version": self.format_version,
            "input": "logit",
            "prior_offset": self.prior_offset,
            "params": self._params(),
            "tie_weight": TIE_WEIGHT,
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
        try:
            version = int(d.get("format_version", 1))
        except (TypeError, ValueError):
            raise ValidationError(
                f"calibration JSON has a bad format_version {d.get('format_version')!r}"
            ) from None
        if version > FORMAT_VERSION:
            raise ValidationError(f"calibration JSON format {version} is newer than this workbench")
        try:
            obj = target(prior_offset=d.get("prior_offset", 0.0) or 0.0)
            obj.format_version = version
            obj._load_params(d.get("params") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"{target.method} calibration JSON has bad parameters: {exc}") from exc
        fitted_on = d.get("fitted_on") or {}
        obj.n_fit, obj.positives_fit = fitted_on.get("n"), fitted_on.get("positives")
        obj.fitted = True
        return obj

    def __repr__(self) -> str:
        state = self._params() if self.fitted else "unfitted"
        return f"{type(self).__name__}({state}, prior_offset={self.prior_offset:g})"

    # -- to implement --------------------------------------------------------------------------------
    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _transform(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError


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


class IsotonicCalibrator(Calibrator):
    """Isotonic regression via ``netcal.binning.IsotonicRegression`` (monotone, piecewise linear).

    netcal fits on float64 probabilities; the fitted thresholds are stored as logits (format 2), so the
    curve is interpolated in logit space and never collapses above a logit of ~17. Outside the fitted
    range the end values are used. Format 1 stored probability thresholds; those still interpolate on p.
    """

    method = "isotonic"

    def __init__(self, prior_offset: float = 0.0) -> None:
        super().__init__(prior_offset)
        self.x: np.ndarray | None = None  # thresholds: logits (format 2) or probabilities (format 1)
        self.y: np.ndarray | None = None

    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        from netcal.binning import IsotonicRegression

        model = IsotonicRegression()
        with _quiet_netcal():
            model.fit(sigmoid(u), y)
        iso = model._iso
        # sklearn's thresholds are a subset of the fitted inputs: map each back to its exact logit.
        p_fit = sigmoid(u)
        order = np.argsort(p_fit, kind="stable")
        idx = np.searchsorted(p_fit[order], np.asarray(iso.X_thresholds_, dtype=np.float64))
        idx = np.clip(idx, 0, u.shape[0] - 1)
        self.x = np.maximum.accumulate(u[order][idx])
        self.y = np.asarray(iso.y_thresholds_, dtype=np.float64).copy()
        self.backend = model

    def _transform(self, u: np.ndarray) -> np.ndarray:
        xs = sigmoid(u) if self.format_version == 1 else u
        if self.x.shape[0] == 1:
            return np.full(u.shape, self.y[0])
        return np.interp(np.clip(xs, self.x[0], self.x[-1]), self.x, self.y)

    def _params(self) -> dict[str, Any]:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.x, self.y = _monotone_pair(params["x"], params["y"], "x", "y")


def _monotone_pair(x: Any, y: Any, xn: str, yn: str) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or ya.ndim != 1 or xa.size == 0:
        raise ValueError(f"{xn} and {yn} must be non-empty lists")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError(f"{xn} and {yn} must be finite")
    if np.any(np.diff(xa) < 0) or np.any(np.diff(ya) < 0):
        raise ValueError(f"{xn} and {yn} must be non-decreasing")
    return xa, ya


def _monotone_bins(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pool adjacent violators over bin frequencies weighted by counts (empty bins weigh almost nothing)."""
    from sklearn.isotonic import isotonic_regression

    weights = np.maximum(np.asarray(counts, dtype=np.float64), 1e-6)
    return np.asarray(isotonic_regression(values, sample_weight=weights, increasing=True), dtype=np.float64)


def _bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """netcal's equal-width bin assignment: right-closed bins, the ends folded into the outer bins."""
    idx = np.digitize(p, edges, right=True) - 1
    return np.clip(idx, 0, edges.shape[0] - 2)


def _histogram_from_netcal(model: Any, p: np.ndarray) -> dict[str, Any]:
    edges = np.asarray(model._bin_bounds[0], dtype=np.float64)
    values = np.asarray(model._bin_map, dtype=np.float64).reshape(-1)
    counts = np.bincount(_bin_index(p, edges), minlength=values.shape[0])
    return {"edges": [float(e) for e in edges], "values": [float(v) for v in _monotone_bins(values, counts)]}


def _histogram_values(p: np.ndarray, hist: dict[str, Any]) -> np.ndarray:
    edges, values = hist["edges"], hist["values"]
    return values[_bin_index(p, edges)]


def _load_histogram(d: dict[str, Any]) -> dict[str, Any]:
    edges, values = _monotone_pair(d["edges"], d["values"], "edges", "values")
    if edges.shape[0] != values.shape[0] + 1:
        raise ValueError("a histogram needs one more edge than values")
    return {"edges": edges, "values": values}


class HistogramCalibrator(Calibrator):
    """Histogram binning (Zadrozny & Elkan 2001) via ``netcal.binning.HistogramBinning``: equal-width bins
    on ``sigmoid(u)``, each mapped to its observed frequency, made non-decreasing across bins."""

    method = "histogram"
    bins: ClassVar[int] = 10

    def __init__(self, prior_offset: float = 0.0) -> None:
        super().__init__(prior_offset)
        self.hist: dict[str, Any] | None = None

    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        from netcal.binning import HistogramBinning

        p = sigmoid(u)
        model = HistogramBinning(bins=self.bins)
        with _quiet_netcal():
            model.fit(p, y)
        self.hist = _load_histogram(_histogram_from_netcal(model, p))
        self.backend = model

    def _transform(self, u: np.ndarray) -> np.ndarray:
        return _histogram_values(sigmoid(u), self.hist)

    def _params(self) -> dict[str, Any]:
        return {
            "edges": [float(e) for e in self.hist["edges"]],
            "values": [float(v) for v in self.hist["values"]],
        }

    def _load_params(self, params: dict[str, Any]) -> None:
        self.hist = _load_histogram(params)


class BBQCalibrator(Calibrator):
    """Bayesian binning into quantiles (Naeini et al. 2015) via ``netcal.binning.BBQ``: histogram binnings of
    several sizes averaged with their BIC-based model weights, each made non-decreasing."""

    method = "bbq"

    def __init__(self, prior_offset: float = 0.0) -> None:
        super().__init__(prior_offset)
        self.models: list[dict[str, Any]] = []
        self.weights: np.ndarray | None = None

    def _fit(self, u: np.ndarray, y: np.ndarray) -> None:
        from netcal.binning import BBQ

        p = sigmoid(u)
        model = BBQ()
        with _quiet_netcal():
            model.fit(p, y)
        self.models = [_load_histogram(_histogram_from_netcal(m, p)) for m in model._binning_models]
        weights = np.asarray(model._model_scores, dtype=np.float64).reshape(-1)
        self.weights = weights / weights.sum()
        self.backend = model

    def _transform(self, u: np.ndarray) -> np.ndarray:
        p = sigmoid(u)
        return sum(w * _histogram_values(p, h) for w, h in zip(self.weights, self.models, strict=True))

    def _params(self) -> dict[str, Any]:
        return {
            "weights": [float(w) for w in self.weights],
            "models": [
                {"edges": [float(e) for e in h["edges"]], "values": [float(v) for v in h["values"]]}
                for h in self.models
            ],
        }

    def _load_params(self, params: dict[str, Any]) -> None:
        weights = np.asarray(params["weights"], dtype=np.float64)
        models = [_load_histogram(m) for m in params["models"]]
        if weights.ndim != 1 or weights.shape[0] != len(models) or not models:
            raise ValueError("bbq needs one weight per binning model")
        if not np.isfinite(weights).all() or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError("bbq weights must be finite, non-negative and not all zero")
        self.weights, self.models = weights / weights.sum(), models


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
DEFAULT_METHODS: tuple[str, ...] = (
    "identity",
    "temperature",
    "platt",
    "beta",
    "isotonic",
    "histogram",
    "bbq",
)
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
