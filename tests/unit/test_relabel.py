"""Out-of-fold relabel ranking on synthetic features: planted label flips rank first (no Keras, no DB)."""

from __future__ import annotations

import numpy as np

from workbench.active.relabel import folds_possible, out_of_fold_probabilities, rank_out_of_fold


def _clusters(n: int = 300, flips: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two separable Gaussian clusters (20% positive) in 8 dimensions with ``flips`` labels flipped."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.2).astype(np.int64)
    x = rng.normal(0, 1, (n, 8)) + np.where(truth[:, None] == 1, 2.5, -0.5)
    flipped = rng.choice(n, flips, replace=False)
    y = truth.copy()
    y[flipped] = 1 - y[flipped]
    return x, y, flipped


def test_planted_flips_rank_first() -> None:
    x, y, flipped = _clusters()
    issues, p_pos = rank_out_of_fold(x, y)
    assert set(issues[:5]) == set(flipped)
    # each flip's out-of-fold probability points at its true class
    assert np.all(np.abs(p_pos[flipped] - y[flipped]) > 0.5)


def test_folds_keep_patients_together() -> None:
    """Two cases per patient, features = the patient's one-hot code: a twin in the training folds
    would give a case's label away; held out together, nothing about the case is known."""
    rng = np.random.default_rng(1)
    y = np.repeat((rng.random(100) < 0.3).astype(np.int64), 2)
    patients = np.repeat(np.arange(100), 2)
    x = np.eye(100)[patients]
    grouped = out_of_fold_probabilities(x, y, patients.astype(str))[:, 1]
    leaky = out_of_fold_probabilities(x, y, None)[:, 1]  # the control: plain stratified folds
    gap = lambda p: p[y == 1].mean() - p[y == 0].mean()  # noqa: E731
    assert abs(gap(grouped)) < 0.05
    assert gap(leaky) > 0.1


def test_too_few_positives_for_folds_says_why() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert folds_possible(y, np.arange(10).astype(str), 5) == "3 positive patient(s) labelled, 5-fold needs 5"
    assert folds_possible(np.array([1] * 5 + [0] * 5), np.arange(10).astype(str), 5) is None
