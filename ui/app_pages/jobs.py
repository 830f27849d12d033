"""Jobs: submit training, fine-tuning, inference, calibration or a full round; follow and cancel jobs.

Submitting goes through ``submit_job`` (which refuses users whose role does not allow the job); the
job list refreshes itself every few seconds in a fragment, without rerunning the page.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from workbench.calibration.calibrators import METHOD_NAMES
from workbench.calibration.thresholds import VALID_FORMS
from workbench.defaults import RANKERS
from workbench.jobs import store
from workbench.jobs.params import CalibrateParams, InferParams, JobParams, RoundParams, TrainParams
from workbench.jobs.submit import submit_job
from workbench.model.config import IMBALANCE_MODES, PRESETS
from workbench.read import versions
from workbench.rounds import AUTO_REQUESTER
from workbench_ui import state

IMBALANCE = list(IMBALANCE_MODES)
METHODS = list(METHOD_NAMES)
SPLITS = ["pool", "val", "test", "train"]
REFRESH_S = 2.0


def _submit(kind: str, model: type[JobParams], values: dict[str, Any]) -> None:
    """Validate the form's ``values`` into the kind's parameters and submit; any error shows on the page."""
    user = state.require_user()
    with state.page_errors():
        job_id = submit_job(
            state.engine(),
            kind,
            model.parse(values),
            requester=user.username,
            send=state.sender(),
            stale_after=state.settings().heartbeat_stale,
        )
        st.success(f"Submitted {kind} job {job_id}: it is queued for a worker.", icon=":material/check:")


def _epochs(label: str, key: str) -> int | None:
    value = st.number_input(
        f"{label} (0: the preset's default)", min_value=0, max_value=500, value=0, key=key
    )
    return int(value) or None


def _version_box(label: str, key: str) -> int | None:
    ready = versions.ready_versions(state.engine())
    if not ready:
        st.info("No ready model version yet: train one first.")
        return None
    return st.selectbox(label, ready, format_func=lambda v: f"version {v}", key=key)


def _train_tab() -> None:
    with st.form("form_train"):
        c = st.columns(3)
        preset = c[0].selectbox(
            "Preset", list(PRESETS), key="train_preset", help="cpu: small CNN; card: ResNet50"
        )
        phases = c[1].radio("Phases", [1, 2], horizontal=True, key="train_phases", help="2: then fine-tune")
        imbalance = c[2].selectbox("Class imbalance", IMBALANCE, key="train_imbalance")
        c = st.columns(3)
        with c[0]:
            epochs = _epochs("Phase-1 epochs", "train_epochs")
        with c[1]:
            ft_epochs = _epochs("Phase-2 epochs", "train_ft_epochs")
        seed = c[2].number_input("Seed", min_value=0, value=TrainParams.default("seed"), key="train_seed")
        go = st.form_submit_button("Submit training", type="primary")
    if go:
        _submit(
            "train",
            TrainParams,
            dict(
                preset=preset,
                phases=int(phases),
                epochs=epochs,
                fine_tune_epochs=ft_epochs,
                imbalance=imbalance,
                seed=int(seed),
            ),
        )


def _finetune_tab() -> None:
    parent = _version_box("Parent version", "ft_parent")
    if parent is None:
        return
    with st.form("form_finetune"):
        epochs = _epochs("Phase-1 epochs", "ft_epochs")
        ft_epochs = _epochs("Phase-2 (fine-tuning) epochs", "ft_ft_epochs")
        imbalance = st.selectbox("Class imbalance", IMBALANCE, key="ft_imbalance")
        go = st.form_submit_button("Submit fine-tuning", type="primary")
    if go:
        preset = next(
            (r.preset for r in versions.version_rows(state.engine()) if r.id == parent),
            TrainParams.default("preset"),
        )
        _submit(
            "train",
            TrainParams,
            dict(
                preset=preset,
                phases=2,
                epochs=epochs,
                fine_tune_epochs=ft_epochs,
                imbalance=imbalance,
                parent_version=int(parent),
            ),
        )


def _infer_tab() -> None:
    version = _version_box("Model version", "infer_version")
    if version is None:
        return
    with st.form("form_infer"):
        splits = st.multiselect("Splits", SPLITS, default=InferParams.default("splits"), key="infer_splits")
        mc = st.number_input(
            "MC-dropout passes (0: none)",
            min_value=0,
            max_value=100,
            value=InferParams.default("mc_samples"),
            key="infer_mc",
        )
        go = st.form_submit_button("Submit inference", type="primary")
    if go:
        _submit("infer", InferParams, dict(model_version=int(version), splits=splits, mc_samples=int(mc)))


def _calibrate_tab() -> None:
    version = _version_box("Model version", "cal_version")
    if version is None:
        return
    with st.form("form_calibrate"):
        methods = st.multiselect(
            "Methods", METHODS, default=CalibrateParams.default("methods"), key="cal_methods"
        )
        policy = st.text_input(
            "Threshold policy",
            CalibrateParams.default("policy"),
            key="cal_policy",
            help=f"One of: {VALID_FORMS}.",
        )
        go = st.form_submit_button("Submit calibration", type="primary")
    if go:
        _submit(
            "calibrate", CalibrateParams, dict(model_version=int(version), methods=methods, policy=policy)
        )


def _round_tab() -> None:
    st.caption(
        "Train (warm-started from the last round's model) → infer → calibrate → queue a labelling batch. "
        "A version that did not learn stops the round after training (nothing is scored or calibrated); "
        "the batch it queues is chosen by the non-learned baseline fitted on the labels so far."
    )
    every = state.settings().retrain_after_labels
    st.caption(
        f"Automatic retraining: a round with the default settings starts after {every} new expert labels "
        "(WORKBENCH_RETRAIN_AFTER_LABELS)."
        if every > 0
        else "Automatic retraining is off (WORKBENCH_RETRAIN_AFTER_LABELS=0): rounds start only from here "
        "or `workbench round start`."
    )
    with st.form("form_round"):
        preset = st.selectbox("Preset", list(PRESETS), key="round_preset")
        epochs = _epochs("Phase-1 epochs", "round_epochs")
        imbalance = st.selectbox("Class imbalance", IMBALANCE, key="round_imbalance")
        batch = st.number_input(
            "Cases to queue",
            min_value=1,
            max_value=10_000,
            value=RoundParams.default("batch_size"),
            key="round_batch",
        )
        policy = st.text_input(
            "Threshold policy",
            RoundParams.default("policy"),
            key="round_policy",
            help=f"One of: {VALID_FORMS}.",
        )
        ranker = st.selectbox(
            "Pool ranked by",
            RANKERS,
            key="round_ranker",
            help="auto: the new version, or the non-learned baseline when it ranks validation better "
            "(AUPRC on the same cases); the round's report says which.",
        )
        go = st.form_submit_button("Submit round", type="primary")
    if go:
        _submit(
            "round",
            RoundParams,
            dict(
                train=dict(preset=preset, epochs=epochs, imbalance=imbalance),
                batch_size=int(batch),
                policy=policy,
                ranker=ranker,
            ),
        )


def _requester(job: store.JobView) -> str:
    """Who asked for the job; a round the retraining trigger started says so."""
    if job.requester == str(AUTO_REQUESTER):
        return "automatic (after new labels)"
    return job.requester


def _cancel(job_id: int) -> None:
    """Button callback: ask a job to stop (admins only, checked inside ``request_cancel``)."""
    name = state.require_user().username

    def act() -> store.JobView:
        return store.request_cancel(state.engine(), job_id, actor=name)

    view, err = state.run_action(act)
    if err:
        state.flash("error", err)
    elif view.status == "cancelled":
        state.flash("success", f"Job {job_id} cancelled.")
    else:
        state.flash("info", f"Job {job_id}: cancel requested; it stops at its next batch.")


def _did_not_learn(job: store.JobView) -> bool:
    """A finished train or round job whose model version failed the learning check."""
    return job.status == "succeeded" and bool((job.result or {}).get("did_not_learn"))


@st.fragment(run_every=REFRESH_S)
def job_list() -> None:
    """Jobs, newest first; running jobs with a live progress bar and a cancel button."""
    state.show_flashes()
    with state.page_errors():
        jobs = store.list_jobs(state.engine(), limit=50)
        if not jobs:
            st.info("No jobs yet.")
            return
        for job in [j for j in jobs if not j.done]:
            with st.container(border=True):
                head, btn = st.columns([5, 1])
                head.markdown(f"**#{job.id} {job.kind}** · {job.status} · by {_requester(job)}")
                head.progress(job.progress, text=f"{job.progress:.0%} {job.message or ''}".strip())
                if job.cancel_requested:
                    btn.caption("cancel requested")
                else:
                    btn.button("Cancel", key=f"cancel_{job.id}", on_click=_cancel, args=(job.id,))
        for job in [j for j in jobs if j.status == "failed"][:5]:
            st.error(
                f"Job #{job.id} {job.kind} failed: {job.error or 'no error recorded'}",
                icon=":material/error:",
            )
        for job in [j for j in jobs if _did_not_learn(j)][:5]:
            result = job.result or {}
            st.warning(
                f"Job #{job.id} {job.kind}: {result.get('message') or job.message}",
                icon=":material/warning:",
            )
        table = pd.DataFrame(
            [
                {
                    "id": j.id,
                    "kind": j.kind,
                    "status": j.status + (" (did not learn)" if _did_not_learn(j) else ""),
                    "progress": j.progress,
                    "requester": _requester(j),
                    "created": j.created_at,
                    "finished": j.finished_at,
                    "message": (j.error or j.message or "").splitlines()[0] if (j.error or j.message) else "",
                }
                for j in jobs
            ]
        )
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)
            },
        )


st.title("Jobs")
user = state.require_user()
if not user.is_admin:
    st.caption("Submitting and cancelling jobs needs the admin role; the workbench refuses it for labellers.")
tabs = st.tabs(["Training", "Fine-tuning", "Inference", "Calibration", "Full round"])
for tab, render in zip(
    tabs, (_train_tab, _finetune_tab, _infer_tab, _calibrate_tab, _round_tab), strict=True
):
    with tab, state.page_errors():
        render()
st.subheader("Recent jobs")
job_list()
