"""The calibrator contract and the logit arithmetic every method shares.

:class:`Calibrator` fits on raw float64 logits minus the version's ``prior_offset``, transforms through
our own numpy formula (never a netcal object, so a JSON round trip gives identical outputs) and mixes in
a strictly increasing tie-break of the raw logit (:data:`TIE_WEIGHT`). The methods themselves live in
:mod:`workbench.calibration.scaling` and :mod:`workbench.calibration.binning`; the registry by name in
:mod:`workbench.calibration.calibrators`.
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
        from workbench.calibration.calibrators import CALIBRATORS  # the registry imports this module

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
