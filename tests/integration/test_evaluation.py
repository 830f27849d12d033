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


# ----------------------------------------------------------------------------------------------------
# DeLong beside the bootstrap, degenerate-interval flags, decision curves, version comparison


ESTIMATES = ("accuracy", "precision", "recall", "f1", "sensitivity", "specificity", "auroc", "auprc")


def separated_split() -> tuple[np.ndarray, np.ndarray]:
    """The card's test split shape (45 negative, 4 positive), perfectly separated at 0.5."""
    y = np.r_[np.zeros(45, dtype=int), np.ones(4, dtype=int)]
    p = np.r_[np.linspace(0.02, 0.4, 45), [0.6, 0.7, 0.8, 0.9]]
    return y, p


def test_report_has_a_delong_interval_beside_the_bootstrap():
    y, p = scores(3000, prevalence=0.2, seed=5, decimals=None)
    report = evaluate(y, p, split="test", n_boot=400, seed=1)
    d = report.auroc_delong
    assert d["value"] == pytest.approx(report.auroc.value)
    assert d["low"] < d["value"] < d["high"] and d["flag"] is None
    assert "logit" in d["method"]
    # Two ways to the same uncertainty on a large split: the widths agree within 25%.
    assert (d["high"] - d["low"]) == pytest.approx(report.auroc.high - report.auroc.low, rel=0.25)
    text = format_report(report)
    line = next(ln for ln in text.splitlines() if ": AUROC " in ln)
    assert re.search(r"AUROC \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \(DeLong 95% \[\d\.\d\d, \d\.\d\d\]\)$", line)
    assert "DeLong (logit scale) for AUROC" in text
    again = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert again.auroc_delong == d


def test_perfectly_separated_split_flags_every_degenerate_interval():
    y, p = separated_split()
    report = evaluate(y, p, split="test", n_boot=200)
    for name in ESTIMATES:
        est = getattr(report, name)
        assert est.value == 1.0 and (est.low, est.high) == (1.0, 1.0), name
        assert est.flag and est.flag.startswith("zero-width interval [1.00, 1.00]"), name
    # Proportions at 1: the exact interval instead; n of n gives a lower bound of 0.025 ** (1 / n).
    spec = report.specificity
    assert spec.exact_low == pytest.approx(0.025 ** (1 / 45)) and spec.exact_high == 1.0
    assert "exact (Clopper-Pearson) 95% interval [0.92, 1.00] for 45/45" in spec.flag
    assert report.sensitivity.exact_low == pytest.approx(0.025 ** (1 / 4))
    # AUROC 1: DeLong variance 0 too; the flag gives the exact bound from 4 disjoint pairs.
    assert report.auroc_delong["variance"] == 0.0 and report.auroc_delong["flag"]
    assert report.auroc_delong["exact_bound"] == pytest.approx(0.025**0.25)
    assert "DeLong variance is 0 too" in report.auroc.flag and "lower bound is 0.40" in report.auroc.flag
    text = format_report(report)
    ctx = "test (n=49, 4 positive)"
    assert f"{ctx}: AUROC 1.00 [1.00, 1.00]! (DeLong 95% [1.00, 1.00]!)" in text
    assert (
        f"{ctx}: Specificity @0.50 1.00 [1.00, 1.00]! (Wilson 95% [0.92, 1.00]) (exact 95% [0.92, 1.00])"
        in text
    )
    footnotes = [ln for ln in text.splitlines() if ln.startswith("! ")]
    assert len(footnotes) == len(ESTIMATES)
    assert all(ln.startswith(f"! {ctx}: ") for ln in footnotes)
    assert "Flagged intervals (!)" in text
    # Flags survive JSON; reports stored before flags existed still load (flags None).
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert EvaluationReport.from_dict(d).specificity.flag == spec.flag
    for name in ESTIMATES:
        for key in ("flag", "exact_low", "exact_high"):
            d[name].pop(key)
    d.pop("auroc_delong")
    old = EvaluationReport.from_dict(d)
    assert old.auroc.flag is None and old.auroc_delong is None
    assert "!" not in format_report(old).split("Confusion matrix")[0]


def test_a_normal_split_has_no_flags():
    y, p = scores(400, prevalence=0.3, seed=2, decimals=None)
    report = evaluate(y, p, split="val", threshold=0.45, n_boot=300)
    assert [name for name in ESTIMATES if getattr(report, name).flag] == []
    assert report.auroc_delong["flag"] is None
    text = format_report(report)
    assert "Flagged" not in text and "]!" not in text and "exact 95%" not in text


