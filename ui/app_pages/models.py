"""Models: every version with its lineage, data, test metrics, calibration and threshold; a paired DeLong
comparison of two versions; promote and export.

Promotion and export are admin actions, refused by the workbench functions for anyone else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from workbench.errors import WorkbenchError
from workbench.evaluation.baseline_verdict import FLAG_MARGIN, delta_text
from workbench.evaluation.report import split_context
from workbench.export.promotion import best_by_rule, current_best, promote, promotion_history
from workbench.read import versions
from workbench_ui import state

TEST_METRICS = ("auroc", "auprc", "sensitivity", "specificity")
COMPARE_SPLITS = ("test", "val", "train")


def _fmt_metric(est: dict[str, Any] | None) -> str:
    """An estimate as ``0.912 [0.850, 0.960]``, with ``!`` when its interval is flagged as degenerate."""
    return state.fmt_estimate(est, 3) + ("!" if est and est.get("flag") else "")


def _counts(counts: dict[str, Any] | None, split: str) -> str:
    c = (counts or {}).get(split) or {}
    if not c:
        return ""
    pos = c.get("positive", 0)
    total = c.get("total", pos + c.get("negative", 0))
    return f"{total} ({pos} pos)"


def _attach_baselines(rows: list[versions.VersionRow]) -> None:
    """Give every stored test evaluation its non-learned baseline comparison (computed once, then stored).

    The features are cached on disk and the comparison is stored in the evaluation, so only the first
    view after an evaluation decodes images; a baseline that cannot be had is remembered for the session.
    """
    from workbench.evaluation.version import attach_baseline

    memo: dict[tuple[Any, ...], dict[str, Any] | None] = st.session_state.setdefault("baseline_memo", {})
    for r in rows:
        test = r.test
        if not test or r.status != "ready":
            continue
        current = test.get("baseline")
        if current and current.get("available"):
            continue
        key = (r.id, test.get("method"), test.get("n"), test.get("positives"))
        if key not in memo:
            try:
                with st.spinner(f"Comparing version {r.id} with the non-learned baseline..."):
                    memo[key] = attach_baseline(
                        state.engine(), state.settings(), r.id, "test", test.get("method")
                    )
            except WorkbenchError as exc:
                memo[key] = {"available": False, "reason": str(exc), "split": "test"}
        if memo[key] is not None:
            test["baseline"] = memo[key]


def _baseline_cells(test: dict[str, Any] | None) -> tuple[str, str]:
    """(baseline AUROC, model-minus-baseline AUROC with the flag) for the table."""
    b = (test or {}).get("baseline")
    if not test:
        return "", ""
    if not b:
        return "not computed", ""
    if not b.get("available"):
        return f"n/a ({b.get('reason')})", ""
    cmp = b.get("comparison") or {}
    delta = delta_text(cmp.get("auroc"), 3, "n/a")
    if cmp.get("flagged"):
        return state.fmt_estimate(b.get("auroc"), 3), f"FLAG: {delta}"
    if cmp.get("flagged") is False:
        return state.fmt_estimate(b.get("auroc"), 3), f"beats it: {delta}"
    return state.fmt_estimate(b.get("auroc"), 3), delta


def _versions_table(rows: list[versions.VersionRow]) -> None:
    table = []
    for r in rows:
        test = r.test or {}
        row = {
            "version": r.id,
            "status": r.status + (" ★ current best" if r.promoted else ""),
            "parent": r.parent_id,
            "round": r.round_number,
            "preset": f"{r.preset} / {r.backbone}",
            "train": _counts(r.data_counts, "train"),
            "val": _counts(r.data_counts, "val"),
            "test split": f"n={test['n']}, {test['positives']} pos" if test else "",
        }
        for name in TEST_METRICS:
            row[f"test {name}"] = _fmt_metric(test.get(name)) if test else ""
            if name == "auroc":
                row["test baseline auroc"], row["vs baseline"] = _baseline_cells(test)
        row["calibration"] = r.calibration_method or ""
        row["threshold"] = f"{r.threshold:.3f} ({r.threshold_policy})" if r.threshold is not None else ""
        row["created by"] = r.created_by
        row["note"] = r.error or ""
        table.append(row)
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
    st.caption(
        "Test metrics are computed on calibrated probabilities at the version's threshold, with 95% "
        "bootstrap intervals; the test split is never used to choose anything. *test baseline auroc* is "
        "a NON-LEARNED score (hand-designed pre/post whitening features, logistic regression fitted on "
        "train; `workbench baseline`) on the same test cases; *vs baseline* is model minus baseline AUROC "
        f"with its paired 95% interval. FLAG: the model is less than {FLAG_MARGIN:.2f} above the baseline "
        "or the interval includes 0. **!** marks an interval that is not evidence of precision (zero width, "
        "or pinned at 0 or 1, e.g. on a perfectly separated split): `workbench evaluate` says what to read "
        "instead."
    )
    for r in rows:
        b = (r.test or {}).get("baseline") or {}
        cmp = b.get("comparison") or {}
        if cmp.get("flagged"):
            ctx = split_context(b["split"], b["n"], b["positives"])
            st.warning(
                f"Version {r.id}: on {ctx} the model does not clearly beat the non-learned baseline "
                f"(model minus baseline AUROC {delta_text(cmp.get('auroc'), 3, 'n/a')}): {cmp.get('reason')}."
            )


def _comparison_table(result: dict[str, Any]) -> pd.DataFrame:
    """Both versions' AUROC with DeLong intervals, and the paired difference, as one small table."""

    def interval(low: float | None, high: float | None, signed: bool = False) -> str:
        if low is None or high is None:
            return "n/a"
        return f"[{low:+.3f}, {high:+.3f}]" if signed else f"[{low:.3f}, {high:.3f}]"

    rows = []
    for side in (result["a"], result["b"]):
        value = side.get("value")
        rows.append(
            {
                "": f"version {side['version']} AUROC",
                "estimate": "n/a" if value is None else f"{value:.3f}",
                "95% interval (DeLong)": interval(side.get("low"), side.get("high"))
                + ("!" if side.get("flag") else ""),
                "p-value": "",
            }
        )
    delta, p = result.get("delta"), result.get("p_value")
    rows.append(
        {
            "": f"difference ({result['version']} − {result['other']})",
            "estimate": "n/a" if delta is None else f"{delta:+.3f}",
            "95% interval (DeLong)": interval(result.get("low"), result.get("high"), signed=True),
            "p-value": "n/a" if p is None else f"{p:.3g}",
        }
    )
    return pd.DataFrame(rows)


