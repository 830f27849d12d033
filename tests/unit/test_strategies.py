"""Acquisition strategies and mixed batches on real numpy arrays."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from workbench.active import strategies as st
from workbench.active.strategies import (
    EXPLOIT_SHORTLIST_FACTOR,
    SHORTLIST_FACTOR,
    Candidates,
    k_center_greedy,
    select_batch,
)
from workbench.errors import ValidationError


def _pool(n: int = 200, seed: int = 0, **extra: object) -> Candidates:
    rng = np.random.default_rng(seed)
    return Candidates(
        case_ids=np.arange(1000, 1000 + n), prob=rng.beta(0.5, 3.0, size=n), threshold=0.28, **extra
    )


def _clusters(per: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Three tight, far-apart clusters in 5-D; returns (embeddings, cluster index of each point)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 5, [50.0] + [0.0] * 4, [0.0, 50.0, 0.0, 0.0, 0.0]])
    emb = np.concatenate([c + rng.normal(scale=0.1, size=(per, 5)) for c in centres])
    return emb, np.repeat(np.arange(3), per)


def test_near_threshold_uses_the_operating_threshold() -> None:
    prob = np.array([0.05, 0.27, 0.5, 0.33, 0.9])
    rng = np.random.default_rng(0)
    at_028 = st.near_threshold(Candidates(np.arange(5), prob, threshold=0.28), rng)
    at_050 = st.near_threshold(Candidates(np.arange(5), prob, threshold=0.5), rng)
    assert int(np.argmax(at_028.scores)) == 1  # 0.27 is nearest to 0.28, not 0.5
    assert int(np.argmax(at_050.scores)) == 2
    assert list(np.argsort(-at_028.scores)[:2]) == [1, 3]
    np.testing.assert_allclose(at_028.scores, -np.abs(prob - 0.28))
    assert at_028.reason[3].startswith("p=0.33 near threshold 0.28")


def test_bald_equals_a_hand_computation() -> None:
    mc = np.array([[0.9, 0.5, 0.2], [0.1, 0.5, 0.4], [0.5, 0.5, 0.3]])

    def h(p: float) -> float:
        return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))

    expected = []
    for j in range(3):
        col = mc[:, j]
        expected.append(h(float(col.mean())) - sum(h(float(p)) for p in col) / len(col))
    c = Candidates(np.array([7, 8, 9]), mc.mean(axis=0), threshold=0.3, mc_probs=mc)
    scored = st.bald(c, np.random.default_rng(0))
    np.testing.assert_allclose(scored.scores, expected, atol=1e-9)
    assert abs(scored.scores[1]) < 1e-9  # all samples agree: no mutual information
    assert "3 MC samples" in scored.reason[0]


def test_bald_falls_back_to_uncertainty_and_says_so() -> None:
    unc = np.array([0.01, 0.2, 0.05])
    c = Candidates(np.array([1, 2, 3]), np.array([0.1, 0.4, 0.3]), threshold=0.3, uncertainty=unc)
    scored = st.bald(c, np.random.default_rng(0))
    assert int(np.argmax(scored.scores)) == 1
    assert all("fallback" in r for r in scored.reason)
    with pytest.raises(ValidationError, match="bald"):
        st.bald(Candidates(np.array([1]), np.array([0.2]), threshold=0.3), np.random.default_rng(0))


def test_entropy_tta_and_likely_positive_orderings() -> None:
    prob = np.array([0.02, 0.5, 0.8, 0.35])
    c = Candidates(np.arange(4), prob, threshold=0.2, tta_spread=np.array([0.0, 0.1, 0.4, 0.2]))
    rng = np.random.default_rng(0)
    assert int(np.argmax(st.entropy(c, rng).scores)) == 1
    assert st.entropy(c, rng).scores[1] == pytest.approx(1.0)
    assert list(np.argsort(-st.tta_spread(c, rng).scores)) == [2, 3, 1, 0]
    assert list(np.argsort(-st.likely_positive(c, rng).scores)) == [2, 1, 3, 0]
    with pytest.raises(ValidationError, match="tta_spread"):
        st.tta_spread(Candidates(np.arange(4), prob, threshold=0.2), rng)


def test_k_center_picks_spread_points() -> None:
    emb, cluster = _clusters()
    picks = k_center_greedy(emb, 3, [], np.random.default_rng(5))
    assert sorted(cluster[picks]) == [0, 1, 2]
    # with a point of cluster 0 already selected, the next two come from the two other clusters
    more = k_center_greedy(emb, 2, [3], np.random.default_rng(5))
    assert 3 not in more and sorted(cluster[more]) == [1, 2]
    # exact duplicates of selected points come last
    dup = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert sorted(k_center_greedy(dup, 2, [0], np.random.default_rng(0))) == [2, 3]
    assert k_center_greedy(dup, 10, [0], np.random.default_rng(0))[-1] == 1


def test_diversity_strategy_ranks_one_point_per_cluster_first() -> None:
    emb, cluster = _clusters()
    c = Candidates(np.arange(len(emb)), np.full(len(emb), 0.1), threshold=0.3, embeddings=emb)
    scored = st.diversity(c, np.random.default_rng(2))
    top3 = np.argsort(-scored.scores)[:3]
    assert sorted(cluster[top3]) == [0, 1, 2]


def test_quotas_use_largest_remainder() -> None:
    mix = {"near_threshold": 0.5, "likely_positive": 0.35, "random": 0.15}
    assert st.quotas(mix, 20) == {"near_threshold": 10, "likely_positive": 7, "random": 3}
    # 7 x (0.5, 0.35, 0.15) = 3.5, 2.45, 1.05: floors 3+2+1, the one left goes to the largest remainder
    assert st.quotas(mix, 7) == {"near_threshold": 4, "likely_positive": 2, "random": 1}
    # the default leans to the likely positives: half the batch, near-threshold a third, random the rest
    assert st.quotas(st.DEFAULT_MIX, 20) == {"near_threshold": 7, "likely_positive": 10, "random": 3}
    assert sum(st.quotas({"entropy": 1 / 3, "random": 1 / 3, "likely_positive": 1 / 3}, 10).values()) == 10


def test_select_batch_fills_quotas_without_duplicates() -> None:
    pool = _pool()
    batch = select_batch(pool, 20, rng=np.random.default_rng(3))
    ids = [s.case_id for s in batch]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert Counter(s.strategy for s in batch) == st.quotas(st.DEFAULT_MIX, 20)
    prob = dict(zip(pool.case_ids.tolist(), pool.prob.tolist(), strict=True))
    taken = set(ids)
    # near-threshold picks are at least as close to 0.28 as anything left in the pool ...
    near = [abs(prob[s.case_id] - 0.28) for s in batch if s.strategy == "near_threshold"]
    left = [abs(p - 0.28) for cid, p in prob.items() if cid not in taken]
    assert max(near) <= min(left)
    # ... likely-positive picks at least as probable as anything left
    likely = [prob[s.case_id] for s in batch if s.strategy == "likely_positive"]
    assert min(likely) >= max(p for cid, p in prob.items() if cid not in taken)
    assert all(s.reason for s in batch)
    assert any("near threshold 0.28" in s.reason for s in batch)


def test_random_slice_is_drawn_from_the_whole_pool() -> None:
    """The audit sample is drawn first, so it can contain the case another strategy would take first."""
    pool = Candidates(np.arange(10), np.linspace(0.01, 0.99, 10), threshold=0.3)
    hits = 0
    for seed in range(200):
        batch = select_batch(pool, 2, {"likely_positive": 0.5, "random": 0.5}, rng=seed)
        assert len({s.case_id for s in batch}) == 2
        hits += any(s.strategy == "random" and s.case_id == 9 for s in batch)
    assert 5 <= hits <= 60  # about 1 in 10


def test_batch_larger_than_pool_returns_everything() -> None:
    pool = _pool(n=6)
    batch = select_batch(pool, 50, rng=0)
    assert sorted(s.case_id for s in batch) == sorted(pool.case_ids.tolist())


def test_embeddings_thin_out_near_duplicates() -> None:
    # five near-identical top cases, four distinct ones just below them
    emb = np.concatenate([np.ones((5, 4)) + 1e-6 * np.arange(5)[:, None], 10 * np.eye(4), np.zeros((11, 4))])
    prob = np.concatenate([np.linspace(0.99, 0.95, 5), np.linspace(0.9, 0.8, 4), np.full(11, 0.01)])
    ids = np.arange(100, 120)
    plain = select_batch(Candidates(ids, prob, 0.5), 3, {"likely_positive": 1.0}, rng=0)
    assert {s.case_id for s in plain} <= set(range(100, 105))
    spread = select_batch(Candidates(ids, prob, 0.5, embeddings=emb), 3, {"likely_positive": 1.0}, rng=0)
    dups = [s for s in spread if s.case_id < 105]
    assert len(dups) == 1 and dups[0].case_id == 100  # the best one is kept, its copies are not
    assert all("k-center" in s.reason for s in spread)


def test_likely_positive_keeps_to_the_top_of_its_ranking_while_exploring_slices_spread_out() -> None:
    # the 4 best-ranked cases sit close together (not duplicates), 8 lower-ranked ones far apart
    rng = np.random.default_rng(3)
    emb = np.concatenate([rng.normal(0, 0.5, (4, 3)), 20 * rng.normal(0, 1, (8, 3))])
    prob = np.concatenate([np.linspace(0.99, 0.96, 4), np.linspace(0.9, 0.8, 8)])
    ids = np.arange(len(prob))
    pool = Candidates(ids, prob, threshold=0.97, embeddings=emb)
    exploit = select_batch(pool, 3, {"likely_positive": 1.0}, rng=0)
    top = int(EXPLOIT_SHORTLIST_FACTOR * 3)
    assert {s.case_id for s in exploit} <= set(range(top)) and top < SHORTLIST_FACTOR * 3
    assert all(f"among the top {top} " in s.reason for s in exploit)
    # near_threshold ranks the same cases 0-3 first (closest to 0.97) but spreads over its 3x shortlist
    explore = select_batch(pool, 3, {"near_threshold": 1.0}, rng=0)
    assert any(s.case_id >= top for s in explore)


def test_diversity_in_a_mix() -> None:
    emb, cluster = _clusters()
    n = len(emb)
    c = Candidates(np.arange(n), np.full(n, 0.1), threshold=0.3, embeddings=emb)
    batch = select_batch(c, 3, {"diversity": 1.0}, rng=4)
    assert sorted(cluster[[s.case_id for s in batch]]) == [0, 1, 2]


@pytest.mark.parametrize(
    ("mix", "match"),
    [
        ({"nearest": 1.0}, "unknown strategy"),
        ({"near_threshold": 0.7, "random": 0.7}, "sum to 1"),
        ({"near_threshold": 1.2, "random": -0.2}, ">= 0"),
        ({"near_threshold": float("nan"), "random": 1.0}, ">= 0"),
        ({}, "empty"),
        ({"diversity": 1.0}, "embeddings"),
    ],
)
def test_bad_mix_is_refused(mix: dict[str, float], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        select_batch(_pool(n=10), 5, mix, rng=0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        select_batch(_pool(n=10), 0)
    with pytest.raises(ValidationError, match="duplicates"):
        Candidates(np.array([1, 1]), np.array([0.1, 0.2]), 0.3)
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        Candidates(np.array([1, 2]), np.array([0.1, 1.2]), 0.3)
    with pytest.raises(ValidationError, match="shape"):
        Candidates(np.array([1, 2]), np.array([0.1, 0.2]), 0.3, embeddings=np.zeros((3, 2)))
    with pytest.raises(ValidationError, match="mc_probs"):
        Candidates(np.array([1, 2]), np.array([0.1, 0.2]), 0.3, mc_probs=np.zeros((1, 2)))
