"""Calibration: overlay reliability curves of versions x methods, compare them, see the operating point.

Curves, metrics and thresholds are the ones stored by ``workbench calibrate`` (fitted on validation,
scored where not fitted); the paired comparison bootstraps two choices on the same cases. The calibration
slope and intercept and the ECE read against its sample size come with each stored calibrator; the
decision curve asks whether acting on the calibrated probabilities beats treating all or none.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from workbench.calibration.compare import compare_paired
from workbench.calibration.plots import plot_reliability
from workbench.calibration.service import load_curves
from workbench.calibration.thresholds import guarantee_text
from workbench.calibration.views import (
    calibration_readings,
    decision_curve_figure,
    decision_curve_view,
    useful_range,
)
from workbench.errors import WorkbenchError
from workbench.read import calibration
from workbench_ui import state


def _metric_table(version_ids: list[int], methods: list[str]) -> None:
    rows = calibration.calibration_rows(state.engine(), version_ids, methods)
    if not rows:
        st.info("No stored metrics for this choice.")
        return
    table = pd.DataFrame(
        [
            {
                "version": r["version"],
                "method": r["method"] + (" (selected)" if r["selected"] else ""),
                "split": r["split"],
                "n": r["n"],
                "positives": r["positives"],
                "ECE (15 equal-width bins)": state.fmt_estimate(r["ece"], 4),
                "ECE (equal-mass bins)": state.fmt_estimate(r["ece_quantile"], 4),
                "Brier": state.fmt_estimate(r["brier"], 4),
                "NLL": state.fmt_estimate(r["nll"], 4),
                "note": r["reason"] or "",
            }
            for r in rows
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(
        "Point value [95% stratified bootstrap interval]. Validation rows are cross-fitted (out-of-fold)."
    )


def _readings(version_ids: list[int], methods: list[str]) -> None:
    st.subheader("Calibration slope and intercept, ECE against its sample size")
    rows = calibration_readings(state.engine(), version_ids, methods)
    if not rows:
        st.info("No stored measures for this choice.")
        return
    # st.table, not st.dataframe: the readings are short sentences that must wrap, not be cut.
    table = pd.DataFrame(
        [
            {
                "version": r["version"],
                "method": r["method"] + (" (selected)" if r["selected"] else ""),
                "split": f"{r['split']} (n={r['n']}, {r['positives']} positive)",
                "calibration slope": _fmt_or_old(r["calibration_slope"], 2),
                "calibration intercept": _fmt_or_old(r["calibration_intercept"], 2),
                "ECE (plug-in)": _fmt_or_old(r["ece"], 3),
                "ECE debiased (L2)": _fmt_or_old(r["ece_debiased"], 3),
                "reading": r["reading"] or r["reason"] or "",
            }
            for r in rows
        ]
    )
    st.table(table.set_index(["version", "method"]))
    st.caption(
        "Slope 1 and intercept 0 mean calibrated (slope below 1: over-confident, spread too wide; intercept "
        "below 0: risk over-predicted). Slope: logistic regression of the outcome on logit(p); intercept: "
        "the same with the slope fixed at 1. Intervals: 95% stratified bootstrap percentile. The debiased "
        "ECE (Kumar et al. 2019) is an RMS (L2) error with the small-sample bias removed; the reading "
        "compares the plug-in ECE with 200 label sets drawn from a perfectly calibrated model with the "
        "same predictions and n."
    )


def _fmt_or_old(est: dict[str, Any] | None, digits: int) -> str:
    if est is None:
        return "not stored (recalibrate)"
    return state.fmt_estimate(est, digits)


def _decision_curve(version_ids: list[int], by_id: dict[int, calibration.CalibratedVersion]) -> None:
    st.subheader("Decision curve")
    c = st.columns([1, 1, 2])
    vid = c[0].selectbox("Version", version_ids, format_func=lambda v: f"version {v}", key="dca_version")
    methods = list(dict.fromkeys(by_id[vid].methods))
    default = methods.index(by_id[vid].selected) if by_id[vid].selected in methods else 0
    method = c[1].selectbox("Calibrator", methods, index=default, key="dca_method")
    curve = decision_curve_view(state.engine(), int(vid), method)
    st.pyplot(decision_curve_figure(curve))
    useful = useful_range(curve)
    st.caption(
        f"Net benefit of acting on v{vid} {method} probabilities on {curve['split']} "
        f"(n={curve['n']}, {curve['positives']} positive), against treat-all and treat-none. "
        + (
            f"The model beats both for thresholds {useful[0]:.2f} to {useful[1]:.2f}."
            if useful
            else "The model beats neither reference at any threshold shown."
        )
    )
    for note in curve.get("notes") or []:
        st.caption(f"note: {note}")


def _curves(version_ids: list[int], methods: list[str], split: str, binning: str) -> None:
    curves, missing = [], []
    eng = state.engine()
    for vid in version_ids:
        for method in methods:
            try:
                # The plot adds the split, n and positives to each legend entry itself.
                curves.extend(
                    (f"v{vid} {method}", curve)
                    for _, curve in load_curves(eng, [vid], method, split, binning)
                )
            except WorkbenchError as exc:
                missing.append(str(exc))
    for text in missing:
        st.caption(f"not shown: {text}")
    if not curves:
        st.info(f"No stored {split} reliability curves for this choice.")
        return
    st.pyplot(plot_reliability(curves))


def _paired(options: list[tuple[int, str]]) -> None:
    st.subheader("Paired comparison")
    if len(options) < 2:
        st.info("Pick at least two (version, method) choices above to compare them.")
        return
    fmt = lambda o: f"v{o[0]} {o[1]}"  # noqa: E731
    c = st.columns([2, 2, 1, 1])
    a = c[0].selectbox("A", options, index=0, format_func=fmt, key="cmp_a")
    b = c[1].selectbox("B", options, index=1, format_func=fmt, key="cmp_b")
    split = c[2].selectbox("Split", ["test", "val"], key="cmp_split")
    n_boot = c[3].number_input("Bootstrap resamples", 100, 10_000, 1000, step=100, key="cmp_boot")
    if a == b:
        st.caption("A and B are the same choice.")
        return
    request = (a, b, split, int(n_boot))
    if st.button("Compare A and B", key="cmp_go", type="primary"):
        y, p_a, p_b = calibration.paired_predictions(state.engine(), a, b, split)
        if y.sum() == 0 or y.sum() == len(y):
            st.warning(f"The common {split} cases hold one class only (n={len(y)}): no comparison possible.")
            return
        st.session_state["cmp_result"] = (
            request,
            compare_paired(y, p_a, p_b, n_boot=int(n_boot), split=split),
        )
    done = st.session_state.get("cmp_result")
    if not done or done[0] != request:
        st.caption("Bootstraps the difference on the same resampled cases (a few seconds).")
        return
    result = done[1]
    st.caption(f"{split} (n={result['n']}, {result['positives']} positive), same resampled cases for A and B")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "metric": name,
                    fmt(a): m["a"],
                    fmt(b): m["b"],
                    "A − B": m["delta"],
                    "95% interval": f"[{m['low']:.4f}, {m['high']:.4f}]",
                    "verdict": m["verdict"].replace("a better", "A better").replace("b better", "B better"),
                }
                for name, m in result["metrics"].items()
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def _operating_point(version_ids: list[int]) -> None:
    st.subheader("Operating point and threshold sweep")
    vid = st.selectbox("Version", version_ids, format_func=lambda v: f"version {v}", key="thr_version")
    view = calibration.threshold_view(state.engine(), int(vid))
    if view.threshold is None:
        st.info(f"Version {vid} has no operating threshold yet.")
        return
    st.markdown(
        f"**Threshold {view.threshold:.3f}** chosen by policy `{view.policy}` on calibrated ({view.method}) "
        "probabilities."
    )
    points = [("chosen on", view.chosen_on), ("reported on", view.test)]
    rows = [
        {
            "": label,
            "split": f"{p['split']} (n={p['n']}, {p['positives']} positive)",
            "sensitivity": state.fmt_estimate(p.get("sensitivity"), 2),
            "specificity": state.fmt_estimate(p.get("specificity"), 2),
            "precision": state.fmt_estimate(p.get("precision"), 2),
            "met": p.get("met"),
            "guarantee": guarantee_text(p) or "",
            "note": "; ".join(x for x in (p.get("note"), p.get("in_sample")) if x),
        }
        for label, p in points
        if p
    ]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if not view.evaluations:
        return
    split = st.radio("Sweep on", sorted(view.evaluations), horizontal=True, key="thr_split")
    report = view.evaluations[split]
    sweep = pd.DataFrame(report.get("sweep", []))
    if sweep.empty:
        return
    st.caption(
        f"{split} (n={report['n']}, {report['positives']} positive), {report.get('method')} calibration; "
        f"the chosen threshold {view.threshold:.3f} is marked."
        + (f" **{report['in_sample'].capitalize()}**: optimistic." if report.get("in_sample") else "")
    )
    chart = sweep.set_index("threshold")[["accuracy", "precision", "recall", "f1"]]
    st.line_chart(chart)
    sweep["chosen"] = (sweep["threshold"] - view.threshold).abs() == (
        sweep["threshold"] - view.threshold
    ).abs().min()
    st.dataframe(sweep, hide_index=True, width="stretch")


st.title("Calibration")
state.require_user()
with state.page_errors():
    versions = calibration.calibrated_versions(state.engine())
    if not versions:
        st.info(
            "No calibrated model version yet. Calibrate one on the Jobs page (Calibration) or with "
            "`workbench calibrate VERSION`."
        )
        st.stop()
    by_id = {v.id: v for v in versions}
    all_methods = sorted({m for v in versions for m in v.methods})
    c = st.columns([2, 2, 1, 1])
    chosen = c[0].multiselect(
        "Model versions",
        list(by_id),
        default=list(by_id)[:2],
        format_func=lambda v: f"version {v}",
        key="cal_versions",
    )
    default_methods = sorted({by_id[v].selected for v in chosen if by_id[v].selected}) or all_methods[:1]
    methods = c[1].multiselect("Methods", all_methods, default=default_methods, key="cal_methods_pick")
    split = c[2].radio("Split", ["test", "val"], key="cal_split")
    binning = c[3].radio("Binning", ["uniform", "quantile"], key="cal_binning")
    if not chosen or not methods:
        st.info("Pick at least one version and one method.")
        st.stop()
    plot, _ = st.columns([3, 2])
    with plot:
        _curves(chosen, methods, split, binning)
    _metric_table(chosen, methods)
    with state.page_errors():
        _readings(chosen, methods)
    with state.page_errors():
        _paired([(v, m) for v in chosen for m in methods if m in by_id[v].methods])
    with state.page_errors():
        _operating_point(chosen)
    with state.page_errors():
        _decision_curve(chosen, by_id)
