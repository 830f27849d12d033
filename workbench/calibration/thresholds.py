"""Operating thresholds chosen by a named policy on (calibrated) validation probabilities.

Policies (strings, case and spaces ignored):

* ``sensitivity>=X`` (screening): the HIGHEST threshold whose sensitivity is still >= X;
* ``specificity>=X``: the LOWEST threshold whose specificity is >= X (keeps the most sensitivity);
* ``precision>=X`` or ``ppv>=X`` (confirmatory): the LOWEST threshold whose precision is >= X (most
  sensitivity);
* ``npv>=X`` (rule-out): the HIGHEST threshold whose NPV = tn / (tn + fn) is >= X. NPV tends to fall as
  the threshold rises (more, and riskier, cases are called negative), so the highest threshold meeting it
  rules out the most cases (keeps the most specificity) while keeping the NPV;
* ``max_f1``: the threshold with the largest F1 (ties: the highest threshold);
* ``youden``: the threshold with the largest sensitivity + specificity - 1 (ties: the highest threshold);
* ``fixed:X`` or ``fixed=X``: exactly X.

**Guaranteed policies.** The four constraints take a one-sided confidence level in percent,
``sensitivity>=0.9@95`` (50 <= L < 100): the same rule, applied to the one-sided Clopper-Pearson lower
bound of the proportion instead of its point estimate (sensitivity: tp of positives; specificity: tn of
negatives; precision: tp of predicted positives; NPV: tn of predicted negatives). With ~10 validation
positives a point policy holds on new data only about half the time; the bound makes it hold with
probability >= L. For sensitivity and specificity the claim is exact: the chosen threshold is an order
statistic of one class's scores, so the binomial coverage carries over to the selected threshold. For
precision and NPV the bound is per threshold (its denominator depends on the threshold searched over, so
it is somewhat optimistic) and both depend on prevalence: they hold only where validation prevalence
matches the deployment's.

When no threshold reaches the bound (10 of 10 positives give at best 0.741 at 95%, below 0.9) the
choice records ``guaranteed=False``, how many cases a guarantee would take (``needed``: the smallest n
whose n of n reaches the bound, 29 for 0.9 at 95%; ``counted`` names what is counted: positives,
negatives, cases predicted positive or negative) against ``available``, says so in ``note`` and falls
back to the point policy, so the product keeps working with an explicit "not guaranteed".

Candidate thresholds are the distinct validation scores (a case is positive when ``p >= threshold``), so
the chosen value is always a score seen on validation. When a point constraint cannot be met the choice
says so in ``note`` and falls back: sensitivity -> the lowest threshold reaching the maximum
sensitivity, specificity / precision -> the lowest threshold reaching the maximum, NPV -> the highest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from workbench.errors import ValidationError

VALID_FORMS = (
    "'sensitivity>=0.9', 'specificity>=0.8', 'precision>=0.8' (or 'ppv>=0.8'), 'npv>=0.98', each optionally "
    "with a one-sided confidence level in percent (50 <= L < 100) for a Clopper-Pearson guarantee, e.g. "
    "'sensitivity>=0.9@95'; 'max_f1', 'youden', 'fixed:0.3' (or 'fixed=0.3')"
)


_CONSTRAINT_ALIASES = {
    "sensitivity": "sensitivity",
    "sens": "sensitivity",
    "recall": "sensitivity",
    "tpr": "sensitivity",
    "specificity": "specificity",
    "spec": "specificity",
    "tnr": "specificity",
    "precision": "precision",
    "ppv": "precision",
    "npv": "npv",
}
_SIMPLE_ALIASES = {
    "max_f1": "max_f1",
    "maxf1": "max_f1",
    "max-f1": "max_f1",
    "f1": "max_f1",
    "youden": "youden",
}
# Constraint kinds: pick the highest meeting threshold (else the lowest) and what their bound counts.
_PICK_HIGHEST = {"sensitivity": True, "specificity": False, "precision": False, "npv": True}


@dataclass(frozen=True)
class ThresholdPolicy:
    """A parsed policy.

    ``kind`` is sensitivity/specificity/precision/npv/max_f1/youden/fixed; ``target`` the constraint's
    value (or the fixed threshold); ``confidence`` the one-sided level in percent (e.g. 95) of a
    guaranteed constraint, None for a point-estimate policy.
    """

    kind: str
    target: float | None = None
    confidence: float | None = None

    def __str__(self) -> str:
        if self.constrained:
            suffix = f"@{self.confidence:g}" if self.confidence is not None else ""
            return f"{self.kind}>={self.target:g}{suffix}"
        if self.kind == "fixed":
            return f"fixed:{self.target:g}"
        return self.kind

    @property
    def constrained(self) -> bool:
        return self.kind in _PICK_HIGHEST

    @property
    def requires_guarantee(self) -> bool:
        """Whether the constraint must hold for a Clopper-Pearson lower bound, not just a point estimate."""
        return self.confidence is not None

    @property
    def level(self) -> float | None:
        """The one-sided confidence level as a fraction (0.95 for ``@95``); None for point policies."""
        return None if self.confidence is None else self.confidence / 100.0

    def point(self) -> ThresholdPolicy:
        """The same policy without the confidence level (the fallback of a guaranteed policy)."""
        return replace(self, confidence=None)


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
    m = re.fullmatch(r"([a-z_]+)>=([^@]+)(?:@(.*))?", text)
    if m:
        kind = _CONSTRAINT_ALIASES.get(m.group(1))
        if kind is None:
            raise _bad(policy, f"unknown constraint {m.group(1)!r}")
        target = _number(policy, m.group(2))
        if not 0.0 < target <= 1.0:
            raise _bad(policy, f"target must be in (0, 1], got {target:g}")
        confidence = None if m.group(3) is None else _confidence(policy, m.group(3))
        if confidence is not None and target >= 1.0:
            raise _bad(
                policy, "a target of 1 cannot be guaranteed by any finite sample; use a target below 1"
            )
        return ThresholdPolicy(kind, target, confidence)
    if "@" in text:
        raise _bad(
            policy, "a confidence level '@L' applies only to sensitivity, specificity, precision/ppv and npv"
        )
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


def _confidence(policy: str, text: str) -> float:
    """The '@L' confidence level in percent, 50 <= L < 100 (a trailing '%' is allowed)."""
    value = _number(policy, text.removesuffix("%"))
    if not 50.0 <= value < 100.0:
        raise _bad(
            policy, f"confidence level must be a percentage with 50 <= L < 100 (e.g. @95), got {value:g}"
        )
    return value


def _fmt_estimate(e: dict[str, Any] | None) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    lo, hi = e.get("wilson_low", e.get("low")), e.get("wilson_high", e.get("high"))
    return f"{e['value']:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{e['value']:.2f}"


def _guarantee_status(point: dict[str, Any], pol: ThresholdPolicy) -> str | None:
    """The guarantee part of a threshold line; None when the note says it all (or nothing applies)."""
    if not pol.constrained:
        return None
    split = str(point.get("split"))
    is_choice = point.get("chosen_on", split) == split
    met, lb = point.get("met"), point.get("lower_bound")
    if not pol.requires_guarantee:
        if is_choice:
            return "point estimate, no confidence guarantee"
        return f"target met on {split} (point estimate)" if met else None
    pct = f"{pol.confidence:g}%"
    bound = f"{pct} lower bound {lb:.3f}" if lb is not None else f"{pct} lower bound n/a"
    if is_choice:
        if point.get("guaranteed"):
            return f"guaranteed: {bound} >= {pol.target:g}"
        if point.get("note"):
            return None  # the note starts with "not guaranteed ..." and gives the reason
        needed, available = point.get("needed"), point.get("available")
        counted = point.get("counted") or "cases"
        if needed is not None and available is not None:
            return f"not guaranteed: needs >= {needed} {counted}, has {available}; point policy used"
        return "not guaranteed; point policy used"
    held = f"target met on {split} (point estimate), " if met else ""
    chosen = {True: "; guaranteed on ", False: "; not guaranteed on "}.get(point.get("guaranteed"), "")
    return f"{held}{bound} on {split}" + (f"{chosen}{point.get('chosen_on')}" if chosen else "")


def format_operating_point(point: dict[str, Any], label: str) -> str:
    """One summary line for a stored threshold record (``OperatingPoint.to_dict``).

    Threshold, policy, ``label`` (e.g. "chosen on", "reported on"), split context, sensitivity and
    specificity with Wilson intervals (plus precision for precision/NPV policies), then the guarantee
    status (the achieved lower bound, or why no threshold could be guaranteed and that the point policy
    was used) and the note.
    """
    try:
        pol: ThresholdPolicy | None = parse_policy(str(point.get("policy")))
    except ValidationError:
        pol = None
    ctx = f"{point['split']} (n={point['n']}, {point['positives']} positive)"
    line = (
        f"threshold {float(point['value']):.3f} ({point['policy']}) {label} {ctx}: "
        f"sensitivity {_fmt_estimate(point.get('sensitivity'))}, "
        f"specificity {_fmt_estimate(point.get('specificity'))}"
    )
    if pol is not None and pol.kind in ("precision", "npv"):
        line += f", precision {_fmt_estimate(point.get('precision'))}"
        cm = point.get("confusion") or {}
        cleared = int(cm.get("tn", 0)) + int(cm.get("fn", 0))
        if pol.kind == "npv" and cleared:
            line += f", npv {int(cm['tn']) / cleared:.2f} ({cleared} predicted negative)"
    parts = [line]
    status = _guarantee_status(point, pol) if pol is not None else None
    if status:
        parts.append(status)
    if point.get("note"):
        parts.append(str(point["note"]))
    if point.get("in_sample"):
        parts.append(str(point["in_sample"]))
    return "; ".join(parts)


def guarantee_text(point: dict[str, Any]) -> str | None:
    """The guarantee status of a stored threshold record alone (None for policies without a bound)."""
    try:
        pol = parse_policy(str(point.get("policy")))
    except ValidationError:
        return None
    return _guarantee_status(point, pol)