def _compare() -> None:
    """Pick two versions and a split; show the paired DeLong test of their AUROCs on the same cases."""
    st.subheader("Compare two versions (paired DeLong)")
    split = st.selectbox("Split", COMPARE_SPLITS, key="compare_split")
    ids = versions.versions_scoring_split(state.engine(), split)
    if len(ids) < 2:
        st.info(f"Fewer than two versions have predictions on the {split} split: nothing to compare.")
        return
    left, right = st.columns(2)
    a = left.selectbox("Version", ids, index=0, format_func=lambda v: f"version {v}", key="compare_a")
    b = right.selectbox("against", ids, index=1, format_func=lambda v: f"version {v}", key="compare_b")
    memo: dict[tuple[int, int, str], dict[str, Any]] = st.session_state.setdefault("compare_memo", {})
    key = (int(a), int(b), split)
    if st.button("Compare", key="compare_go"):
        with state.page_errors():
            memo[key] = versions.version_comparison(state.engine(), int(a), int(b), split)
    result = memo.get(key)
    if result is None:
        return
    if result.get("winner") is not None:
        st.success(result["verdict"])
    elif result.get("significant") is False:
        st.info(result["verdict"])
    else:
        st.warning(result["verdict"])
    st.dataframe(_comparison_table(result), hide_index=True, width="stretch")
    for note in result.get("notes") or []:
        st.caption(note)
    st.caption(
        f"On the {result['n']} labelled {split} cases ({result['positives']} positive) both versions scored, "
        "from the raw stored logits (AUROC depends only on the ranking, which calibration keeps). Paired "
        "DeLong test: the difference's interval uses the covariance of the two AUROCs on the same cases, "
        "so it is not the same as comparing the two separate intervals. **!**: zero-variance interval."
    )


def _promote(rows: list[versions.VersionRow], username: str) -> None:
    st.subheader("Promote a version to current best")
    ready = [r.id for r in rows if r.status == "ready"]
    if not ready:
        st.info("No ready version to promote yet.")
        return
    try:
        suggested, why = best_by_rule(state.engine())
    except WorkbenchError as exc:  # nothing qualifies yet: a hint, not an error
        st.caption(f"No suggestion yet: {exc}")
    else:
        st.caption(f"Suggested by the selection rule: version {suggested}")
        with st.expander("Why this suggestion"):
            st.text(why)
    with st.form("form_promote"):
        vid = st.selectbox("Version", ready, format_func=lambda v: f"version {v}", key="promote_version")
        reason = st.text_input("Reason (kept for the audit trail)", key="promote_reason")
        go = st.form_submit_button("Promote", type="primary")
    if go:
        with state.page_errors():
            promote(state.engine(), int(vid), username, reason)
            st.success(f"Version {vid} is now the current best.")
    history = promotion_history(state.engine())
    if history:
        with st.expander(f"Promotion history ({len(history)})"):
            st.dataframe(pd.DataFrame(history), hide_index=True, width="stretch")


def _export(username: str) -> None:
    st.subheader("Export the current best")
    best = current_best(state.engine())
    if best is None:
        st.info("Nothing promoted yet: promote a version first.")
        return
    try:
        from workbench.export.bundle import export_bundle
    except ImportError:
        st.info("Export bundles are not available in this installation (workbench.export.bundle is missing).")
        return
    st.caption(
        f"Version {best}: the Keras model (.keras, and .h5 where possible), a SavedModel, calibration.json, "
        "the threshold and its policy, and a model card."
    )
    if st.button(f"Build the export bundle of version {best}", key="export_build"):
        with state.page_errors(), st.spinner("Writing and checking the bundle..."):
            cfg = state.settings()
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            out = Path(cfg.home) / "exports" / f"model-v{best}-{stamp}"
            info = export_bundle(state.engine(), cfg, best, out, actor=username, make_zip=True)
            st.session_state["export_zip"] = (best, str(info.zip_path))
            st.success(f"Bundle written to {info.path}")
            for note in [info.h5_note, *info.notes]:
                if note:
                    st.caption(note)
    ready = st.session_state.get("export_zip")
    if ready and ready[0] == best and Path(ready[1]).is_file():
        zip_path = Path(ready[1])
        st.download_button(
            f"Download {zip_path.name}",
            zip_path.read_bytes(),
            file_name=zip_path.name,
            mime="application/zip",
            key="export_dl",
        )


st.title("Models")
user = state.require_user()
with state.page_errors():
    rows = versions.version_rows(state.engine())
    if not rows:
        st.info("No model version yet: submit a training job or a full round on the Jobs page.")
        st.stop()
    _attach_baselines(rows)
    _versions_table(rows)
    with state.page_errors():
        _compare()
    if not user.is_admin:
        st.caption("Promoting and exporting need the admin role.")
    left, right = st.columns(2)
    with left:
        _promote(rows, user.username)
    with right, state.page_errors():
        _export(user.username)
