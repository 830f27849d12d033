"""The stopping signal's pure functions on hand-made arrays (``workbench.active.stopping``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.active.stopping import (
    CONSIDER_STOPPING,
    NOT_ENOUGH,
    STILL_PAYING,
    auprc_change,
    positives_left,
    prediction_stability,
    stopping_verdict,
)
from workbench.evaluation.metrics import average_precision


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _val(n: int = 200, positives: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int64)
    y[:positives] = 1
    return y, rng.normal(0, 1, n) + 1.5 * y


def test_identical_versions_change_by_zero_and_the_interval_contains_it() -> None:
    y, score = _val()
    c = auprc_change(y, score, score.copy(), n_boot=200)
    assert c["delta"] == 0.0 and c["low"] == 0.0 and c["high"] == 0.0 and c["includes_zero"]
    assert (c["split"], c["n"], c["positives"]) == ("val", 200, 20)
    assert c["new"] == pytest.approx(average_precision(y, _sigmoid(score)))


def test_a_much_better_version_has_an_interval_above_zero() -> None:
    y, noisy = _val()
    sharp = y * 5.0 + np.random.default_rng(1).normal(0, 0.1, y.shape[0])
    c = auprc_change(y, sharp, noisy, n_boot=300)
    assert c["delta"] > 0 and c["low"] > 0 and c["includes_zero"] is False
    assert c["delta"] == pytest.approx(
        average_precision(y, _sigmoid(sharp)) - average_precision(y, _sigmoid(noisy))
    )


def test_one_class_gives_a_reason_not_a_number() -> None:
    c = auprc_change(np.zeros(5, dtype=np.int64), np.arange(5.0), np.arange(5.0))
    assert c["delta"] is None and c["includes_zero"] is None and "both classes" in c["reason"]


def test_flips_are_counted_exactly_and_ranks_compared() -> None:
    new = np.array([3.0, 2.0, 1.0, 0.0, -1.0, -2.0])
    old = np.array([3.0, 2.0, 1.0, 0.0, -2.0, -1.0])  # the last two swap places
    d_new = np.array([True, True, False, False, False, True])
    d_old = np.array([True, False, False, False, False, False])
    s = prediction_stability(new, old, d_new, d_old, top_k=3)
    assert (s["n"], s["flipped"], s["flagged_new"], s["flagged_old"]) == (6, 2, 3, 1)
    assert s["flip_rate"] == pytest.approx(2 / 6)
    assert s["flip_wilson"][0] < 2 / 6 < s["flip_wilson"][1]
    assert s["top_k_overlap"] == 1.0  # the top 3 are the same cases
    assert s["spearman"] == pytest.approx(1 - 6 * 2 / (6 * 35))  # one adjacent swap: sum d^2 = 2


def test_expected_positives_left_is_the_sum_of_probabilities() -> None:
    p = np.array([0.1, 0.2, 0.05, 0.9, 0.0])
    left = positives_left(p, found=40)
    assert left["expected"] == pytest.approx(1.25)
    sd = math.sqrt(float((p * (1 - p)).sum()))
    assert left["high"] == pytest.approx(1.25 + 1.959964 * sd, rel=1e-5)
    assert left["low"] == pytest.approx(1.25 - 1.959964 * sd, rel=1e-5)
    assert positives_left(np.array([0.5]), found=0)["low"] == 0.0  # clipped at zero
    assert (left["n"], left["found"]) == (5, 40) and left["share_of_found"] == pytest.approx(1.25 / 40)


def _flat(positives: int = 20) -> dict:
    return {
        "split": "val",
        "n": 200,
        "positives": positives,
        "new": 0.7,
        "old": 0.7,
        "delta": 0.0,
        "low": -0.02,
        "high": 0.02,
        "includes_zero": True,
    }


def test_verdicts_follow_the_rule() -> None:
    stable = prediction_stability(
        np.arange(1000.0), np.arange(1000.0), np.zeros(1000, bool), np.zeros(1000, bool)
    )
    few_left = positives_left(np.full(1000, 0.0005), found=100)
    stop = stopping_verdict(_flat(), _flat(), stable, few_left)
    assert stop["verdict"] == CONSIDER_STOPPING and len(stop["reasons"]) == 4

    rising = {**_flat(), "delta": 0.1, "low": 0.03, "high": 0.17, "includes_zero": False}
    paying = stopping_verdict(rising, _flat(), stable, few_left)
    assert paying["verdict"] == STILL_PAYING and "still improving" in paying["reasons"][0]

    moving = {**stable, "flipped": 50, "flip_rate": 0.05}
    assert stopping_verdict(_flat(), _flat(), moving, few_left)["verdict"] == STILL_PAYING
    many_left = positives_left(np.full(1000, 0.05), found=100)
    assert stopping_verdict(_flat(), _flat(), stable, many_left)["verdict"] == STILL_PAYING

    once = stopping_verdict(_flat(), None, stable, few_left)
    assert once["verdict"] == NOT_ENOUGH and "no earlier round" in once["reasons"][1]
    too_few = stopping_verdict(_flat(positives=4), _flat(), stable, few_left)
    assert too_few["verdict"] == NOT_ENOUGH and "too few to tell" in too_few["reasons"][0]
