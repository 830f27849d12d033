"""Decision curve analysis (Vickers & Elkin 2006): is acting on the model better than treating all or none?

AUROC says how well the model ranks; it does not say whether acting on its probabilities helps. A decision
curve answers that for a clinician whose *threshold probability* ``pt`` is the risk at which they would
just as soon refer as not (the odds ``pt / (1 - pt)`` weigh a false positive against a true positive):

    net benefit(pt) = TP / n - FP / n * pt / (1 - pt)

with a case called positive when ``p >= pt`` (the project's convention). It is compared with two
references on the same cases: *treat all* (everyone positive: ``prevalence - (1 - prevalence) * pt /
(1 - pt)``) and *treat none* (0). The model is useful at ``pt`` where its net benefit is above both.

The probabilities must be **calibrated**: ``pt`` is read as a risk, so a miscalibrated model's curve is
evaluated at the wrong thresholds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.metrics import validate_binary

#: Default grid: 0.01 to 0.50 by 0.01, the clinically relevant range for a referral decision (nobody
#: would need more than even odds of disease to refer a patient for colposcopy).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 51))


def check_thresholds(thresholds: Any) -> np.ndarray:
    """Threshold probabilities as a sorted-as-given float array; each must lie strictly inside (0, 1)."""
    t = np.asarray(DEFAULT_THRESHOLDS if thresholds is None else thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise ValidationError("decision curve: no threshold probabilities given")
    if not np.isfinite(t).all() or t.min() <= 0.0 or t.max() >= 1.0:
        raise ValidationError(
            "decision curve: threshold probabilities must lie strictly between 0 and 1 "
            f"(net benefit weighs false positives by pt / (1 - pt)); got range [{t.min():.4g}, {t.max():.4g}]"
        )
    return t


def net_benefit(y: Any, p: Any, pt: float) -> float:
    """Net benefit of calling ``p >= pt`` positive: ``TP/n - FP/n * pt / (1 - pt)``."""
    y, p = validate_binary(y, p, what="net benefit")
    t = float(check_thresholds([pt])[0])
    pred = p >= t
    n = y.shape[0]
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    return tp / n - fp / n * t / (1.0 - t)


def decision_curve(y: Any, p: Any, thresholds: Any = None, *, split: str) -> dict[str, Any]:
    """Net benefit of the model, treat-all and treat-none over threshold probabilities, on one named split.

    ``thresholds`` defaults to :data:`DEFAULT_THRESHOLDS` (0.01..0.50). Returns a JSON-safe dict with
    ``split``, ``n``, ``positives``, ``prevalence``, ``thresholds``, ``model``, ``treat_all``, ``treat_none``
    (net benefits, one per threshold), ``tp`` and ``fp`` (the model's counts at each threshold) and
    ``useful`` (True where the model's net benefit beats both references).
    """
    if not isinstance(split, str) or not split.strip():
        raise ValidationError("decision_curve() needs the name of the split the probabilities come from")
    y, p = validate_binary(y, p, what=f"split '{split}'")
    t = check_thresholds(thresholds)
    n = int(y.shape[0])
    positives = int(y.sum())
    prevalence = positives / n
    pred = p[None, :] >= t[:, None]
    tp = (pred & (y == 1)[None, :]).sum(axis=1)
    fp = (pred & (y == 0)[None, :]).sum(axis=1)
    odds = t / (1.0 - t)
    model = tp / n - fp / n * odds
    treat_all = prevalence - (1.0 - prevalence) * odds
    treat_none = np.zeros_like(t)
    useful = (model > treat_all) & (model > treat_none)
    return {
        "split": split,
        "n": n,
        "positives": positives,
        "prevalence": prevalence,
        "thresholds": t.tolist(),
        "model": model.tolist(),
        "treat_all": treat_all.tolist(),
        "treat_none": treat_none.tolist(),
        "tp": tp.astype(int).tolist(),
        "fp": fp.astype(int).tolist(),
        "useful": useful.tolist(),
    }
