"""Models: every version with its lineage, data, test metrics, calibration and threshold; promote and export.

Promotion and export are admin actions, refused by the workbench functions for anyone else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from ui import state
from workbench import ui_queries
from workbench.errors import WorkbenchError
from workbench.export.promotion import best_by_rule, current_best, promote, promotion_history

TEST_METRICS = ("auroc", "auprc", "sensitivity", "specificity")


def _counts(counts: dict[str, Any] | None, split: str) -> str:
    c = (counts or {}).get(split) or {}
    if not c:
        return ""
    pos = c.get("positive", 0)
    total = c.get("total", pos + c.get("negative", 0))
    return f"{total} ({pos} pos)"


def _versions_table(rows: list[ui_queries.VersionRow]) -> None:
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
            row[f"test {name}"] = state.fmt_estimate(test.get(name), 3) if test else ""
        row["calibration"] = r.calibration_method or ""
        row["threshold"] = f"{r.threshold:.3f} ({r.threshold_policy})" if r.threshold is not None else ""
        row["created by"] = r.created_by
        row["note"] = r.error or ""
        table.append(row)
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
    st.caption(
        "Test metrics are computed on calibrated probabilities at the version's threshold, with 95% "
        "bootstrap intervals; the test split is never used to choose anything."
    )


def _promote(rows: list[ui_queries.VersionRow], username: str) -> None:
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
    rows = ui_queries.version_rows(state.engine())
    if not rows:
        st.info("No model version yet: submit a training job or a full round on the Jobs page.")
        st.stop()
    _versions_table(rows)
    if not user.is_admin:
        st.caption("Promoting and exporting need the admin role.")
    left, right = st.columns(2)
    with left:
        _promote(rows, user.username)
    with right, state.page_errors():
        _export(user.username)
