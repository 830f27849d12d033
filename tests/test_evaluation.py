"""Evaluation library: sweep, confusion, AUROC/AUPRC, bootstrap and Wilson intervals, report rendering."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.metrics import classification_report as sk_classification_report

from workbench.errors import ValidationError
from workbench.evaluation import (
    EvaluationReport,
    average_precision,
    classification_report,
    evaluate,
    format_report,
    plot_report,
    roc_auc,
    stratified_bootstrap_weights,
    wilson_interval,
)


def scores(n: int, prevalence: float = 0.1, seed: int = 0, decimals: int | None = 2):
    """Labels and scores with real overlap; rounding creates ties, as real model outputs often have."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0.0, 1.0)
    if decimals is not None:
        p = np.round(p, decimals)
    return y, p


def test_sweep_matches_sklearn_at_every_threshold():
    y, p = scores(300, seed=1)
    report = evaluate(y, p, split="val", n_boot=50)
    assert [r.threshold for r in report.sweep] == pytest.approx([i * 0.05 for i in range(21)])
    for row in report.sweep:
        pred = (p >= row.threshold).astype(int)
        assert row.accuracy == pytest.approx(accuracy_score(y, pred))
        assert row.precision == pytest.approx(precision_score(y, pred, zero_division=0))
        assert row.recall == pytest.approx(recall_score(y, pred, zero_division=0))
        assert row.f1 == pytest.approx(f1_score(y, pred, zero_division=0))
    # the card's top rows: nothing predicted positive -> precision 0, not an error
    assert report.sweep[-1].tp + report.sweep[-1].fp == 0
    assert report.sweep[-1].precision == 0.0


def test_auroc_auprc_match_sklearn_with_ties():
    for seed in range(3):
        y, p = scores(500, seed=seed, decimals=1)  # heavy ties
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_confusion_and_classification_report_match_sklearn():
    y, p = scores(400, seed=3)
    report = evaluate(y, p, split="test", threshold=0.45, n_boot=20)
    pred = (p >= 0.45).astype(int)
    assert report.confusion.matrix == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert report.sensitivity.value == pytest.approx(tp / (tp + fn))
    assert report.specificity.value == pytest.approx(tn / (tn + fp))
    sk = sk_classification_report(y, pred, labels=[0, 1], output_dict=True, zero_division=0)
    rows = {r.label: r for r in classification_report(y, p, 0.45)}
    for label, key in (
        ("Negative", "0"),
        ("Positive", "1"),
        ("macro avg", "macro avg"),
        ("weighted avg", "weighted avg"),
    ):
        assert rows[label].precision == pytest.approx(sk[key]["precision"])
        assert rows[label].recall == pytest.approx(sk[key]["recall"])
        assert rows[label].f1 == pytest.approx(sk[key]["f1-score"])
        assert rows[label].support == sk[key]["support"]
    assert rows["accuracy"].f1 == pytest.approx(sk["accuracy"])


def test_wilson_interval_inverts_the_score_test():
    z = NormalDist().inv_cdf(0.975)
    for k, n in [(1, 4), (3, 10), (45, 45), (0, 12), (17, 200)]:
        low, high = wilson_interval(k, n)
        phat = k / n
        # each bound is where the score statistic |phat - p0| / sqrt(p0 (1 - p0) / n) equals z
        for bound in (low, high):
            if 0.0 < bound < 1.0:
                assert abs(phat - bound) / math.sqrt(bound * (1 - bound) / n) == pytest.approx(z, rel=1e-9)
        assert low <= phat <= high
    assert wilson_interval(0, 12)[0] == 0.0
    assert wilson_interval(45, 45)[1] == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValidationError):
        wilson_interval(5, 4)


def test_bootstrap_is_stratified_and_seeded():
    y, _ = scores(301, seed=4)
    chunks = list(stratified_bootstrap_weights(y, n_boot=200, seed=7, max_chunk_elements=301 * 64))
    assert len(chunks) > 1  # exercised the chunked path
    weights = np.vstack(chunks)
    assert weights.shape == (200, 301)
    assert np.all(weights[:, y == 1].sum(axis=1) == y.sum())
    assert np.all(weights[:, y == 0].sum(axis=1) == (y == 0).sum())
    again = np.vstack(list(stratified_bootstrap_weights(y, n_boot=200, seed=7, max_chunk_elements=301 * 64)))
    assert np.array_equal(weights, again)
    other = np.vstack(list(stratified_bootstrap_weights(y, n_boot=200, seed=8)))
    assert not np.array_equal(weights, other)


