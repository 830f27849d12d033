"""Step-function calibrators: isotonic regression, histogram binning and BBQ (Bayesian binning).

Their outputs are monotone steps; bin frequencies are pooled into non-decreasing order so small or
empty bins never reorder cases, and the base class's tie-break orders cases within a step by logit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from workbench.calibration.calibrator_base import (
    Calibrator,
    _quiet_netcal,
    sigmoid,
)


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
