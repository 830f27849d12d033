"""``active.ranker.compare_on_val``: the baseline ranks the pool only when its validation AUPRC is
strictly higher than the version's on the same cases; nothing to compare without both classes."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.active.ranker import RankerChoice, compare_on_val, ranked_by
from workbench.evaluation.metrics import average_precision


def test_the_better_validation_auprc_ranks_and_the_note_names_both() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.1).astype(int)
    good = y * 2.0 + rng.normal(0, 1, y.size)
    noise = rng.normal(0, 1, y.size)
    choice = compare_on_val(y, noise, good)
    assert choice.ranker == "baseline" and choice.asked == "auto"
    # AUPRC depends on the order only: the sigmoid of the scores gives the same figure
    assert choice.baseline_auprc == pytest.approx(average_precision(y, 1 / (1 + np.exp(-good))))
    assert choice.version_auprc == pytest.approx(average_precision(y, 1 / (1 + np.exp(-noise))))
    assert (choice.n, choice.positives) == (200, int(y.sum()))
    assert f"baseline {choice.baseline_auprc:.3f} > version {choice.version_auprc:.3f}" in choice.note
    assert choice.reason.startswith("baseline ranker (val AUPRC baseline")

    swapped = compare_on_val(y, good, noise)
    assert swapped.ranker == "version" and "<= version" in swapped.note


def test_a_tie_keeps_the_version() -> None:
    y = np.array([0, 0, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8])
    assert compare_on_val(y, scores, scores * 3).ranker == "version"  # same ranking, same AUPRC


@pytest.mark.parametrize("y", [np.zeros(6, dtype=int), np.ones(6, dtype=int), np.zeros(0, dtype=int)])
def test_without_both_classes_there_is_nothing_to_compare(y: np.ndarray) -> None:
    choice = compare_on_val(y, np.arange(y.size, dtype=float), -np.arange(y.size, dtype=float))
    assert choice.ranker == "version" and choice.version_auprc is None and choice.baseline_auprc is None
    assert "nothing to compare on" in choice.note


def test_ranked_by_labels_each_kind_of_batch() -> None:
    y = np.array([0, 1, 0, 1])
    won = compare_on_val(y, np.array([1.0, 0.0, 0.5, 0.2]), np.arange(4.0))
    label = ranked_by({"ranker": won.to_json()})["label"]
    assert label == f"baseline (val AUPRC {won.baseline_auprc:.2f} > version {won.version_auprc:.2f})"
    kept = compare_on_val(y, np.arange(4.0), np.array([1.0, 0.0, 0.5, 0.2]))
    assert ranked_by({"ranker": kept.to_json()})["label"].startswith("version (val AUPRC 0.83 >= baseline")
    asked = RankerChoice("version", "version", "asked for")
    assert ranked_by({"ranker": asked.to_json()})["label"] == "version (asked for)"
    assert ranked_by({"strategy": "baseline_guided"})["ranker"] == "baseline_guided"
    assert ranked_by({"strategy": "cold_start"})["label"].startswith("cold start")
    assert ranked_by({}) is None
