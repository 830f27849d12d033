"""Choosing an operating threshold by a policy on one split, and applying it to another.

The policies themselves (their grammar, the guarantee they promise, how a record reads) are in
:mod:`workbench.calibration.thresholds`; here a parsed policy meets the scores: candidate thresholds are
the distinct scores of the split, each choice records what it achieves with Wilson intervals and, for
guaranteed policies, the one-sided Clopper-Pearson lower bound or how many cases a guarantee would take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.calibration.thresholds import _PICK_HIGHEST, ThresholdPolicy, parse_policy
from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    clopper_pearson_lower,
    clopper_pearson_lower_many,
    clopper_pearson_min_total,
    wilson_interval,
)
from workbench.evaluation.confusion import ConfusionMatrix, confusion_at
from workbench.evaluation.metrics import Estimate, validate_binary

_TOL = 1e-12


_COUNTED = {
    "sensitivity": "positives",
    "specificity": "negatives",
    "precision": "cases predicted positive",
    "npv": "cases predicted negative",
}
_SPLIT_WORDS = {"val": "validation", "train": "training"}


@dataclass
class OperatingPoint:
    """A threshold and what it achieves on one split (sensitivity/specificity/precision with Wilson CIs).

    ``met`` says whether the policy's constraint holds on this split by its point estimate (None for
    unconstrained policies or when it cannot be judged); ``chosen_on`` is the split the threshold was
    picked on. For guaranteed policies (``...@L``): ``guaranteed`` whether the choice met the
    Clopper-Pearson bound on ``chosen_on`` (False: the point policy was used); ``lower_bound`` the one-sided
    lower bound of the constrained proportion on THIS split at ``confidence`` (a fraction, e.g. 0.95);
    ``needed`` the fewest ``counted`` cases (e.g. "validation positives") that could give the guarantee and
    ``available`` how many there were. All are None for point policies and in records written before.
    """

    value: float
    policy: str
    split: str
    chosen_on: str
    n: int
    positives: int
    negatives: int
    sensitivity: Estimate
    specificity: Estimate
    precision: Estimate
    confusion: ConfusionMatrix
    met: bool | None = None
    note: str | None = None
    guaranteed: bool | None = None
    lower_bound: float | None = None
    confidence: float | None = None
    needed: int | None = None
    counted: str | None = None
    available: int | None = None

    @property
    def threshold(self) -> float:
        return self.value

    @property
    def context(self) -> str:
        return f"{self.split} (n={self.n}, {self.positives} positive)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": float(self.value),
            "policy": self.policy,
            "split": self.split,
            "chosen_on": self.chosen_on,
            "n": int(self.n),
            "positives": int(self.positives),
            "negatives": int(self.negatives),
            "sensitivity": self.sensitivity.to_dict(),
            "specificity": self.specificity.to_dict(),
            "precision": self.precision.to_dict(),
            "confusion": self.confusion.to_dict(),
            "met": self.met,
            "note": self.note,
            "guaranteed": self.guaranteed,
            "lower_bound": None if self.lower_bound is None else float(self.lower_bound),
            "confidence": None if self.confidence is None else float(self.confidence),
            "needed": None if self.needed is None else int(self.needed),
            "counted": self.counted,
            "available": None if self.available is None else int(self.available),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatingPoint:
        """Read a record from :meth:`to_dict`; records without the guarantee fields read them as None."""

        def opt(key: str, kind: type) -> Any:
            return None if d.get(key) is None else kind(d[key])

        try:
            return cls(
                value=float(d["value"]),
                policy=str(d["policy"]),
                split=str(d["split"]),
                chosen_on=str(d.get("chosen_on", d["split"])),
                n=int(d["n"]),
                positives=int(d["positives"]),
                negatives=int(d["negatives"]),
                sensitivity=Estimate.from_dict(d["sensitivity"]),
                specificity=Estimate.from_dict(d["specificity"]),
                precision=Estimate.from_dict(d["precision"]),
                confusion=ConfusionMatrix.from_dict(d["confusion"]),
                met=d.get("met"),
                note=d.get("note"),
                guaranteed=opt("guaranteed", bool),
                lower_bound=opt("lower_bound", float),
                confidence=opt("confidence", float),
                needed=opt("needed", int),
                counted=opt("counted", str),
                available=opt("available", int),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not a valid threshold record: {exc}") from exc


class ThresholdChoice(OperatingPoint):
    """The threshold picked by a policy on the split it was chosen on (usually validation)."""


class ThresholdOutcome(OperatingPoint):
    """A previously chosen threshold applied to another split (usually test)."""


def _wilson_estimate(k: int, total: int, level: float, reason: str) -> Estimate:
    if total == 0:
        return Estimate.undefined(reason)
    wi = wilson_interval(k, total, level)
    return Estimate(value=k / total, wilson_low=wi[0], wilson_high=wi[1])


def _achieved(cm: ConfusionMatrix, ctx: str, level: float) -> dict[str, Estimate]:
    return {
        "sensitivity": _wilson_estimate(cm.tp, cm.tp + cm.fn, level, f"{ctx}: no positive cases"),
        "specificity": _wilson_estimate(cm.tn, cm.tn + cm.fp, level, f"{ctx}: no negative cases"),
        "precision": (
            _wilson_estimate(cm.tp, cm.tp + cm.fp, level, "")
            if cm.tp + cm.fp
            else Estimate(value=0.0, reason=f"{ctx}: nothing predicted positive; precision 0 by convention")
        ),
    }


def _cm_counts(kind: str, cm: ConfusionMatrix) -> tuple[int, int]:
    """(successes, total) of a constraint's proportion in one confusion matrix."""
    return {
        "sensitivity": (cm.tp, cm.tp + cm.fn),
        "specificity": (cm.tn, cm.tn + cm.fp),
        "precision": (cm.tp, cm.tp + cm.fp),
        "npv": (cm.tn, cm.tn + cm.fn),
    }[kind]


