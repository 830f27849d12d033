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
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    clopper_pearson_lower,
    clopper_pearson_lower_many,
    clopper_pearson_min_total,
    wilson_interval,
)
from workbench.evaluation.metrics import ConfusionMatrix, Estimate, confusion_at, validate_binary

DEFAULT_POLICY = "sensitivity>=0.9@95"
VALID_FORMS = (
    "'sensitivity>=0.9', 'specificity>=0.8', 'precision>=0.8' (or 'ppv>=0.8'), 'npv>=0.98', each optionally "
    "with a one-sided confidence level in percent (50 <= L < 100) for a Clopper-Pearson guarantee, e.g. "
    "'sensitivity>=0.9@95'; 'max_f1', 'youden', 'fixed:0.3' (or 'fixed=0.3')"
)
_TOL = 1e-12
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
_COUNTED = {
    "sensitivity": "positives",
    "specificity": "negatives",
    "precision": "cases predicted positive",
    "npv": "cases predicted negative",
}
_SPLIT_WORDS = {"val": "validation", "train": "training"}


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
