"""When to stop labelling: is a round's labelling still paying? (issue 14 item 6)

A round's version is compared with the previous round's version on three things, each named with its
split, n and positives:

* **validation AUPRC change** (new minus old) on the SAME labelled validation cases, with a paired
  stratified bootstrap 95% interval (one set of resamples for both versions). Computed on the raw
  logits: AUPRC depends on the ranking only, and a calibrator (isotonic, binning) would add ties;
* **stability** of the pool: among unlabelled pool cases both versions scored, the fraction whose
  decision at each version's policy threshold (calibrated probability >= threshold) flipped, the
  Spearman rank correlation of their logits and the overlap of their top-k (k: the round's batch);
* **positives left** in the unlabelled pool: the sum of the new version's calibrated probabilities,
  with a Poisson-binomial normal-approximation interval, against the positives already found (pool
  cases whose current label is positive).

The stopping rule (:data:`RULE`) says "consider stopping" only when every part of it holds, "labels
still paying" when one part clearly fails, and "not enough data to say" otherwise. Nothing is
stored: everything is read from stored predictions. Cost, measured on SQLite on a 2-core machine
(1,000 bootstrap resamples, three versions): 0.1 s with 300 validation and 2,000 pool cases,
0.9-1.2 s with 100,000 pool cases (reading two versions' pool predictions dominates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from workbench.calibration.service import calibrated_probabilities
from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.models import Case, ModelVersion, Round
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    percentile_interval,
    stratified_bootstrap_weights,
    wilson_interval,
)
from workbench.evaluation.metrics import average_precision_statistic
from workbench.model.predictions import PredictionSet, load_predictions

STILL_PAYING = "labels still paying"
CONSIDER_STOPPING = "consider stopping"
NOT_ENOUGH = "not enough data to say"

#: Fewer validation positives than this: an AUPRC change cannot be told from noise.
MIN_VAL_POSITIVES = 10
#: Decisions may change for fewer than this share of the unlabelled pool.
MAX_FLIP_RATE = 0.01
#: The upper end of the positives-left interval must be below this share of the positives found.
MAX_LEFT_SHARE = 0.05
#: Rounds in a row whose AUPRC change interval must include 0.
FLAT_ROUNDS = 2
#: Top-k overlap when the round's batch size is unknown.
DEFAULT_TOP_K = 50

RULE = (
    f"Consider stopping when (1) the 95% interval of the validation AUPRC change includes 0 for "
    f"{FLAT_ROUNDS} rounds in a row (each with at least {MIN_VAL_POSITIVES} validation positives), "
    f"(2) fewer than {MAX_FLIP_RATE:.0%} of the unlabelled pool cases changed decision at the policy "
    f"threshold, and (3) the upper end of the estimated positives left in the pool is below "
    f"{MAX_LEFT_SHARE:.0%} of the positives found so far. One part clearly failing means labels are "
    "still paying; a part that cannot be checked means there is not enough data to say."
)


def _f(x: float | None) -> float | None:
    """JSON-safe float (None for None or NaN)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def auprc_change(
    y: np.ndarray,
    score_new: np.ndarray,
    score_old: np.ndarray,
    *,
    split: str = "val",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """AUPRC of ``score_new`` minus that of ``score_old`` on the same cases ``y``, with a paired
    stratified bootstrap interval (both versions scored on each resample)."""
    y = np.asarray(y, dtype=np.int64)
    n, positives = int(y.shape[0]), int(y.sum())
    out: dict[str, Any] = {"split": split, "n": n, "positives": positives, "n_boot": n_boot, "level": level}
    if n == 0 or positives == 0 or positives == n:
        return {
            **out,
            "new": None,
            "old": None,
            "delta": None,
            "low": None,
            "high": None,
            "includes_zero": None,
            "reason": f"{split} needs both classes (n={n}, {positives} positive)",
        }
    stat_new = average_precision_statistic(y, np.asarray(score_new, dtype=np.float64))
    stat_old = average_precision_statistic(y, np.asarray(score_old, dtype=np.float64))
    ones = np.ones((1, n))
    new, old = float(stat_new(ones)[0]), float(stat_old(ones)[0])
    deltas = [stat_new(w) - stat_old(w) for w in stratified_bootstrap_weights(y, n_boot=n_boot, seed=seed)]
    ci = percentile_interval(np.concatenate(deltas), level=level)
    low, high = (None, None) if ci is None else ci
    return {
        **out,
        "new": _f(new),
        "old": _f(old),
        "delta": _f(new - old),
        "low": _f(low),
        "high": _f(high),
        "includes_zero": None if ci is None else bool(low <= 0.0 <= high),
        "reason": None,
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when fewer than 3 cases or a constant score."""
    from scipy.stats import rankdata  # scipy: imported where needed

    if a.shape[0] < 3:
        return None
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return _f(float(np.corrcoef(ra, rb)[0, 1]))


def prediction_stability(
    score_new: np.ndarray,
    score_old: np.ndarray,
    decision_new: np.ndarray,
    decision_old: np.ndarray,
    *,
    top_k: int = DEFAULT_TOP_K,
    split: str = "pool (unlabelled)",
) -> dict[str, Any]:
    """How much the pool's predictions moved between two versions, on the same cases (aligned arrays).

    ``decision_*``: each version's call at its own policy threshold (bool). Flips are counted exactly,
    with a Wilson interval; ranks are compared on ``score_*`` (logits) by Spearman correlation and by
    the share of the ``top_k`` highest-ranked cases the two versions have in common."""
    a, b = np.asarray(score_new, dtype=np.float64), np.asarray(score_old, dtype=np.float64)
    da, db = np.asarray(decision_new, dtype=bool), np.asarray(decision_old, dtype=bool)
    n = int(a.shape[0])
    flipped = int((da != db).sum())
    k = max(0, min(int(top_k), n))
    overlap = None
    if k > 0:
        top_a = set(np.argsort(-a, kind="mergesort")[:k].tolist())
        top_b = set(np.argsort(-b, kind="mergesort")[:k].tolist())
        overlap = len(top_a & top_b) / k
    ci = wilson_interval(flipped, n) if n else None
    return {
        "split": split,
        "n": n,
        "flagged_new": int(da.sum()),
        "flagged_old": int(db.sum()),
        "flipped": flipped,
        "flip_rate": flipped / n if n else None,
        "flip_wilson": list(ci) if ci else None,
        "spearman": _spearman(a, b),
        "top_k": k,
        "top_k_overlap": _f(overlap) if overlap is not None else None,
    }


def positives_left(
    prob_unlabelled: np.ndarray, found: int, *, level: float = DEFAULT_LEVEL
) -> dict[str, Any]:
    """Expected positives among unlabelled pool cases: the sum of calibrated probabilities, with a
    normal approximation of the Poisson-binomial (variance: sum of p(1-p)) clipped to [0, n].

    The interval covers the chance in which cases turn out positive, not calibration error: if the
    pool differs from the validation cases the calibrator was fitted on, the estimate is off."""
    p = np.asarray(prob_unlabelled, dtype=np.float64)
    n = int(p.shape[0])
    expected = float(p.sum())
    sd = math.sqrt(float((p * (1.0 - p)).sum()))
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    low, high = max(0.0, expected - z * sd), min(float(n), expected + z * sd)
    return {
        "split": "pool (unlabelled)",
        "n": n,
        "expected": expected,
        "low": low,
        "high": high,
        "level": level,
        "found": int(found),
        "share_of_found": expected / found if found else None,
    }


@dataclass(frozen=True)
class Check:
    """One part of the stopping rule: holds (True), clearly fails (False) or cannot be checked (None)."""

    holds: bool | None
    reason: str


def _change_text(c: dict[str, Any], pair: str) -> str:
    where = f"{c['split']} (n={c['n']}, {c['positives']} positive)"
    if c.get("delta") is None:
        return f"validation AUPRC change {pair} cannot be computed on {where}: {c.get('reason')}"
    return (
        f"validation AUPRC {pair} changed by {c['delta']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] "
        f"({c['old']:.3f} -> {c['new']:.3f}) on {where}"
    )


def _check_change(c: dict[str, Any] | None, pair: str) -> Check:
    if c is None:
        return Check(None, f"no earlier round to compare {pair} with")
    text = _change_text(c, pair)
    if c.get("includes_zero") is None:
        return Check(None, text)
    if c["positives"] < MIN_VAL_POSITIVES:
        return Check(None, f"{text}: fewer than {MIN_VAL_POSITIVES} validation positives, too few to tell")
    if c["includes_zero"]:
        return Check(True, f"{text}: no detectable change, the new labels did not measurably help")
    if c["low"] > 0:
        return Check(False, f"{text}: the model is still improving with new labels")
    return Check(False, f"{text}: the model got worse; check the new labels and the training before going on")


def _check_stability(s: dict[str, Any] | None) -> Check:
    if s is None or s.get("reason") or not s.get("n"):
        why = (s or {}).get("reason") or "no unlabelled pool cases scored by both versions"
        return Check(None, f"stability cannot be checked: {why}")
    text = (
        f"decisions at the threshold changed for {s['flipped']} of {s['n']} {s['split']} cases "
        f"({s['flip_rate']:.1%})"
    )
    if s["flip_rate"] < MAX_FLIP_RATE:
        return Check(True, f"{text}: the model's calls have settled")
    return Check(False, f"{text}: the model's calls are still moving (stop needs < {MAX_FLIP_RATE:.0%})")


def _check_left(left: dict[str, Any] | None) -> Check:
    if left is None:
        return Check(None, "the pool's unlabelled cases are not scored: positives left cannot be estimated")
    text = (
        f"about {left['expected']:.1f} [{left['low']:.1f}, {left['high']:.1f}] positives expected among "
        f"{left['n']} unlabelled pool cases, {left['found']} found so far"
    )
    if left["found"] and left["high"] < MAX_LEFT_SHARE * left["found"]:
        return Check(True, f"{text}: few positives are left to find")
    return Check(
        False, f"{text}: positives are still worth looking for (stop needs < {MAX_LEFT_SHARE:.0%} of found)"
    )


def stopping_verdict(
    change: dict[str, Any] | None,
    change_before: dict[str, Any] | None,
    stability: dict[str, Any] | None,
    left: dict[str, Any] | None,
) -> dict[str, Any]:
    """Apply :data:`RULE`: the verdict for a clinician and the reason behind each part."""
    checks = [
        _check_change(change, "this round"),
        _check_change(change_before, "the round before"),
        _check_stability(stability),
        _check_left(left),
    ]
    if any(c.holds is False for c in checks):
        verdict = STILL_PAYING
    elif any(c.holds is None for c in checks):
        verdict = NOT_ENOUGH
    else:
        verdict = CONSIDER_STOPPING
    return {
        "verdict": verdict,
        "reasons": [c.reason for c in checks],
        "checks": [c.holds for c in checks],
        "rule": RULE,
    }


# ------------------------------------------------------------------------------------------------
# The database reader


def _ready_versions_before(engine: Engine, round_id: int) -> tuple[Round | None, list[tuple[int, int]]]:
    """The round and (round number, ready version id) of the earlier rounds, newest first."""
    with session_scope(engine) as s:
        rnd = s.get(Round, round_id)
        if rnd is None:
            return None, []
        s.expunge(rnd)
        earlier = s.execute(
            select(Round.number, Round.model_version_id)
            .join(ModelVersion, ModelVersion.id == Round.model_version_id)
            .where(Round.number < rnd.number, ModelVersion.status == "ready")
            .order_by(Round.number.desc())
        ).all()
    return rnd, [(int(r.number), int(r.model_version_id)) for r in earlier]


def _val_change(engine: Engine, new: int, old: int, n_boot: int, seed: int) -> dict[str, Any]:
    a = load_predictions(engine, new, "val").labelled()
    b = load_predictions(engine, old, "val").labelled()
    _, ia, ib = np.intersect1d(a.case_ids, b.case_ids, assume_unique=True, return_indices=True)
    out = auprc_change(a.y[ia], a.logit[ia], b.logit[ib], split="val", n_boot=n_boot, seed=seed)
    return {**out, "versions": [new, old]}


def _version_threshold(engine: Engine, version_id: int) -> tuple[str, float | None]:
    with session_scope(engine) as s:
        v = s.get(ModelVersion, version_id)
        return (v.status if v else "missing"), (v.threshold if v else None)


def _found_positives(engine: Engine) -> int:
    cur = latest_label_subquery()
    with session_scope(engine) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Case)
                .join(cur, cur.c.case_id == Case.id)
                .where(Case.split == "pool", cur.c.value == 1)
            )
            or 0
        )


def _pool_stability(
    engine: Engine,
    new: tuple[int, float | None],
    old: int,
    pool_new: PredictionSet,
    unlabelled: np.ndarray,
    top_k: int,
) -> dict[str, Any]:
    """:func:`prediction_stability` on the unlabelled pool cases both versions scored, or a reason."""
    new_id, t_new = new
    _, t_old = _version_threshold(engine, old)
    for vid, t in ((new_id, t_new), (old, t_old)):
        if t is None:
            return {"reason": f"version {vid} has no policy threshold (not calibrated)"}
    pool_old = load_predictions(engine, old, "pool")
    _, ia, ib = np.intersect1d(
        pool_new.case_ids[unlabelled], pool_old.case_ids, assume_unique=True, return_indices=True
    )
    if ia.size == 0:
        return {"reason": "no unlabelled pool cases scored by both versions"}
    logit_new, logit_old = pool_new.logit[unlabelled][ia], pool_old.logit[ib]
    out = prediction_stability(
        logit_new,
        logit_old,
        calibrated_probabilities(engine, new_id, logit_new) >= t_new,
        calibrated_probabilities(engine, old, logit_old) >= t_old,
        top_k=top_k,
    )
    return {**out, "versions": [new_id, old], "thresholds": [t_new, t_old]}


def stopping_report(
    engine: Engine, round_id: int, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """The stopping block of a round: its version against the previous round's ready version.

    ``available`` False (with ``reason`` and the verdict "not enough data to say") when the round has
    no ready version or no earlier round has one; otherwise the three measurements, the verdict and
    its reasons. The AUPRC change of the round before (previous vs the one before it) is computed too:
    the rule asks for two flat rounds in a row."""
    rnd, earlier = _ready_versions_before(engine, round_id)

    def unavailable(reason: str) -> dict[str, Any]:
        return {
            "available": False,
            "reason": reason,
            "verdict": NOT_ENOUGH,
            "reasons": [reason],
            "rule": RULE,
        }

    if rnd is None:
        return unavailable(f"round {round_id} does not exist")
    if rnd.model_version_id is None:
        return unavailable(f"round {rnd.number} has no model version yet")
    new = int(rnd.model_version_id)
    status, t_new = _version_threshold(engine, new)
    if status != "ready":
        return unavailable(f"round {rnd.number}'s version {new} is {status}, not ready: nothing to compare")
    if not earlier:
        return unavailable(
            f"round {rnd.number} is the first round with a ready version: nothing to compare with"
        )
    (prev_round, old), before = earlier[0], (earlier[1] if len(earlier) > 1 else None)
    change = _val_change(engine, new, old, n_boot, seed)
    change_before = _val_change(engine, old, before[1], n_boot, seed) if before else None

    pool_new = load_predictions(engine, new, "pool")
    unl_new = np.isnan(pool_new.label)
    stability = _pool_stability(engine, (new, t_new), old, pool_new, unl_new, rnd.batch_size or DEFAULT_TOP_K)
    left = None
    if pool_new.n:  # an exhausted pool (every case labelled) leaves 0 expected
        left = positives_left(
            calibrated_probabilities(engine, new, pool_new.logit[unl_new]), _found_positives(engine)
        )
        left["version"] = new
    return {
        "available": True,
        "round": rnd.number,
        "version": new,
        "previous_round": prev_round,
        "previous_version": old,
        "round_before_versions": [old, before[1]] if before else None,
        "auprc_change": change,
        "auprc_change_before": change_before,
        "stability": stability,
        "positives_left": left,
        **stopping_verdict(change, change_before, stability, left),
    }