def test_interval_flag_rules():
    from workbench.evaluation import Estimate, interval_flag

    assert interval_flag(Estimate(0.9, 0.8, 0.95), "x") is None
    assert interval_flag(Estimate(None), "x") is None
    assert interval_flag(Estimate(0.5, 0.5, 0.5), "read Y").endswith("; read Y")
    at_edge = interval_flag(Estimate(1.0, 0.75, 1.0), "read Y")
    assert at_edge.startswith("at the boundary") and at_edge.endswith("read Y")
    assert interval_flag(Estimate(0.0, 0.0, 0.2), "").startswith("at the boundary")
    assert interval_flag(Estimate(0.97, 0.9, 1.0), "x") is None  # touches 1 but the estimate is not on it


def test_exact_proportion_interval_is_clopper_pearson():
    from scipy.stats import binomtest

    from workbench.evaluation import exact_proportion_interval

    for k, n in [(0, 10), (3, 10), (45, 45), (1, 4)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert exact_proportion_interval(k, n) == pytest.approx((ci.low, ci.high))
    assert exact_proportion_interval(0, 0) is None
    with pytest.raises(ValidationError):
        exact_proportion_interval(5, 4)


def test_decision_curve_matches_the_hand_computation():
    from workbench.evaluation import decision_curve, net_benefit

    y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])  # 3 positive of 10
    p = np.array([0.9, 0.4, 0.35, 0.1, 0.2, 0.05, 0.6, 0.15, 0.3, 0.02])
    dc = decision_curve(y, p, [0.1, 0.25, 0.5], split="test")
    assert (dc["split"], dc["n"], dc["positives"], dc["prevalence"]) == ("test", 10, 3, 0.3)
    # pt 0.10: p >= 0.1 flags 0.9, 0.4 (positive) and 6 negatives -> 2/10 - 6/10 * (1/9)
    # pt 0.25: flags 0.9, 0.4 (positive) and 0.35, 0.6, 0.3 -> 2/10 - 3/10 * (1/3) = 0.1
    # pt 0.50: flags 0.9 (positive) and 0.6 -> 1/10 - 1/10 * 1 = 0
    assert dc["tp"] == [2, 2, 1] and dc["fp"] == [6, 3, 1]
    assert dc["model"] == pytest.approx([0.2 - 0.6 / 9, 0.1, 0.0])
    # Treat all at pt: prevalence - (1 - prevalence) * pt / (1 - pt)
    assert dc["treat_all"] == pytest.approx([0.3 - 0.7 / 9, 0.3 - 0.7 / 3, 0.3 - 0.7])
    assert dc["treat_none"] == [0.0, 0.0, 0.0]
    assert dc["useful"] == [False, True, False]
    assert net_benefit(y, p, 0.25) == pytest.approx(0.1)
    json.dumps(dc, allow_nan=False)
    default = decision_curve(y, p, split="val")
    assert default["thresholds"][0] == 0.01 and default["thresholds"][-1] == 0.5
    assert len(default["thresholds"]) == 50
    prev = 0.3
    expected = [prev - (1 - prev) * t / (1 - t) for t in default["thresholds"]]
    assert default["treat_all"] == pytest.approx(expected)
    with pytest.raises(ValidationError, match="strictly between 0 and 1"):
        decision_curve(y, p, [0.0, 0.5], split="test")
    with pytest.raises(ValidationError, match="strictly between 0 and 1"):
        decision_curve(y, p, [1.0], split="test")
    with pytest.raises(ValidationError, match="name of the split"):
        decision_curve(y, p, split=" ")


def test_plot_report_has_a_decision_curve_panel(tmp_path: Path):
    y, p = scores(200, seed=8)
    report = evaluate(y, p, split="test", n_boot=50)
    out = plot_report(report, y, p, tmp_path / "report.png", decision_thresholds=[0.05, 0.1, 0.2, 0.3])
    data = out.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert height > 0.6 * width  # two rows of panels: ROC, PR / sweep, decision curve


def _scored_versions(engine, n: int = 150, seed: int = 0):  # type: ignore[no-untyped-def]
    """Test cases with labels and three versions' stored logits: strong, weak (noisier) and a twin of
    strong with independent noise of the same size; the weak one misses two cases."""
    from tests.factories import label_of, make_cases, make_version
    from workbench.model.predictions import write_predictions

    ids = make_cases(engine, {"test": n, "val": 6}, positive_rate=0.3, seed=seed)["test"]
    y = label_of(engine, ids).astype(int)
    rng = np.random.default_rng(seed)
    shared = rng.normal(2.0 * y, 1.0)
    logits = {
        "strong": shared + rng.normal(0, 0.3, n),
        "weak": shared + rng.normal(0, 3.0, n),
        "twin": shared + rng.normal(0, 0.3, n),
    }
    versions = {}
    for name, z in logits.items():
        keep = slice(2, None) if name == "weak" else slice(None)
        vid = make_version(engine)
        # probabilities deliberately saturated: the comparison must use the logits
        write_predictions(engine, vid, ids[keep], z[keep], np.round(1 / (1 + np.exp(-z[keep])), 1), None)
        versions[name] = vid
    return np.asarray(ids), y, logits, versions


