"""Operating thresholds chosen by a named policy on (calibrated) validation probabilities.

Policies (strings, case and spaces ignored):

* ``sensitivity>=X`` (screening): the HIGHEST threshold whose sensitivity is still >= X;
* ``precision>=X`` (confirmatory): the LOWEST threshold whose precision is >= X (most sensitivity);
* ``max_f1``: the threshold with the largest F1 (ties: the highest threshold);
* ``youden``: the threshold with the largest sensitivity + specificity - 1 (ties: the highest threshold);
* ``fixed:X`` or ``fixed=X``: exactly X.

Candidate thresholds are the distinct validation scores (a case is positive when ``p >= threshold``), so
the chosen value is always a score seen on validation. When a constraint cannot be met the choice says so in
``note`` and falls back: sensitivity -> the lowest threshold reaching the maximum sensitivity, precision ->
the lowest threshold reaching the maximum precision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.bootstrap import DEFAULT_LEVEL, wilson_interval
from workbench.evaluation.metrics import ConfusionMatrix, Estimate, confusion_at, validate_binary

VALID_FORMS = "'sensitivity>=0.9', 'precision>=0.8', 'max_f1', 'youden', 'fixed:0.3' (or 'fixed=0.3')"
_TOL = 1e-12
_CONSTRAINT_ALIASES = {
    "sensitivity": "sensitivity",
    "sens": "sensitivity",
    "recall": "sensitivity",
    "precision": "precision",
    "ppv": "precision",
}
_SIMPLE_ALIASES = {
    "max_f1": "max_f1",
    "maxf1": "max_f1",
    "max-f1": "max_f1",
    "f1": "max_f1",
    "youden": "youden",
}


@dataclass(frozen=True)
class ThresholdPolicy:
    """A parsed policy: ``kind`` in sensitivity/precision/max_f1/youden/fixed, ``target`` for the others."""

    kind: str
    target: float | None = None

    def __str__(self) -> str:
        if self.kind in ("sensitivity", "precision"):
            return f"{self.kind}>={self.target:g}"
        if self.kind == "fixed":
            return f"fixed:{self.target:g}"
        return self.kind

    @property
    def constrained(self) -> bool:
        return self.kind in ("sensitivity", "precision")


def _bad(policy: Any, why: str) -> ValidationError:
    return ValidationError(f"invalid threshold policy {policy!r}: {why}; valid forms: {VALID_FORMS}")


def parse_policy(policy: str | ThresholdPolicy) -> ThresholdPolicy:
    """Parse a policy string (see module doc); ValidationError lists the valid forms."""
    if isinstance(policy, ThresholdPolicy):
        return policy
    if not isinstance(policy, str) or not policy.strip():
        raise _bad(policy, "empty")
    text = re.sub(r"\s+", "", policy.strip().lower())
    if text in _SIMPLE_ALIASES:
        return ThresholdPolicy(_SIMPLE_ALIASES[text])
    m = re.fullmatch(r"([a-z_]+)>=(.+)", text)
    if m:
        kind = _CONSTRAINT_ALIASES.get(m.group(1))
        if kind is None:
            raise _bad(policy, f"unknown constraint {m.group(1)!r}")
        target = _number(policy, m.group(2))
        if not 0.0 < target <= 1.0:
            raise _bad(policy, f"target must be in (0, 1], got {target:g}")
        return ThresholdPolicy(kind, target)
    m = re.fullmatch(r"fixed[:=](.+)", text)
    if m:
        target = _number(policy, m.group(1))
        if not 0.0 <= target <= 1.0:
            raise _bad(policy, f"fixed threshold must be in [0, 1], got {target:g}")
        return ThresholdPolicy("fixed", target)
    raise _bad(policy, "not recognised")


def _number(policy: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise _bad(policy, f"{text!r} is not a number") from exc
    if not np.isfinite(value):
        raise _bad(policy, f"{text!r} is not a finite number")
    return value


@dataclass
class OperatingPoint:
    """A threshold and what it achieves on one split (sensitivity/specificity/precision with Wilson CIs).

    ``met`` says whether the policy's constraint holds on this split (None for unconstrained policies or
    when it cannot be judged); ``chosen_on`` is the split the threshold was picked on.
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatingPoint:
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


def _constraint_met(policy: ThresholdPolicy, cm: ConfusionMatrix) -> bool | None:
    if policy.kind == "sensitivity":
        sens = cm.sensitivity
        return None if sens is None else bool(sens >= policy.target - _TOL)
    if policy.kind == "precision":
        return bool(cm.tp + cm.fp > 0 and cm.precision >= policy.target - _TOL)
    return None


def candidate_table(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Counts and rates at every distinct score used as threshold (ascending thresholds)."""
    thresholds = np.unique(p)
    pos_sorted = np.sort(p[y == 1])
    neg_sorted = np.sort(p[y == 0])
    n1, n0 = pos_sorted.shape[0], neg_sorted.shape[0]
    tp = n1 - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = n0 - np.searchsorted(neg_sorted, thresholds, side="left")
    fn, tn = n1 - tp, n0 - fp
    flagged = tp + fp
    sens = tp / n1 if n1 else np.full(thresholds.shape, np.nan)
    spec = tn / n0 if n0 else np.full(thresholds.shape, np.nan)
    prec = np.divide(tp, flagged, out=np.zeros(thresholds.shape), where=flagged > 0)
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
        "f1": f1,
    }


def choose_threshold(
    policy: str | ThresholdPolicy,
    y_val: Any,
    p_val: Any,
    split: str = "val",
    level: float = DEFAULT_LEVEL,
) -> ThresholdChoice:
    """Pick a threshold on ``split`` by ``policy`` and report what it achieves there, with Wilson CIs."""
    pol = parse_policy(policy)
    y, p = validate_binary(y_val, p_val, what=f"split '{split}'")
    n, positives = int(y.shape[0]), int(y.sum())
    ctx = f"{split} (n={n}, {positives} positive)"
    note = None
    if pol.kind == "fixed":
        value = float(pol.target)
    else:
        if positives == 0:
            raise ValidationError(f"policy '{pol}' needs positive cases, but {ctx} has none")
        if pol.kind == "youden" and positives == n:
            raise ValidationError(f"policy '{pol}' needs negative cases, but {ctx} has none")
        table = candidate_table(y, p)
        ts = table["threshold"]
        if pol.kind == "sensitivity":
            ok = table["sensitivity"] >= pol.target - _TOL
            if ok.any():
                value = float(ts[ok].max())
            else:  # unreachable while the lowest score is a candidate, kept for safety
                best = table["sensitivity"].max()
                value = float(ts[table["sensitivity"] >= best - _TOL].min())
                note = f"sensitivity>={pol.target:g} not reachable on {ctx}; using the lowest threshold with the best sensitivity ({best:.3f})"
        elif pol.kind == "precision":
            ok = (table["precision"] >= pol.target - _TOL) & (table["tp"] + table["fp"] > 0)
            if ok.any():
                value = float(ts[ok].min())
            else:
                best = table["precision"].max()
                value = float(ts[table["precision"] >= best - _TOL].min())
                note = (
                    f"precision>={pol.target:g} not reachable on {ctx} (best {best:.3f}); "
                    "using the lowest threshold with the best precision"
                )
        else:
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

    ``met`` tells whether a constraint policy (e.g. sensitivity>=0.9) still holds on this split.
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
        note = f"'{pol}' chosen on {choice.chosen_on} does not hold on {ctx}"
    elif pol.constrained and met is None:
        note = f"'{pol}' cannot be checked on {ctx}: no positive cases"
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
        **_achieved(cm, ctx, level),
    )
