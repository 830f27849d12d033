"""DeLong AUROC variance and paired test (fast midrank algorithm), against hand-computed placement values,
a brute-force pairwise count and the exact Mann-Whitney statistic."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from workbench.errors import ValidationError
from workbench.evaluation.delong import (
    delong_auroc,
    delong_covariance,
    delong_paired_test,
    exact_auroc_bound,
    placement_values,
)

# Hand example: positives X and negatives Y, interleaved in the input; X=0.6 ties with Y=0.6.
#   X = 0.9, 0.6, 0.4      Y = 0.6, 0.3, 0.2, 0.1
Y_HAND = np.array([1, 0, 1, 0, 0, 1, 0])
A_HAND = np.array([0.9, 0.6, 0.6, 0.3, 0.2, 0.4, 0.1])
# A second score on the same cases: X = 0.8, 0.3, 0.5   Y = 0.2, 0.4, 0.1, 0.6
B_HAND = np.array([0.8, 0.2, 0.3, 0.4, 0.1, 0.5, 0.6])
Z975 = NormalDist().inv_cdf(0.975)


def brute_placements(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement values by counting every positive-negative pair (psi = 1, 1/2 on ties, 0)."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def test_placement_values_and_variance_match_the_hand_computation() -> None:
    v10, v01 = placement_values(Y_HAND, A_HAND)
    # V10 (per positive: fraction of the 4 negatives it outranks, ties 1/2):
    #   0.9 > all 4 -> 1;  0.6 > 0.3, 0.2, 0.1 and ties 0.6 -> 3.5/4;  0.4 > 0.3, 0.2, 0.1 -> 3/4
    assert v10 == pytest.approx([1.0, 7 / 8, 3 / 4])
    # V01 (per negative: fraction of the 3 positives above it, ties 1/2):
    #   0.6: 0.9 above, 0.6 tie -> 1.5/3;  0.3, 0.2, 0.1: all 3 above -> 1
    assert v01 == pytest.approx([1 / 2, 1.0, 1.0, 1.0])
    # AUROC = mean V10 = mean V01 = 7/8.
    # S10 = var([1, 7/8, 3/4], ddof=1) = (1/64 + 0 + 1/64) / 2 = 1/64
    # S01 = var([1/2, 1, 1, 1], ddof=1) = (9/64 + 3/64) / 3 = 1/16
    # Var = S10 / m + S01 / n = (1/64) / 3 + (1/16) / 4 = 1/192 + 1/64 = 1/48
    res = delong_auroc(Y_HAND, A_HAND)
    assert res.value == pytest.approx(7 / 8)
    assert res.variance == pytest.approx(1 / 48)
    assert res.se == pytest.approx(math.sqrt(1 / 48))
    # Logit-scale interval: logit(7/8) = ln 7, se_logit = se / (7/8 * 1/8).
    se_logit = math.sqrt(1 / 48) / (7 / 64)
    expit = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    assert res.low == pytest.approx(expit(math.log(7) - Z975 * se_logit))
    assert res.high == pytest.approx(expit(math.log(7) + Z975 * se_logit))
    assert 0.0 < res.low < res.value < res.high < 1.0
    assert res.flag is None and res.exact_bound is None
    assert (res.positives, res.negatives) == (3, 4)


def test_paired_test_matches_the_hand_computation() -> None:
    # B: V10 = [1, 2/4, 3/4] (AUROC 3/4); V01 = [3/3, 2/3, 3/3, 1/3]
    v10_b, v01_b = placement_values(Y_HAND, B_HAND)
    assert v10_b == pytest.approx([1.0, 1 / 2, 3 / 4])
    assert v01_b == pytest.approx([1.0, 2 / 3, 1.0, 1 / 3])
    # Positives: dev A = [1/8, 0, -1/8], dev B = [1/4, -1/4, 0]
    #   S10_aa = 1/64, S10_bb = (1/16 + 1/16) / 2 = 1/16, S10_ab = (1/32) / 2 = 1/64
    # Negatives: dev A = [-3/8, 1/8, 1/8, 1/8], dev B = [1/4, -1/12, 1/4, -5/12]
    #   S01_aa = 1/16, S01_bb = (1/16 + 1/144 + 1/16 + 25/144) / 3 = 11/108,
    #   S01_ab = (-3/32 - 1/96 + 1/32 - 5/96) / 3 = -1/24
    # Var(A - B) = (1/64 + 1/16 - 2/64) / 3 + (1/16 + 11/108 + 2/24) / 4 = 1/64 + 107/1728 = 67/864
    aucs, cov = delong_covariance(Y_HAND, np.vstack([A_HAND, B_HAND]))
    assert aucs == pytest.approx([7 / 8, 3 / 4])
    assert cov[0, 0] == pytest.approx(1 / 48)
    assert cov[1, 1] == pytest.approx((1 / 16) / 3 + (11 / 108) / 4)
    assert cov[0, 1] == pytest.approx((1 / 64) / 3 + (-1 / 24) / 4)
    res = delong_paired_test(Y_HAND, A_HAND, B_HAND)
    var = 67 / 864
    assert res["delta"] == pytest.approx(1 / 8)
    assert res["se"] == pytest.approx(math.sqrt(var))
    z = (1 / 8) / math.sqrt(var)
    assert res["z"] == pytest.approx(z)
    assert res["p_value"] == pytest.approx(2 * (1 - NormalDist().cdf(z)))
    assert res["low"] == pytest.approx(1 / 8 - Z975 * math.sqrt(var))
    assert res["high"] == pytest.approx(1 / 8 + Z975 * math.sqrt(var))
    assert (res["n"], res["positives"], res["negatives"], res["reason"]) == (7, 3, 4, None)
    swapped = delong_paired_test(Y_HAND, B_HAND, A_HAND)
    assert swapped["delta"] == pytest.approx(-1 / 8) and swapped["p_value"] == pytest.approx(res["p_value"])


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_midranks_agree_with_pairwise_counts_mann_whitney_and_sklearn(decimals: int | None) -> None:
    """Ties (rounded scores; decimals=0 leaves only 0/1 scores) are counted 1/2, exactly."""
    rng = np.random.default_rng(11)
    y = (rng.random(300) < 0.3).astype(int)
    a = rng.normal(0.2 + 0.5 * y, 0.3)
    b = 0.6 * a + rng.normal(0, 0.25, y.size)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    for s in (a, b):
        v10, v01 = placement_values(y, s)
        bv10, bv01 = brute_placements(y, s)
        np.testing.assert_allclose(v10, bv10, atol=1e-12)
        np.testing.assert_allclose(v01, bv01, atol=1e-12)
        m, n = int(y.sum()), int((1 - y).sum())
        u = mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided", method="asymptotic").statistic
        assert delong_auroc(y, s).value == pytest.approx(u / (m * n), abs=1e-12)
        assert delong_auroc(y, s).value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # The 2x2 covariance is the textbook formula on the brute-force placement values.
    pa, pb = brute_placements(y, a), brute_placements(y, b)
    m, n = len(pa[0]), len(pa[1])
    expected = np.cov(np.vstack([pa[0], pb[0]])) / m + np.cov(np.vstack([pa[1], pb[1]])) / n
    _, cov = delong_covariance(y, np.vstack([a, b]))
    np.testing.assert_allclose(cov, expected, atol=1e-14)


def test_auroc_is_invariant_to_monotone_transforms_such_as_sigmoid() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.2).astype(int)
    logit = rng.normal(1.5 * y - 1, 1.0)
    on_logits = delong_auroc(y, logit)
    on_probs = delong_auroc(y, 1 / (1 + np.exp(-logit)))
    assert on_logits.value == pytest.approx(on_probs.value)
    assert on_logits.variance == pytest.approx(on_probs.variance)


def test_perfect_separation_has_zero_variance_a_flag_and_an_exact_bound() -> None:
    y = np.r_[np.zeros(45, dtype=int), np.ones(4, dtype=int)]
    s = np.r_[np.linspace(0.0, 0.4, 45), [0.6, 0.7, 0.8, 0.9]]
    res = delong_auroc(y, s)
    assert res.value == 1.0 and res.variance == 0.0 and (res.low, res.high) == (1.0, 1.0)
    # 4 disjoint positive-negative pairs, all concordant: A ** 4 >= 0.025 -> A >= 0.025 ** (1/4)
    assert res.exact_bound == pytest.approx(0.025**0.25)
    assert res.exact_bound == pytest.approx(0.398, abs=1e-3)
    assert "cannot show the uncertainty" in res.flag and "lower bound 0.40" in res.flag
    assert "4 positive, 45 negative" in res.flag
    flipped = delong_auroc(y, -s)
    assert flipped.value == 0.0 and flipped.exact_bound == pytest.approx(1 - 0.025**0.25)
    assert "upper bound 0.60" in flipped.flag
    assert exact_auroc_bound(0.9, 4, 45) is None
    assert exact_auroc_bound(1.0, 30, 30, level=0.9) == pytest.approx(0.05 ** (1 / 30))


def test_exact_bound_covers_the_true_auroc_at_its_level() -> None:
    """Small samples from a near-perfect model: when AUROC 1 is observed, the bound stays below the truth."""
    rng = np.random.default_rng(5)
    true_auc = NormalDist().cdf(3.0 / math.sqrt(2))  # N(3, 1) vs N(0, 1)
    misses = perfect = 0
    for _ in range(400):
        y = np.r_[np.ones(4, dtype=int), np.zeros(12, dtype=int)]
        s = rng.normal(3.0 * y, 1.0)
        res = delong_auroc(y, s)
        if res.value == 1.0:
            perfect += 1
            misses += res.exact_bound > true_auc
    assert perfect > 100
    assert misses == 0  # conservative: never above the truth here


def test_identical_scores_give_zero_difference_and_p_one() -> None:
    res = delong_paired_test(Y_HAND, A_HAND, A_HAND * 3 + 1)  # same ranking
    assert res["delta"] == 0.0 and res["se"] == 0.0 and res["p_value"] == 1.0
    # Both perfect: nothing to test, and the result says so rather than p = 0.
    y = np.array([0, 0, 0, 1, 1, 1])
    res = delong_paired_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.1, 0.1, 0.1, 0.5, 0.5, 0.5])
    assert res["delta"] == 0.0 and res["p_value"] == 1.0
    res = delong_paired_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.5] * 6)  # perfect vs constant
    assert res["delta"] == pytest.approx(0.5) and res["p_value"] is None
    assert "cannot show" in res["reason"]


def test_paired_test_p_values_are_calibrated_under_the_null() -> None:
    """Two equally good, correlated scores: the 5% test rejects about 5% of the time."""
    rng = np.random.default_rng(7)
    rejections = 0
    reps = 300
    for _ in range(reps):
        y = (rng.random(120) < 0.3).astype(int)
        shared = rng.normal(y, 1.0)
        a = shared + rng.normal(0, 0.7, y.size)
        b = shared + rng.normal(0, 0.7, y.size)
        rejections += delong_paired_test(y, a, b)["p_value"] < 0.05
    assert 0.01 <= rejections / reps <= 0.1


def test_paired_test_detects_a_real_difference() -> None:
    rng = np.random.default_rng(8)
    y = (rng.random(400) < 0.3).astype(int)
    good = rng.normal(1.5 * y, 1.0)
    weak = good + rng.normal(0, 2.0, y.size)
    res = delong_paired_test(y, good, weak)
    assert res["delta"] > 0 and res["low"] > 0 and res["p_value"] < 0.01


def test_undefined_and_invalid_inputs() -> None:
    res = delong_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    assert res.value is None and "no positive" in res.reason
    one = delong_auroc([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])
    assert one.value == 1.0 and one.low is None and "at least 2 positive" in one.reason
    assert one.exact_bound == pytest.approx(0.025)
    assert delong_paired_test([1, 1], [0.2, 0.3], [0.1, 0.4])["reason"].startswith("AUROC is undefined")
    with pytest.raises(ValidationError, match="NaN"):
        delong_auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValidationError, match="0 or 1"):
        delong_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValidationError, match="2 labels but 3 scores"):
        delong_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValidationError, match="level"):
        delong_auroc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], level=1.5)
    # JSON-safe dicts
    assert delong_auroc(Y_HAND, A_HAND).to_dict()["method"].startswith("DeLong")