def test_compare_versions_is_a_paired_delong_test_on_logits(engine):  # type: ignore[no-untyped-def]
    from workbench.evaluation import delong_paired_test
    from workbench.evaluation.version import compare_versions, comparison_lines

    ids, y, logits, v = _scored_versions(engine)
    res = compare_versions(engine, v["strong"], v["weak"], "test")
    common = slice(2, None)  # weak did not score the first two cases
    expected = delong_paired_test(y[common], logits["strong"][common], logits["weak"][common])
    assert (res["n"], res["positives"]) == (len(ids) - 2, int(y[common].sum()))
    assert res["delta"] == pytest.approx(expected["delta"]) and res["p_value"] == pytest.approx(
        expected["p_value"]
    )
    assert res["a"]["value"] == pytest.approx(roc_auc_score(y[common], logits["strong"][common]))
    assert res["b"]["value"] == pytest.approx(roc_auc_score(y[common], logits["weak"][common]))
    assert res["winner"] == v["strong"] and res["significant"] is True and res["score"] == "logit"
    ctx = f"test (n={res['n']}, {res['positives']} positive)"
    assert res["verdict"].startswith(f"v{v['strong']} beats v{v['weak']} on {ctx}: ΔAUROC +0.")
    assert re.search(r"ΔAUROC \+0\.\d\d \[\+0\.\d\d, \+0\.\d\d\], p(=|<)0\.\d+$", res["verdict"])
    assert res["excluded"] == {"only_version": 2, "only_other": 0}
    assert any(f"scored only by v{v['strong']}" in note for note in res["notes"])
    json.dumps(res, allow_nan=False)
    lines = comparison_lines(res)
    assert any(ln.startswith(f"{ctx}: ΔAUROC (v{v['strong']} - v{v['weak']}) +0.") for ln in lines)
    assert f"Verdict: {res['verdict']}" in lines

    worse = compare_versions(engine, v["weak"], v["strong"], "test")
    assert worse["winner"] == v["strong"] and worse["delta"] == pytest.approx(-res["delta"])
    assert worse["verdict"].startswith(f"v{v['weak']} is worse than v{v['strong']} on {ctx}")

    same = compare_versions(engine, v["strong"], v["twin"], "test")
    assert same["significant"] is False and same["winner"] is None
    assert same["verdict"].startswith(f"no detectable difference between v{v['strong']} and v{v['twin']}")


def test_compare_versions_refuses_what_cannot_be_compared(engine):  # type: ignore[no-untyped-def]
    from tests.factories import make_version
    from workbench.errors import NotFoundError, WorkbenchError
    from workbench.evaluation.version import compare_versions

    _, _, _, v = _scored_versions(engine, n=40)
    with pytest.raises(ValidationError, match="with itself"):
        compare_versions(engine, v["strong"], v["strong"])
    with pytest.raises(NotFoundError, match="no model version 999"):
        compare_versions(engine, v["strong"], 999)
    with pytest.raises(ValidationError, match="split must be one of"):
        compare_versions(engine, v["strong"], v["weak"], "pool")
    unscored = make_version(engine)
    with pytest.raises(WorkbenchError, match="no labelled test cases both scored"):
        compare_versions(engine, v["strong"], unscored)
    with pytest.raises(WorkbenchError, match="no labelled val cases both scored"):
        compare_versions(engine, v["strong"], v["weak"], "val")


def test_evaluate_cli_compare_prints_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from workbench.db.engine import create_db_engine
    from workbench.db.schema import upgrade
    from workbench_cli import app

    home = tmp_path / "wb"
    home.mkdir()
    eng = create_db_engine(f"sqlite:///{home / 'workbench.db'}")
    upgrade(eng)
    _, _, _, v = _scored_versions(eng, n=60, seed=3)
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    png = tmp_path / "curves.png"
    args = ["evaluate", str(v["strong"]), "--no-baseline", "--compare", str(v["twin"]), "--png", str(png)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "(DeLong 95% [" in res.stdout
    verdict = next(ln for ln in res.stdout.splitlines() if ln.startswith("Verdict: "))
    assert f"v{v['strong']}" in verdict and f"v{v['twin']}" in verdict and "test (n=60, " in verdict
    assert png.read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(app, [*args[:-2], "--json"])
    out = json.loads(res.stdout)
    assert out["comparison"]["other"] == v["twin"] and out["auroc_delong"]["value"] is not None
    res = CliRunner().invoke(app, ["evaluate", str(v["strong"]), "--no-baseline", "--compare", "999"])
    assert res.exit_code == 1 and res.stderr.strip() == "error: no model version 999"
    eng.dispose()