def test_bootstrap_intervals_contain_point_and_narrow_with_n():
    widths = {}
    for n in (200, 3000):
        y, p = scores(n, seed=5, decimals=None)
        report = evaluate(y, p, split="test", n_boot=400, seed=1)
        for name in ("auroc", "auprc", "sensitivity", "specificity", "accuracy", "f1"):
            est = getattr(report, name)
            assert est.low <= est.value <= est.high, name
        for name in ("sensitivity", "specificity", "accuracy"):
            est = getattr(report, name)
            assert est.wilson_low <= est.value <= est.wilson_high
        widths[n] = {
            name: getattr(report, name).high - getattr(report, name).low for name in ("auroc", "auprc")
        }
    for name in ("auroc", "auprc"):
        assert widths[3000][name] < 0.6 * widths[200][name]


def test_undefined_metrics_are_none_with_reason_not_a_crash():
    rng = np.random.default_rng(0)
    y = np.zeros(30, dtype=int)
    p = rng.random(30)
    report = evaluate(y, p, split="val", n_boot=100)
    assert report.positives == 0
    for name in ("sensitivity", "recall", "f1", "auroc", "auprc"):
        est = getattr(report, name)
        assert est.value is None and est.low is None
        assert "no positive" in est.reason
    assert report.specificity.value == pytest.approx(float((p < 0.5).mean()))
    assert all(row.recall is None for row in report.sweep)
    text = format_report(report)
    assert "AUROC undefined (no positive cases in split 'val')" in text
    json.dumps(report.to_dict(), allow_nan=False)
    # no negatives: specificity and AUROC undefined, AUPRC is defined (all flagged cases are positive)
    report = evaluate(np.ones(8, dtype=int), rng.random(8), split="tiny", n_boot=50)
    assert report.specificity.value is None and report.auroc.value is None
    assert report.auprc.value == pytest.approx(1.0)


def test_report_round_trips_through_json():
    y, p = scores(120, seed=7)
    report = evaluate(y, p, split="test", threshold=0.4, n_boot=100, seed=3)
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)
    again = EvaluationReport.from_dict(json.loads(text))
    assert again.to_dict() == d
    assert again.auroc.value == report.auroc.value
    assert again.confusion.matrix == report.confusion.matrix
    with pytest.raises(ValidationError):
        EvaluationReport.from_dict({"split": "x"})


def test_format_report_names_split_n_and_positives_on_every_metric_line():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(45, dtype=int), np.ones(4, dtype=int)]  # the card's test split
    p = np.r_[rng.uniform(0.0, 0.45, 45), [0.3, 0.4, 0.52, 0.2]]
    report = evaluate(y, p, split="test", n_boot=200)
    text = format_report(report)
    ctx = "test (n=49, 4 positive)"
    assert re.search(r"test \(n=49, 4 positive\): AUROC \d\.\d\d \[\d\.\d\d, \d\.\d\d\]", text)
    metric_lines = [line for line in text.splitlines() if re.search(r"\b\d+(\.\d+)?\b", line)]
    assert len(metric_lines) > 30
    for line in metric_lines:
        assert ctx in line or line.startswith("Intervals:"), line
    assert report.confusion.matrix == [[45, 0], [3, 1]]
    assert "Wilson" in text and "bootstrap" in text


def test_plot_report_writes_png(tmp_path: Path):
    y, p = scores(200, seed=8)
    report = evaluate(y, p, split="test", n_boot=50)
    out = plot_report(report, y, p, tmp_path / "figs" / "report.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not [f for f in out.parent.iterdir() if f.name != "report.png"]  # no temp file left behind
    with pytest.raises(ValidationError):
        plot_report(report, y[:-1], p[:-1], tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("y", "p", "split", "message"),
    [
        ([0, 2, 1], [0.1, 0.2, 0.3], "val", "labels must be 0 or 1"),
        ([0, 1, 1], [0.1, 1.2, 0.3], "val", "[0, 1]"),
        ([0, 1], [0.1, 0.2, 0.3], "val", "2 labels but 3 probabilities"),
        ([0, 1], [0.1, float("nan")], "val", "NaN"),
        ([], [], "val", "no cases"),
        ([0, 1], [0.1, 0.2], "", "name of the split"),
    ],
)
def test_bad_inputs_raise_validation_error(y, p, split, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        evaluate(y, p, split=split, n_boot=10)


def test_threshold_outside_unit_interval_is_rejected():
    with pytest.raises(ValidationError, match="threshold"):
        evaluate([0, 1], [0.2, 0.8], split="val", threshold=1.5, n_boot=10)
