"""Data: cases per split and label, suspect pairs, labelling over rounds, yield, agreement, import."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.active.agreement import agreement_report
from workbench.data.importer import import_source
from workbench.data.summary import SPLIT_ORDER, split_counts
from workbench.read import pair_check, rounds
from workbench.rounds import round_summary
from workbench_ui import state


def _splits() -> None:
    st.subheader("Cases per split and current label")
    counts = split_counts(state.engine())
    table = pd.DataFrame([{"split": s, **counts[s]} for s in SPLIT_ORDER])
    left, right = st.columns([1, 1])
    left.dataframe(table, hide_index=True, width="stretch")
    left.caption("'unlabelled' includes cases whose latest answer is Unsure.")
    right.bar_chart(table.set_index("split")[["negative", "positive", "unlabelled"]])


def _pairs() -> None:
    st.subheader("Pair sanity check")
    view = pair_check.pair_check_view(state.engine())
    counts = view.counts
    cols = st.columns(len(counts))
    for col, (status, n) in zip(cols, counts.items(), strict=True):
        col.metric(status.capitalize(), n)
    st.caption(
        "Every pair is checked at import and before each round: is it one cervix (structural similarity "
        "against this data set's pairs and against pairs of different patients) and is post really after "
        "pre (the pre-to-post change against this data set's typical one)? Suspect pairs are kept out of "
        "training until an expert confirms them (Label page, pair checks; or "
        "`workbench cases confirm-pair CASE --ok|--reject`)."
    )
    if view.evaluation_flagged:
        where = " and ".join(f"{n} {split}" for split, n in sorted(view.evaluation_flagged.items()))
        st.warning(
            f"{where} case(s) have a suspect or rejected pair. They are never trained on, but the "
            "evaluation metrics on their split include them: treat those metrics as suspect until an "
            "expert has looked at these pairs.",
            icon=":material/warning:",
        )
    if not view.flagged:
        st.info("No suspect or rejected pair.")
        return
    st.dataframe(pd.DataFrame(view.flagged), hide_index=True, width="stretch")


def _rounds() -> None:
    st.subheader("Labelling over rounds")
    history = pd.DataFrame(rounds.label_history(state.engine()))
    if len(history) <= 1:
        st.info("No active-learning round yet (round 0 is the import).")
    history["positive share"] = history["positive"] / history["labelled"].where(history["labelled"] > 0)
    left, right = st.columns(2)
    left.caption("Labelled cases vs unlabelled pool after each round")
    left.line_chart(history.set_index("round")[["labelled", "pool_unlabelled"]])
    right.caption("Class balance of the labelled cases after each round")
    right.bar_chart(history.set_index("round")[["negative", "positive"]])
    st.dataframe(history, hide_index=True, width="stretch")

    rows = []
    listed = rounds.list_rounds(state.engine())
    for rnd in listed:
        summary = round_summary(state.engine(), rnd.id, stopping=False)
        y, audit = summary["yield"], summary["yield_random_audit"]
        base = summary.get("pool_estimated_base_rate")

        def rate(d: dict) -> str:
            if not d or d.get("rate") is None:
                return "n/a"
            ci = d.get("wilson")
            return f"{d['rate']:.2f} ({d['positive']}/{d['n']})" + (
                f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            )

        rows.append(
            {
                "round": rnd.number,
                "status": rnd.status,
                "model version": rnd.model_version_id,
                "queued": summary["batch"]["queued"],
                "labelled": summary["batch"]["labelled"],
                "positive yield": rate(y),
                "random audit yield": rate(audit),
                "pool base rate (est.)": f"{base:.3f}" if base is not None else "n/a",
                "ranked by": (summary.get("ranked_by") or {}).get("label", "n/a"),
            }
        )
    if rows:
        st.caption(
            "Positive yield of each batch vs the random audit slice and the pool's estimated base rate"
        )
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if listed:
        _stopping(listed[-1].id)


STOPPING_BOX = {"labels still paying": st.info, "consider stopping": st.success}


def _stopping(round_id: int) -> None:
    """The latest round's stopping signal: the verdict, its reasons and the numbers behind them."""
    st.subheader("When to stop labelling")
    block = round_summary(state.engine(), round_id)["stopping"]
    box = STOPPING_BOX.get(block["verdict"], st.warning)
    box(f"**{block['verdict'].capitalize()}**\n\n" + "\n".join(f"- {r}" for r in block["reasons"]))
    if block.get("available"):
        change, left = block["auprc_change"], block.get("positives_left") or {}
        stab = block.get("stability") or {}
        rows = [
            {
                "measure": f"validation AUPRC change, v{change['versions'][1]} -> v{change['versions'][0]}",
                "where": f"{change['split']} (n={change['n']}, {change['positives']} positive)",
                "value": "n/a" if change["delta"] is None else f"{change['delta']:+.3f}",
                "95% interval": "n/a"
                if change["low"] is None
                else f"[{change['low']:+.3f}, {change['high']:+.3f}] (paired bootstrap)",
            },
            {
                "measure": "decisions flipped at the threshold",
                "where": f"{stab.get('split', 'pool (unlabelled)')} (n={stab.get('n', 0)})",
                "value": f"{stab['flipped']} ({stab['flip_rate']:.1%})" if stab.get("n") else "n/a",
                "95% interval": "[{:.1%}, {:.1%}] (Wilson)".format(*stab["flip_wilson"])
                if stab.get("flip_wilson")
                else "n/a",
            },
            {
                "measure": f"rank agreement (Spearman; top-{stab.get('top_k', 0)} overlap)",
                "where": f"{stab.get('split', 'pool (unlabelled)')} (n={stab.get('n', 0)})",
                "value": "n/a"
                if stab.get("spearman") is None
                else f"{stab['spearman']:.3f}; {stab.get('top_k_overlap') or 0:.0%}",
                "95% interval": "",
            },
            {
                "measure": f"positives left (expected; {left.get('found', 0)} found so far)",
                "where": f"{left.get('split', 'pool (unlabelled)')} (n={left.get('n', 0)})",
                "value": f"{left['expected']:.1f}" if left else "n/a",
                "95% interval": f"[{left['low']:.1f}, {left['high']:.1f}] (normal approx.)"
                if left
                else "n/a",
            },
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(block["rule"] + " `workbench round status` prints the same.")


def _agreement() -> None:
    st.subheader("Agreement between labellers")
    pairs = agreement_report(state.engine())
    if not pairs:
        st.info("No two labellers have labelled the same case yet.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "labeller A": p.labeller_a,
                    "labeller B": p.labeller_b,
                    "cases in common": p.n_common,
                    "agree": p.n_agree,
                    "raw agreement": round(p.raw_agreement, 3),
                    "Cohen's kappa": None if p.kappa is None else round(p.kappa, 3),
                }
                for p in pairs
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def _import(username: str) -> None:
    st.subheader("Import cases")
    st.caption(
        "A path on the server: a folder with one sub-folder per case (pre.* and post.* images, optional "
        "labels.csv), or a manifest CSV `case_id,pre_path,post_path[,label][,patient_id][,split]`. "
        "Rejected rows are listed here and in a CSV report under `reports/` in the workbench home folder "
        "(never next to the source, which may be read-only)."
    )
    with st.form("form_import"):
        path = st.text_input("Server path", key="import_path")
        c = st.columns(2)
        dry = c[0].checkbox("Dry run (validate only)", key="import_dry")
        strict = c[1].checkbox("Strict (import nothing if any row is rejected)", key="import_strict")
        go = st.form_submit_button("Import", type="primary")
    if not go:
        return
    if not path.strip():
        st.error("Give the path of a folder or manifest CSV on the server.")
        return
    with state.page_errors(), st.spinner("Checking every row and image..."):
        result = import_source(
            state.engine(), Path(path.strip()).expanduser(), requester=username, strict=strict, dry_run=dry
        )
        verb = "would import" if result.dry_run else "imported"
        st.success(
            f"{result.format} {result.source}: {verb} {result.imported}, unchanged {result.unchanged}, "
            f"rejected {len(result.rejected)}"
        )
        if result.rejected:
            st.dataframe(
                pd.DataFrame(
                    [{"line": r.line, "case id": r.case_id, "reason": r.reason} for r in result.rejected]
                ),
                hide_index=True,
                width="stretch",
            )
        if result.split_counts:
            st.caption("Imported cases per split and label")
            st.dataframe(pd.DataFrame(result.split_counts).T.fillna(0).astype(int), width="stretch")
        if result.report_error:  # the import itself happened: say so, beside the missing report
            st.warning(result.report_note(), icon=":material/warning:")
        elif result.report_path:
            st.caption(f"Per-row report: {result.report_path}")
        if result.pair_check:
            st.caption(result.pair_check)


st.title("Data")
user = state.require_user()
for section in (_splits, _pairs, _rounds, _agreement):
    with state.page_errors():
        section()
with state.page_errors():
    _import(user.username)
