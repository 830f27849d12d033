"""Reliability curves: per-bin mean predicted probability vs observed positive frequency.

Binning convention (shared with the ECE in :mod:`workbench.calibration.measures` and with netcal's ECE):
bins are ``[e_k, e_{k+1})`` and the last bin is closed at 1.0. 'uniform' uses equal-width edges on [0, 1];
'quantile' uses equal-mass edges (quantiles of the scores, first and last edge set to 0 and 1). sklearn's
``calibration_curve`` closes bins on the other side, so the two differ only for scores exactly on an edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import DEFAULT_LEVEL, wilson_interval
from workbench.evaluation.metrics import validate_binary

DEFAULT_BINS = 15
STRATEGIES = ("uniform", "quantile")


def bin_edges(p: np.ndarray, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> np.ndarray:
    """``n_bins + 1`` bin edges on [0, 1]: equal width ('uniform') or equal mass ('quantile')."""
    if int(n_bins) < 1:
        raise ValidationError(f"n_bins must be at least 1, got {n_bins}")
    n_bins = int(n_bins)
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.quantile(np.asarray(p, dtype=np.float64), np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
        return edges
    raise ValidationError(f"unknown binning strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def assign_bins(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each score: bins are ``[e_k, e_{k+1})``, the last one closed at the top edge."""
    idx = np.searchsorted(edges, np.asarray(p, dtype=np.float64), side="right") - 1
    return np.clip(idx, 0, edges.shape[0] - 2)


def reliability_curve(
    y: Any,
    p: Any,
    n_bins: int = DEFAULT_BINS,
    strategy: str = "uniform",
    split: str | None = None,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """Reliability data as a JSON-safe dict.

    Keys: ``split``, ``n``, ``positives``, ``strategy``, ``n_bins``, ``edges`` (n_bins + 1), and per bin
    (length n_bins, None for empty bins): ``counts``, ``positives_per_bin``, ``mean_predicted``,
    ``observed`` (positive frequency), ``wilson_low``/``wilson_high`` (Wilson interval of ``observed``).
    """
    y, p = validate_binary(y, p, what=f"split '{split}'" if split else "reliability curve")
    edges = bin_edges(p, n_bins, strategy)
    idx = assign_bins(p, edges)
    k = edges.shape[0] - 1
    counts = np.bincount(idx, minlength=k)
    pos = np.bincount(idx, weights=y.astype(np.float64), minlength=k)
    sum_p = np.bincount(idx, weights=p, minlength=k)
    mean_pred: list[float | None] = []
    observed: list[float | None] = []
    lows: list[float | None] = []
    highs: list[float | None] = []
    for c, s, pp in zip(counts, sum_p, pos, strict=True):
        if c == 0:
            mean_pred.append(None)
            observed.append(None)
            lows.append(None)
            highs.append(None)
            continue
        mean_pred.append(float(s / c))
        observed.append(float(pp / c))
        wi = wilson_interval(int(round(pp)), int(c), level)
        lows.append(wi[0])
        highs.append(wi[1])
    return {
        "split": split,
        "n": int(y.shape[0]),
        "positives": int(y.sum()),
        "strategy": strategy,
        "n_bins": int(k),
        "level": float(level),
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "positives_per_bin": [int(round(v)) for v in pos],
        "mean_predicted": mean_pred,
        "observed": observed,
        "wilson_low": lows,
        "wilson_high": highs,
    }