def _constraint_met(policy: ThresholdPolicy, cm: ConfusionMatrix) -> bool | None:
    """Point-estimate check; None when the split has no cases of the class the proportion is over."""
    if not policy.constrained:
        return None
    k, total = _cm_counts(policy.kind, cm)
    if total == 0:  # precision / NPV with nothing predicted in that class count as not met
        return None if policy.kind in ("sensitivity", "specificity") else False
    return bool(k / total >= policy.target - _TOL)


def _lower_bound(policy: ThresholdPolicy, cm: ConfusionMatrix) -> float | None:
    if policy.level is None:
        return None
    k, total = _cm_counts(policy.kind, cm)
    return clopper_pearson_lower(k, total, policy.level)


def candidate_table(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Counts and rates at every distinct score used as threshold (ascending thresholds).

    Precision and NPV are 0 where nothing is predicted positive / negative (the card convention).
    """
    thresholds = np.unique(p)
    pos_sorted = np.sort(p[y == 1])
    neg_sorted = np.sort(p[y == 0])
    n1, n0 = pos_sorted.shape[0], neg_sorted.shape[0]
    tp = n1 - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = n0 - np.searchsorted(neg_sorted, thresholds, side="left")
    fn, tn = n1 - tp, n0 - fp
    flagged = tp + fp
    cleared = tn + fn
    sens = tp / n1 if n1 else np.full(thresholds.shape, np.nan)
    spec = tn / n0 if n0 else np.full(thresholds.shape, np.nan)
    prec = np.divide(tp, flagged, out=np.zeros(thresholds.shape), where=flagged > 0)
    npv = np.divide(tn, cleared, out=np.zeros(thresholds.shape), where=cleared > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(thresholds.shape), where=(2 * tp + fp + fn) > 0)
    return {
        "threshold": thresholds,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "npv": npv,
        "f1": f1,
    }


def _table_counts(kind: str, table: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(successes, totals) of a constraint's proportion at every candidate threshold."""
    tp, fp, tn, fn = table["tp"], table["fp"], table["tn"], table["fn"]
    return {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "precision": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }[kind]


def _pick(kind: str, ts: np.ndarray, ok: np.ndarray) -> float:
    return float(ts[ok].max() if _PICK_HIGHEST[kind] else ts[ok].min())


def _point_choice(pol: ThresholdPolicy, table: dict[str, np.ndarray], ctx: str) -> tuple[float, str | None]:
    """The point-estimate rule for a constraint: (threshold, note when the target is not reachable)."""
    ts = table["threshold"]
    k, total = _table_counts(pol.kind, table)
    rate = np.divide(k, total, out=np.full(ts.shape, np.nan), where=total > 0)
    ok = np.isfinite(rate) & (rate >= pol.target - _TOL)
    if ok.any():
        return _pick(pol.kind, ts, ok), None
    if not np.isfinite(rate).any():  # e.g. NPV when every case has the same score
        return float(
            ts.max()
        ), f"{pol.kind} cannot be estimated at any threshold on {ctx}; using the highest score"
    best = float(np.nanmax(rate))
    at_best = np.isfinite(rate) & (rate >= best - _TOL)
    which = "highest" if pol.kind == "npv" else "lowest"
    value = float(ts[at_best].max() if pol.kind == "npv" else ts[at_best].min())
    return value, (
        f"{pol.kind}>={pol.target:g} not reachable on {ctx} (best {best:.3f}); "
        f"using the {which} threshold with the best {pol.kind}"
    )


@dataclass(frozen=True)
class _Guarantee:
    value: float
    guaranteed: bool
    needed: int | None
    counted: str
    note: str | None


def _guaranteed_choice(
    pol: ThresholdPolicy, table: dict[str, np.ndarray], y: np.ndarray, p: np.ndarray, split: str, ctx: str
) -> _Guarantee:
    """The bound rule for a guaranteed constraint, falling back to the point rule when nothing meets it."""
    assert pol.level is not None and pol.target is not None
    ts = table["threshold"]
    k, total = _table_counts(pol.kind, table)
    lb = clopper_pearson_lower_many(k, total, pol.level)
    ok = np.isfinite(lb) & (lb >= pol.target - _TOL)
    needed = clopper_pearson_min_total(pol.target, pol.level)
    counted = f"{_SPLIT_WORDS.get(split, split)} {_COUNTED[pol.kind]}"
    if ok.any():
        return _Guarantee(_pick(pol.kind, ts, ok), True, needed, counted, None)
    value, point_note = _point_choice(pol.point(), table, ctx)
    available = _cm_counts(pol.kind, confusion_at(y, p, value))[1]
    pct = f"{pol.confidence:g}%"
    if needed is not None and available < needed:
        where = "" if pol.kind in ("sensitivity", "specificity") else " at that threshold"
        why = f"needs >= {needed} {counted}, has {available}{where}"
    else:
        best = float(np.nanmax(lb)) if np.isfinite(lb).any() else 0.0
        why = (
            f"no threshold on {ctx} has a {pct} lower bound of {pol.kind} >= {pol.target:g} (best {best:.3f})"
        )
    note = f"not guaranteed at {pct}: {why}; point policy '{pol.point()}' used instead (point estimate only)"
    if point_note:
        note += f"; {point_note}"
    return _Guarantee(value, False, needed, counted, note)


def choose_threshold(
    policy: str | ThresholdPolicy,
    y_val: Any,
    p_val: Any,
    split: str = "val",
    level: float = DEFAULT_LEVEL,
) -> ThresholdChoice:
    """Pick a threshold on ``split`` by ``policy`` and report what it achieves there, with Wilson CIs.

    ``level`` is the two-sided level of the reported Wilson intervals; a guaranteed policy's own
    confidence level comes from its ``@L`` suffix.
    """
    pol = parse_policy(policy)
    y, p = validate_binary(y_val, p_val, what=f"split '{split}'")
    n, positives = int(y.shape[0]), int(y.sum())
    ctx = f"{split} (n={n}, {positives} positive)"
    note = None
    guarantee: _Guarantee | None = None
    if pol.kind == "fixed":
        value = float(pol.target)
    else:
        if positives == 0:
            raise ValidationError(f"policy '{pol}' needs positive cases, but {ctx} has none")
        if pol.kind in ("youden", "specificity", "npv") and positives == n:
            raise ValidationError(f"policy '{pol}' needs negative cases, but {ctx} has none")
        table = candidate_table(y, p)
        if pol.requires_guarantee:
            guarantee = _guaranteed_choice(pol, table, y, p, split, ctx)
            value, note = guarantee.value, guarantee.note
        elif pol.constrained:
            value, note = _point_choice(pol, table, ctx)
        else:
            ts = table["threshold"]
            score = table["f1"] if pol.kind == "max_f1" else table["sensitivity"] + table["specificity"] - 1.0
            value = float(ts[score >= score.max() - _TOL].max())
    cm = confusion_at(y, p, value)
    return ThresholdChoice(
        value=value,
        policy=str(pol),
        split=split,
        chosen_on=split,
        n=n,
        positives=positives,
        negatives=n - positives,
        confusion=cm,
        met=_constraint_met(pol, cm),
        note=note,
        guaranteed=None if guarantee is None else guarantee.guaranteed,
        lower_bound=_lower_bound(pol, cm),
        confidence=pol.level,
        needed=None if guarantee is None else guarantee.needed,
        counted=None if guarantee is None else guarantee.counted,
        available=None if guarantee is None else _cm_counts(pol.kind, cm)[1],
        **_achieved(cm, ctx, level),
    )


def apply_threshold(
    choice: OperatingPoint | dict[str, Any],
    y_test: Any,
    p_test: Any,
    split: str = "test",
    level: float = DEFAULT_LEVEL,
) -> ThresholdOutcome:
    """Apply a chosen threshold to another split and report what it achieves there (with Wilson CIs).

    ``met`` tells whether a constraint policy (e.g. sensitivity>=0.9) still holds on this split by its
    point estimate; for a guaranteed policy ``lower_bound`` is the one-sided Clopper-Pearson bound on this
    split, and ``guaranteed`` is carried over from the choice.
    """
    if isinstance(choice, dict):
        choice = OperatingPoint.from_dict(choice)
    pol = parse_policy(choice.policy)
    y, p = validate_binary(y_test, p_test, what=f"split '{split}'")
    n, positives = int(y.shape[0]), int(y.sum())
    ctx = f"{split} (n={n}, {positives} positive)"
    cm = confusion_at(y, p, choice.value)
    met = _constraint_met(pol, cm)
    note = None
    if pol.constrained and met is False:
        k, total = _cm_counts(pol.kind, cm)
        point = f"{k / total:.3f}" if total else "undefined"
        note = f"'{pol}' chosen on {choice.chosen_on} does not hold on {ctx} (point estimate {point} < {pol.target:g})"
    elif pol.constrained and met is None:
        missing = "positive" if pol.kind == "sensitivity" else "negative"
        note = f"'{pol}' cannot be checked on {ctx}: no {missing} cases"
    return ThresholdOutcome(
        value=float(choice.value),
        policy=str(pol),
        split=split,
        chosen_on=choice.chosen_on,
        n=n,
        positives=positives,
        negatives=n - positives,
        confusion=cm,
        met=met,
        note=note,
        guaranteed=choice.guaranteed,
        lower_bound=_lower_bound(pol, cm),
        confidence=pol.level,
        **_achieved(cm, ctx, level),
    )
