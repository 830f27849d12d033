"""Baseline-guided batch: what to label while no model version has learned yet.

A round whose version fails the learning check must not queue from that version (its scores are
noise), and a TypiClust cold start ignores every label already given. The non-learned baseline
(``evaluation.baseline``: hand-written pair features, a balanced logistic regression) needs few labels,
so between "no labels" and "a model that learned" it is the best ranker available:

1. The baseline is fitted on the labelled train/pool cases (adjudicated labels, as training uses;
   never validation or test).
2. It scores every unlabelled pool case without an open labelling item.
3. The operating threshold is chosen by the round's policy on the validation split's baseline
   probabilities (as calibration chooses a version's), so ``near_threshold`` means what it means for a
   version; without labelled validation cases of both classes it is 0.5, the balanced boundary.
4. The production mix picks the batch (``strategies.select_batch``), near-duplicates thinned by
   k-center on the standardised features. Strategies that need a network (MC samples, TTA) cannot run
   on the baseline: such a mix is replaced by the default mix, and the result says so.

With fewer than ``MIN_PER_CLASS`` labelled positives or negatives there is nothing to fit: the
cold start (TypiClust) is queued instead. Every pick's reason starts with ``GUIDED_PREFIX``.
Measured on hard data in ``docs/benchmarks.md`` ("Label efficiency measured the way it runs").
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.active.cold_start import STRATEGY as COLD_START
from workbench.active.cold_start import queue_cold_start, unlabelled_pool
from workbench.active.labelling_queue import enqueue
from workbench.active.strategies import (
    DEFAULT_MIX,
    Candidates,
    Selected,
    base_strategy,
    select_batch,
    validate_mix,
)
from workbench.calibration.thresholds import parse_policy
from workbench.config import Settings
from workbench.data.labels import training_labels
from workbench.db.engine import session_scope
from workbench.db.models import QueueItem
from workbench.defaults import DEFAULT_POLICY
from workbench.errors import ValidationError

STRATEGY = "baseline_guided"
#: Labelled positives and negatives the baseline needs before it can rank (else: the cold start).
MIN_PER_CLASS = 2
#: Strategies that need a network's passes (MC dropout, test-time augmentation).
NEEDS_NETWORK = frozenset({"bald", "tta_spread"})
#: What the baseline is fitted on: the splits training uses, never validation or test.
TRAINABLE = ("train", "pool")
GUIDED_PREFIX = "baseline-guided (no model version has learned yet)"


def guided_mix(mix: Mapping[str, float] | None) -> tuple[dict[str, float], str | None]:
    """The mix the baseline can run: ``mix`` itself, or the default mix (and why) when it needs a network."""
    shares = validate_mix(mix or DEFAULT_MIX)
    needs = sorted(n for n, share in shares.items() if share > 0 and base_strategy(n) in NEEDS_NETWORK)
    if needs:
        return dict(DEFAULT_MIX), f"{', '.join(needs)} need a model's passes: the default mix was used"
    return shares, None


def can_fit(y: np.ndarray | Sequence[int]) -> bool:
    """Whether labels ``y`` hold at least ``MIN_PER_CLASS`` positives and negatives to fit the baseline on."""
    y = np.asarray(y, dtype=np.int64)
    positives = int(y.sum())
    return min(positives, int(y.size) - positives) >= MIN_PER_CLASS


def _round_batch(engine: Engine, round_id: int) -> dict[str, Any] | None:
    """What an earlier attempt of the round queued (count and by whom), or None."""
    with session_scope(engine) as s:
        strategies = list(
            s.scalars(
                select(QueueItem.strategy).where(QueueItem.round_id == round_id, QueueItem.kind == "label")
            )
        )
    if not strategies:
        return None
    by = COLD_START if set(strategies) == {COLD_START} else STRATEGY
    return {"queued": 0, "already_queued": len(strategies), "strategy": by}


@dataclass(frozen=True)
class GuidedBatch:
    """The batch the baseline chose, the threshold its ``near_threshold`` slice used, what it was fitted on."""

    batch: list[Selected]
    threshold: float
    threshold_note: str
    fitted_on: dict[str, Any]


def baseline_threshold(fitted: Any, x_val: np.ndarray, y_val: np.ndarray, policy: str) -> tuple[float, str]:
    """The baseline's operating threshold by ``policy`` on the validation rows, and how it was chosen:
    a fixed policy as given, 0.5 (the balanced boundary) without both classes there."""
    from workbench.calibration.threshold_choice import choose_threshold

    y_val = np.asarray(y_val, dtype=np.int64)
    positives = int(y_val.sum())
    pol = parse_policy(policy)
    if pol.kind == "fixed":  # no validation labels needed
        return float(pol.target), f"{float(pol.target):.3f} by policy {pol}"
    if positives == 0 or positives == y_val.size:
        return 0.5, (
            f"0.5 (balanced boundary): the validation split has {y_val.size} labelled, {positives} positive"
        )
    choice = choose_threshold(pol, y_val, fitted.score(x_val), split="val")
    threshold = float(choice.value)
    note = f"{threshold:.3f} by policy {choice.policy} on val (n={y_val.size}, {positives} positive)"
    if choice.note:  # e.g. the guarantee could not be met and the point rule was used
        note += f"; {choice.note}"
    return threshold, note


def baseline_candidates(
    fitted: Any, x_pool: np.ndarray, pool_ids: np.ndarray, threshold: float
) -> Candidates:
    """The pool as the baseline sees it: its probabilities, and its standardised features as embeddings
    (k-center thins near-duplicates in the space the baseline ranks in)."""
    return Candidates(
        case_ids=np.asarray(pool_ids, dtype=np.int64),
        prob=fitted.score(x_pool),
        threshold=threshold,
        embeddings=fitted.scaler.transform(x_pool),
    )


def guided_batch(
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_pool: np.ndarray,
    pool_ids: np.ndarray,
    n: int,
    mix: Mapping[str, float],
    policy: str = DEFAULT_POLICY,
    seed: int = 0,
) -> GuidedBatch:
    """Steps 1-4 of the module on feature matrices (pure): fit on the labelled rows, threshold by
    ``policy`` on the validation rows (0.5 without both classes there), ``n`` picks by ``mix``."""
    from workbench.evaluation.baseline import fit_features

    fitted = fit_features(x_labelled, y_labelled, split="train+pool")
    threshold, note = baseline_threshold(fitted, x_val, y_val, policy)
    candidates = baseline_candidates(fitted, x_pool, pool_ids, threshold)
    batch = select_batch(candidates, min(n, len(candidates)), mix, np.random.default_rng(seed))
    fitted_on = f"fitted on {fitted.fitted_on['n']} labels, {fitted.fitted_on['positives']} positive"
    batch = [dataclasses.replace(sel, reason=f"{GUIDED_PREFIX}, {fitted_on}: {sel.reason}") for sel in batch]
    return GuidedBatch(batch, threshold, note, fitted.fitted_on)


def queue_guided(
    engine: Engine,
    settings: Settings,
    n: int,
    *,
    mix: Mapping[str, float] | None = None,
    policy: str = DEFAULT_POLICY,
    seed: int = 0,
    round_id: int | None = None,
) -> dict[str, Any]:
    """Queue ``n`` pool cases chosen by the baseline fitted on the labels so far (see the module); the
    cold start when a class has fewer than ``MIN_PER_CLASS`` labels. Returns counts and what was used.

    A round's batch is queued once: when ``round_id`` already has label items they are left as they are.
    Raises ValidationError for ``n`` < 1, an empty pool or a bad mix or policy.
    """
    from workbench.evaluation.baseline import PairRef, case_refs, features_for, labelled_split

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError(f"the number of cases to queue must be at least 1, got {n!r}")
    shares, mix_note = guided_mix(mix)
    policy = str(parse_policy(policy))  # a bad policy is refused before anything is read or queued
    if round_id is not None and (earlier := _round_batch(engine, round_id)) is not None:
        return earlier
    pool = unlabelled_pool(engine)
    if not pool:
        raise ValidationError("no unlabelled pool cases to choose from (without an open labelling item)")
    labels = training_labels(engine, splits=TRAINABLE)
    positives = sum(labels.values())
    if not can_fit(list(labels.values())):
        out = queue_cold_start(engine, settings, min(n, len(pool)), seed=seed, round_id=round_id)
        why = (
            f"{len(labels)} labelled train/pool cases, {positives} positive: "
            f"fewer than {MIN_PER_CLASS} of a class to fit the baseline on"
        )
        return {**out, "fallback": why}
    ids = sorted(labels)
    val_ids, y_val = labelled_split(engine, "val")
    chosen = guided_batch(
        features_for(case_refs(engine, ids), settings),
        np.asarray([labels[c] for c in ids], dtype=np.int64),
        features_for(case_refs(engine, val_ids), settings),
        y_val,
        features_for([PairRef(*row) for row in pool], settings),
        np.asarray([row[0] for row in pool], dtype=np.int64),
        n,
        shares,
        policy,
        seed,
    )
    batch = chosen.batch
    queued = enqueue(engine, batch, round_id=round_id)
    by_strategy = dict(Counter(sel.strategy for sel in batch))
    return {
        "queued": len(queued),
        "strategy": STRATEGY,
        "by_strategy": by_strategy,
        "fitted_on": chosen.fitted_on,
        "threshold": chosen.threshold,
        "threshold_note": chosen.threshold_note,
        "pool_candidates": len(pool),
        **({"mix_note": mix_note} if mix_note else {}),
    }
