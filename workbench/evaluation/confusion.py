"""Counts at a threshold: the confusion matrix, sensitivity/specificity, the threshold sweep and the
per-class report, plus their weighted statistics for the bootstrap.

A case is predicted positive when ``p >= threshold``; precision is 0 when nothing is predicted positive
(the card's sweep rows above 0.6); rates undefined on a split are None, never a silent 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench.evaluation.bootstrap import Statistic
from workbench.evaluation.metrics import _opt_float, check_threshold, validate_binary

SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
CLASS_NAMES = ("Negative", "Positive")


@dataclass
class ConfusionMatrix:
    """Counts at one threshold; ``matrix`` is ``[[tn, fp], [fn, tp]]`` (rows: true Negative, Positive)."""

    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def n(self) -> int:
        return self.tn + self.fp + self.fn + self.tp

    @property
    def matrix(self) -> list[list[int]]:
        return [[self.tn, self.fp], [self.fn, self.tp]]

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

    @property
    def precision(self) -> float:
        """Positive predictive value; 0 when nothing is predicted positive (card convention)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def npv(self) -> float:
        return self.tn / (self.tn + self.fn) if self.tn + self.fn else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    @property
    def f1(self) -> float | None:
        """F1 of the positive class; None when the split has no positives (recall undefined)."""
        if self.tp + self.fn == 0:
            return None
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict[str, Any]:
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp, "matrix": self.matrix}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfusionMatrix:
        return cls(tn=int(d["tn"]), fp=int(d["fp"]), fn=int(d["fn"]), tp=int(d["tp"]))


def confusion_at(y: Any, p: Any, threshold: float) -> ConfusionMatrix:
    """Confusion matrix when predicting positive for ``p >= threshold``."""
    y, p = validate_binary(y, p)
    t = check_threshold(threshold)
    pred = p >= t
    pos = y == 1
    return ConfusionMatrix(
        tn=int((~pos & ~pred).sum()),
        fp=int((~pos & pred).sum()),
        fn=int((pos & ~pred).sum()),
        tp=int((pos & pred).sum()),
    )


def sensitivity_specificity(y: Any, p: Any, threshold: float) -> tuple[float | None, float | None]:
    """(sensitivity, specificity) at a threshold; each None when its class is absent."""
    cm = confusion_at(y, p, threshold)
    return cm.sensitivity, cm.specificity


@dataclass
class SweepRow:
    """One row of the card's threshold table, plus the counts behind it."""

    threshold: float
    accuracy: float
    precision: float
    recall: float | None
    f1: float | None
    tp: int
    fp: int
    tn: int
    fn: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("threshold", "accuracy", "precision", "recall", "f1"):
            d[k] = _opt_float(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepRow:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def threshold_sweep(y: Any, p: Any, thresholds: Any = SWEEP_THRESHOLDS) -> list[SweepRow]:
    """Accuracy, precision, recall and F1 at each threshold (default 0.00..1.00 by 0.05, as in the card)."""
    y, p = validate_binary(y, p)
    rows = []
    for t in thresholds:
        cm = confusion_at(y, p, t)
        rows.append(
            SweepRow(
                threshold=float(t),
                accuracy=cm.accuracy,
                precision=cm.precision,
                recall=cm.sensitivity,
                f1=cm.f1,
                tp=cm.tp,
                fp=cm.fp,
                tn=cm.tn,
                fn=cm.fn,
            )
        )
    return rows


@dataclass
class ClassReportRow:
    """One row of a classification report (per class, 'accuracy', 'macro avg' or 'weighted avg')."""

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "precision": _opt_float(self.precision),
            "recall": _opt_float(self.recall),
            "f1": _opt_float(self.f1),
            "support": int(self.support),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassReportRow:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def _avg(values: list[float | None], weights: list[int] | None = None) -> float | None:
    if any(v is None for v in values):
        return None
    if weights is None:
        return float(np.mean(values))
    total = sum(weights)
    return float(sum(v * w for v, w in zip(values, weights, strict=True)) / total) if total else None


def classification_report(y: Any, p: Any, threshold: float = 0.5) -> list[ClassReportRow]:
    """Per-class precision/recall/F1/support plus accuracy, macro and weighted averages (like sklearn).

    Precision of a class nobody is predicted as is 0; recall and F1 of an absent class are None.
    """
    cm = confusion_at(y, p, threshold)
    neg_support, pos_support = cm.tn + cm.fp, cm.tp + cm.fn
    neg_f1 = 2 * cm.tn / (2 * cm.tn + cm.fn + cm.fp) if neg_support else None
    rows = [
        ClassReportRow(CLASS_NAMES[0], cm.npv, cm.specificity, neg_f1, neg_support),
        ClassReportRow(CLASS_NAMES[1], cm.precision, cm.sensitivity, cm.f1, pos_support),
    ]
    supports = [neg_support, pos_support]
    macro = ClassReportRow(
        "macro avg",
        _avg([r.precision for r in rows]),
        _avg([r.recall for r in rows]),
        _avg([r.f1 for r in rows]),
        cm.n,
    )
    weighted = ClassReportRow(
        "weighted avg",
        _avg([r.precision for r in rows], supports),
        _avg([r.recall if r.support else 0.0 for r in rows], supports),
        _avg([r.f1 if r.support else 0.0 for r in rows], supports),
        cm.n,
    )
    return [*rows, ClassReportRow("accuracy", None, None, cm.accuracy, cm.n), macro, weighted]


# ----------------------------------------------------------------------------------------------------
# Weighted statistics: functions of a (B, n) weight matrix, used for point estimates and the bootstrap.


def confusion_statistics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Statistic]:
    """Weighted sensitivity, specificity, accuracy, precision and F1 at ``threshold`` (NaN when undefined)."""
    pred = p >= threshold
    pos = y == 1
    cols = np.stack([pos & pred, ~pos & pred, ~pos & ~pred, pos & ~pred], axis=1).astype(np.float64)

    def counts(w: np.ndarray) -> tuple[np.ndarray, ...]:
        c = w @ cols
        return c[:, 0], c[:, 1], c[:, 2], c[:, 3]

    def _div(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
        out = np.full(a.shape, empty, dtype=np.float64)
        np.divide(a, b, out=out, where=b > 0)
        return out

    def sensitivity(w: np.ndarray) -> np.ndarray:
        tp, _, _, fn = counts(w)
        return _div(tp, tp + fn, np.nan)

    def specificity(w: np.ndarray) -> np.ndarray:
        _, fp, tn, _ = counts(w)
        return _div(tn, tn + fp, np.nan)

    def accuracy(w: np.ndarray) -> np.ndarray:
        tp, fp, tn, fn = counts(w)
        return _div(tp + tn, tp + fp + tn + fn, np.nan)

    def precision(w: np.ndarray) -> np.ndarray:
        tp, fp, _, _ = counts(w)
        return _div(tp, tp + fp, 0.0)

    def f1(w: np.ndarray) -> np.ndarray:
        tp, fp, _, fn = counts(w)
        out = _div(2 * tp, 2 * tp + fp + fn, 0.0)
        out[(tp + fn) <= 0] = np.nan
        return out

    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "accuracy": accuracy,
        "precision": precision,
        "f1": f1,
    }
