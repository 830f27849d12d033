"""The baseline-guided batch as a pure function (``active.guided``): mix, fit check, threshold, picks."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.active.guided import GUIDED_PREFIX, MIN_PER_CLASS, can_fit, guided_batch, guided_mix
from workbench.active.strategies import DEFAULT_MIX
from workbench.errors import ValidationError


def _data(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Eight features, the first one carries the class; 60 labelled, 40 validation, 200 pool rows."""
    rng = np.random.default_rng(seed)

    def rows(n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < rate).astype(np.int64)
        x = rng.normal(size=(n, 8))
        x[:, 0] += 2.5 * y
        return x, y

    x_lab, y_lab = rows(60, 0.25)
    x_val, y_val = rows(40, 0.25)
    x_pool, y_pool = rows(200, 0.1)
    return x_lab, y_lab, x_val, y_val, x_pool, y_pool


def test_mix_that_needs_a_network_is_replaced_by_the_default() -> None:
    assert guided_mix(None) == (dict(DEFAULT_MIX), None)
    shares, note = guided_mix({"power:bald": 0.6, "random": 0.4})
    assert shares == dict(DEFAULT_MIX) and note and "power:bald need a model's passes" in note
    assert guided_mix({"class_balanced": 0.85, "random": 0.15}) == (
        {"class_balanced": 0.85, "random": 0.15},
        None,
    )
    with pytest.raises(ValidationError):
        guided_mix({"near_threshold": 0.3})  # does not sum to 1


def test_can_fit_needs_both_classes() -> None:
    assert can_fit([1] * MIN_PER_CLASS + [0] * MIN_PER_CLASS)
    assert not can_fit([1] * (MIN_PER_CLASS - 1) + [0] * 30)
    assert not can_fit([0] * 30) and not can_fit([])


def test_guided_batch_takes_likely_positives_from_the_top_of_the_baseline() -> None:
    x_lab, y_lab, x_val, y_val, x_pool, y_pool = _data()
    ids = np.arange(1000, 1200)
    got = guided_batch(x_lab, y_lab, x_val, y_val, x_pool, ids, 20, {"likely_positive": 1.0}, seed=0)
    assert len(got.batch) == 20 and len({s.case_id for s in got.batch}) == 20
    assert got.fitted_on == {"split": "train+pool", "n": 60, "positives": int(y_lab.sum())}
    assert all(s.reason.startswith(f"{GUIDED_PREFIX}, fitted on 60 labels") for s in got.batch)
    # k-center keeps 20 of the top 60 by the baseline's score: every pick is from that shortlist
    from workbench.evaluation.baseline import fit_features

    score = fit_features(x_lab, y_lab).score(x_pool)
    top60 = set(ids[np.argsort(-score)[:60]])
    picked = [s.case_id for s in got.batch]
    assert set(picked) <= top60
    # and they hold far more positives than the pool's rate
    rate = y_pool[np.isin(ids, picked)].mean()
    assert rate > 3 * y_pool.mean()


def test_threshold_by_policy_on_validation_or_why_not() -> None:
    x_lab, y_lab, x_val, y_val, x_pool, _ = _data(1)
    ids = np.arange(200)
    by_policy = guided_batch(x_lab, y_lab, x_val, y_val, x_pool, ids, 5, DEFAULT_MIX, "max_f1")
    assert "by policy max_f1 on val (n=40" in by_policy.threshold_note and 0 < by_policy.threshold < 1
    one_class = guided_batch(x_lab, y_lab, x_val, np.zeros_like(y_val), x_pool, ids, 5, DEFAULT_MIX)
    assert one_class.threshold == 0.5 and "0.5 (balanced boundary)" in one_class.threshold_note
    fixed = guided_batch(x_lab, y_lab, x_val[:0], y_val[:0], x_pool, ids, 5, DEFAULT_MIX, "fixed:0.3")
    assert fixed.threshold == 0.3 and fixed.threshold_note == "0.300 by policy fixed:0.3"
    # more than the pool holds: the whole pool, once each
    everything = guided_batch(x_lab, y_lab, x_val, y_val, x_pool[:7], ids[:7], 20, DEFAULT_MIX)
    assert sorted(s.case_id for s in everything.batch) == list(range(7))
