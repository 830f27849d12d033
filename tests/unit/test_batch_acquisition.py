"""Batch-aware acquisition: stochastic (power / softmax / softrank) sampling of a strategy's scores,
the class-balanced strategy, and TypiClust's cold-start picks on planted clusters."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.active.cold_start import typical_picks, typicality
from workbench.active.strategies import (
    Candidates,
    binary_entropy,
    sampling_keys,
    select_batch,
    strategy_for,
    validate_mix,
)
from workbench.errors import ValidationError
from workbench.experiments.config import parse_strategy


def _pool(n: int = 200, seed: int = 0, threshold: float = 0.3) -> Candidates:
    rng = np.random.default_rng(seed)
    return Candidates(np.arange(n) + 1000, rng.random(n), threshold)


def _ids(batch: list) -> list[int]:
    return [sel.case_id for sel in batch]


@pytest.mark.parametrize("name", ["power:near_threshold", "softmax@5:likely_positive", "softrank:entropy"])
def test_sampling_is_reproducible_from_the_seed_and_varies_across_seeds(name: str) -> None:
    pool = _pool()
    first = _ids(select_batch(pool, 10, {name: 1.0}, 7))
    assert first == _ids(select_batch(pool, 10, {name: 1.0}, 7))
    assert any(_ids(select_batch(pool, 10, {name: 1.0}, seed)) != first for seed in range(8, 12))


@pytest.mark.parametrize(
    ("mode", "beta", "weight"),
    [
        ("power", 1.0, lambda s: s),
        ("power", 2.0, lambda s: s**2),
        ("softmax", 1.0, np.exp),
        ("softrank", 1.0, lambda s: 1.0 / np.array([4.0, 3.0, 2.0, 1.0])),
    ],
)
def test_a_single_draw_follows_the_modes_weights(mode: str, beta: float, weight) -> None:  # type: ignore[no-untyped-def]
    """Gumbel-top-1 over 4000 seeded draws: the empirical frequencies match weight / sum(weight)
    within 0.03 (about 4 standard errors)."""
    scores = np.array([0.5, 1.0, 1.5, 2.0])
    rng = np.random.default_rng(0)
    wins = np.bincount(
        [int(np.argmax(sampling_keys(scores, mode, beta, rng))) for _ in range(4000)], minlength=4
    )
    expected = weight(scores) / weight(scores).sum()
    assert np.abs(wins / 4000 - expected).max() < 0.03


def test_sampling_picks_high_scores_more_often_than_low() -> None:
    """Over 200 seeds, power sampling of likely_positive takes the top quarter of scores at least 3x
    as often as the bottom quarter, and still reaches beyond the top-k (it is not a top-k)."""
    pool = _pool(n=100)
    counts = np.zeros(len(pool))
    for seed in range(200):
        for sel in select_batch(pool, 10, {"power:likely_positive": 1.0}, seed):
            counts[sel.case_id - 1000] += 1
    order = np.argsort(pool.prob)
    low, high = counts[order[:25]].sum(), counts[order[-25:]].sum()
    assert high >= 3 * low > 0
    assert (counts[order[:-10]] > 0).sum() > 20


@pytest.mark.parametrize(
    ("sampled", "plain"),
    [
        ("power@1e6:near_threshold", "near_threshold"),
        ("power@1e6:likely_positive", "likely_positive"),
        ("softmax@1e6:entropy", "entropy"),
        ("softrank@1e6:likely_positive", "likely_positive"),
    ],
)
def test_a_large_beta_is_the_deterministic_top_k(sampled: str, plain: str) -> None:
    pool = _pool()
    for seed in range(3):
        assert _ids(select_batch(pool, 15, {sampled: 1.0}, seed)) == _ids(
            select_batch(pool, 15, {plain: 1.0}, seed)
        )


def test_sampled_picks_report_the_base_score_and_say_how_they_were_drawn() -> None:
    pool = _pool()
    batch = select_batch(pool, 5, {"softmax@20:near_threshold": 0.6, "random": 0.4}, 3)
    sampled = [sel for sel in batch if sel.strategy == "softmax@20:near_threshold"]
    assert len(sampled) == 3
    for sel in sampled:
        assert sel.reason.startswith("sampled by softmax (beta=20) from: p=")
        i = sel.case_id - 1000
        assert sel.score == pytest.approx(-abs(pool.prob[i] - pool.threshold))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("powr:bald", "unknown sampling mode 'powr'"),
        ("power:random", "'random' cannot be sampled"),
        ("power:diversity", "'diversity' cannot be sampled"),
        ("power:nope", "'nope' cannot be sampled"),
        ("power@x:bald", "beta 'x' is not a number"),
        ("softmax@-1:bald", "beta must be a finite number >= 0"),
        ("softmax@0.0000001:likely_positive", "longer than 32 characters"),
        ("nope", "unknown strategy 'nope'.*power:near_threshold"),
    ],
)
def test_bad_names_are_refused_with_the_reason(name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_mix({name: 1.0})
    with pytest.raises(ValidationError, match=message):
        parse_strategy(name)


def test_the_simulator_takes_sampled_and_class_balanced_mixes() -> None:
    assert parse_strategy("power:near_threshold=0.5+power:likely_positive=0.35+random=0.15") == {
        "power:near_threshold": 0.5,
        "power:likely_positive": 0.35,
        "random": 0.15,
    }
    assert parse_strategy("class_balanced") == {"class_balanced": 1.0}
    with pytest.raises(ValidationError, match="cannot be simulated"):
        parse_strategy("power:tta_spread")


def test_class_balanced_takes_half_from_each_side_of_the_threshold() -> None:
    pool = _pool(n=300, seed=1, threshold=0.3)
    batch = select_batch(pool, 10, {"class_balanced": 1.0}, 0)
    likely = [s for s in batch if "likely-positive half" in s.reason]
    hidden = [s for s in batch if "hidden-positive half" in s.reason]
    assert len(likely) == len(hidden) == 5
    prob = dict(zip(pool.case_ids.tolist(), pool.prob, strict=True))
    negatives = [c for c in pool.case_ids.tolist() if prob[c] < pool.threshold]
    by_entropy = sorted(negatives, key=lambda c: -binary_entropy(np.array([prob[c]]))[0])
    assert {s.case_id for s in hidden} == set(by_entropy[:5])
    weighted = {c: prob[c] * binary_entropy(np.array([prob[c]]))[0] for c in prob}
    assert {s.case_id for s in likely} == set(sorted(weighted, key=lambda c: -weighted[c])[:5])
    assert all(s.score == pytest.approx(weighted[s.case_id]) for s in likely)


def test_class_balanced_without_predicted_negatives_fills_from_the_likely_positive_half() -> None:
    pool = Candidates(np.arange(20), np.linspace(0.5, 0.9, 20), 0.1)
    batch = select_batch(pool, 6, {"class_balanced": 1.0}, 0)
    assert len(batch) == 6 and all("likely-positive half" in s.reason for s in batch)
    empty = Candidates(np.zeros(0, dtype=np.int64), np.zeros(0), 0.5)
    assert strategy_for("class_balanced")(empty, np.random.default_rng(0)).reason == []


def test_typiclust_picks_the_most_typical_case_of_each_planted_cluster() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [20, 0], [0, 20], [20, 20], [40, 40]], dtype=float)
    sizes = [60, 45, 30, 20, 12]
    x = np.concatenate([c + rng.normal(0, 1, (m, 2)) for c, m in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(5), sizes)
    picks = typical_picks(x, 5, seed=0)
    assert sorted(truth[p.index] for p in picks) == [0, 1, 2, 3, 4]
    assert [p.cluster_size for p in picks] == sizes  # largest cluster first
    for p in picks:
        members = np.flatnonzero(truth == truth[p.index])
        z = (x - x.mean(axis=0)) / x.std(axis=0)
        assert p.index == members[np.argmax(typicality(z[members], min(20, members.size - 1)))]
        # the most typical case sits near its cluster's centre, not on its rim
        assert np.linalg.norm(x[p.index] - centres[truth[p.index]]) < 1.0


def test_typiclust_refuses_bad_sizes() -> None:
    x = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(ValidationError, match="at least 1"):
        typical_picks(x, 0)
    with pytest.raises(ValidationError, match="cannot pick 7 cases from a pool of 6"):
        typical_picks(x, 7)
    assert len(typical_picks(x, 6)) == 6  # every case its own cluster
