"""Label: claim the next queued case under a lease, show the pair, record Negative / Positive / Unsure.

Every answer is written by a button callback (``submit_label``) before the page renders the next case,
so a label is in the database before the page moves on. Keyboard: N, P, U, S (skip), Z (undo).
When pairs flagged by the pair sanity check wait for an expert, a toggle switches to answering them
(``answer_pair_check``: the pair is sound, or reject it; keyboard O, X, S).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from workbench.active.labelling_queue import (
    ClaimedItem,
    answer_pair_check,
    claim_next,
    queue_progress,
    skip,
    submit_label,
    undo_last,
)
from workbench.db.models import PAIR_CHECK_KIND
from workbench.read import case_context, rounds
from workbench.rounds import retrain_status, trigger_round_if_due
from workbench.users import authorize
from workbench_ui import state
from workbench_ui.views import ZOOMS, load_image

VALUE_NAMES = {0: "Negative", 1: "Positive", None: "Unsure"}


def _acting_user() -> str:
    return state.require_user().username


def _answer(item_id: int, external_id: str, value: int | None) -> None:
    """Button callback: record the answer (runs before the next render)."""
    name = _acting_user()

    def act():  # type: ignore[no-untyped-def]
        eng = state.engine()
        authorize(eng, name, "label")
        return submit_label(eng, item_id, name, value)

    result, err = state.run_action(act)
    if err:
        state.flash("warning", err)
    elif result.duplicate:
        state.flash("info", f"Case {external_id} was already saved as {VALUE_NAMES[result.value]}.")
    else:
        extra = " It goes back to the queue for another expert." if value is None else ""
        state.flash("success", f"Saved: case {external_id} = {VALUE_NAMES[value]}.{extra}")
        if value is not None:
            _trigger_round()


def _trigger_round() -> None:
    """After an expert label: start the automatic round when it is due (WORKBENCH_RETRAIN_AFTER_LABELS).

    The label is saved whatever happens here; a broker that cannot take the round is a warning."""
    cfg = state.settings()
    if cfg.retrain_after_labels <= 0:
        return
    job_id, err = state.run_action(lambda: trigger_round_if_due(state.engine(), cfg, state.sender()))
    if err:
        state.flash("warning", f"Your label is saved, but the automatic round could not start: {err}")
    elif job_id is not None:
        state.flash(
            "success",
            f"Round job #{job_id} started automatically after {cfg.retrain_after_labels} new expert "
            "labels: a worker retrains the model and queues the next batch.",
        )


def _retrain_caption(is_admin: bool) -> None:
    """How far the automatic retraining trigger is: labels to go, or the round it waits for."""
    every = state.settings().retrain_after_labels
    if every <= 0:
        if is_admin:
            st.caption("Automatic retraining is off (WORKBENCH_RETRAIN_AFTER_LABELS=0).")
        return
    status = retrain_status(state.engine(), every)
    if status.active_job is not None:
        how = "started automatically" if status.active_automatic else "submitted by hand"
        st.caption(
            f"Automatic retraining: round job #{status.active_job} ({how}) is {status.active_status}; "
            "labels given after it has started count towards the next automatic round."
        )
    elif status.remaining:
        st.caption(
            f"Automatic retraining: {status.new_labels} of {every} new expert labels since the last "
            f"round; the next round starts after {status.remaining} more new expert label(s)."
        )
    else:
        st.caption(
            f"Automatic retraining: {status.new_labels} new expert labels; a round starts with the next one."
        )


def _skip(item_id: int, external_id: str) -> None:
    name = _acting_user()

    def act() -> None:
        eng = state.engine()
        authorize(eng, name, "label")
        skip(eng, item_id, name)

    _, err = state.run_action(act)
    if err:
        state.flash("warning", err)
    else:
        state.flash("info", f"Skipped case {external_id}: it goes back to the queue for someone else.")


def _undo() -> None:
    name = _acting_user()

    def act():  # type: ignore[no-untyped-def]
        eng = state.engine()
        authorize(eng, name, "label")
        return undo_last(eng, name, lease_seconds=state.settings().lease_seconds)

    correction, err = state.run_action(act)
    if err:
        state.flash("warning", err)
    elif correction is None:
        state.flash("info", "Nothing to undo: you have no label left to withdraw.")
    else:
        state.flash(
            "success",
            f"Undone ({correction.note}); the history is kept and the case is shown again for a new answer.",
        )


def _progress(round_view: rounds.RoundView | None) -> None:
    progress = queue_progress(state.engine(), round_view.id if round_view else None)
    total, done = progress["total"], progress["done"]
    scope = f"Round {round_view.number} batch" if round_view else "All queued cases"
    text = (
        f"{scope}: {done}/{total} done · {progress['positives_found']} positive found · "
        f"{progress['unsure']} unsure · {progress['leased']} being labelled"
    )
    st.progress(done / total if total else 0.0, text=text)


def _images(item: ClaimedItem) -> None:
    c1, c2 = st.columns([3, 1])
    view = c1.segmented_control(
        "View",
        ["Side by side", "Pre enlarged", "Post enlarged"],
        default="Side by side",
        required=True,
        key="label_view",
    )
    zoom = c2.select_slider(
        "Zoom (centre)", options=list(ZOOMS), value=1.0, key="label_zoom", format_func=lambda z: f"{z:g}x"
    )
    shown = [("Pre-stain", item.pre_path), ("Post-stain", item.post_path)]
    if view == "Pre enlarged":
        shown = shown[:1]
    elif view == "Post enlarged":
        shown = shown[1:]
    cols = st.columns(len(shown))
    for col, (caption, path) in zip(cols, shown, strict=True):
        with col:
            try:
                image = load_image(path, float(zoom or 1.0))
                where = "/".join(Path(path).parts[-2:])
                st.image(image, caption=f"{caption} ({where}, {image.width}x{image.height})", width="stretch")
            except OSError as exc:
                st.warning(f"{caption} image cannot be shown: {exc}")


def _case_panel(item: ClaimedItem) -> None:
    ctx = case_context.case_context(state.engine(), item.case_id, item.round_id)
    m = st.columns(4)
    m[0].metric("Case", item.external_id)
    if ctx.calibrated is not None:
        m[1].metric(
            "Calibrated P(positive)",
            f"{ctx.calibrated:.3f}",
            help=f"model version {ctx.version_id}, {ctx.calibration_method or 'uncalibrated'}; raw {ctx.probability:.3f}",
        )
    else:
        m[1].metric("Calibrated P(positive)", "n/a", help=ctx.note)
    m[2].metric(
        "Operating threshold",
        f"{ctx.threshold:.3f}" if ctx.threshold is not None else "n/a",
        help=ctx.threshold_policy or "no threshold chosen yet",
    )
    m[3].metric("Uncertainty", f"{ctx.uncertainty:.3f}" if ctx.uncertainty is not None else "n/a")
    kind = "" if item.kind == "label" else f" ({item.kind.replace('_', ' ')})"
    score = f", score {item.score:.3f}" if item.score is not None else ""
    st.markdown(f"**Why queued{kind}:** `{item.strategy}`{score} — {item.reason or 'no reason recorded'}")
    if ctx.note:
        st.caption(ctx.note)
    st.caption(f"Leased to you until {item.lease_expires_at:%H:%M:%S} UTC.")


def _buttons(item: ClaimedItem | None) -> None:
    cols = st.columns(5)
    if item is not None:
        args = (item.item_id, item.external_id)
        cols[0].button(
            "Negative", key="btn_negative", shortcut="N", width="stretch", on_click=_answer, args=(*args, 0)
        )
        cols[1].button(
            "Positive",
            key="btn_positive",
            shortcut="P",
            width="stretch",
            on_click=_answer,
            args=(*args, 1),
        )
        cols[2].button(
            "Unsure", key="btn_unsure", shortcut="U", width="stretch", on_click=_answer, args=(*args, None)
        )
        cols[3].button("Skip", key="btn_skip", shortcut="S", width="stretch", on_click=_skip, args=args)
    cols[4].button(
        "Undo last", key="btn_undo", shortcut="Z", icon=":material/undo:", width="stretch", on_click=_undo
    )


def _answer_pair(item_id: int, external_id: str, sound: bool) -> None:
    """Button callback: the expert's decision on a flagged pair (runs before the next render)."""
    name = _acting_user()

    def act():  # type: ignore[no-untyped-def]
        eng = state.engine()
        authorize(eng, name, "label")
        return answer_pair_check(eng, item_id, name, sound)

    result, err = state.run_action(act)
    if err:
        state.flash("warning", err)
    elif sound:
        state.flash("success", f"Case {external_id}: pair confirmed as sound; it goes back into training.")
    else:
        state.flash("success", f"Case {external_id}: pair rejected; it is never trained on.")


def _pair_checks(username: str) -> None:
    """Answer pair-check items: one cervix, pre before post? (no label is asked for)."""
    item = claim_next(
        state.engine(), username, lease_seconds=state.settings().lease_seconds, kinds=[PAIR_CHECK_KIND]
    )
    if item is None:
        st.info("No pair check is waiting for you.", icon=":material/inbox:")
        return
    st.markdown(
        f"**Pair check, case {item.external_id}:** is this ONE cervix, with the pre-stain shot really "
        "before the post-stain one (acetowhite areas appear in post, not in pre)?"
    )
    score = f" (score {item.score:.2f})" if item.score is not None else ""
    st.caption(f"Why it was flagged{score}: {item.reason or 'no reason recorded'}")
    above_images = st.container()
    _images(item)
    with above_images:
        cols = st.columns(3)
        args = (item.item_id, item.external_id)
        cols[0].button(
            "Sound pair",
            key="btn_pair_ok",
            shortcut="O",
            width="stretch",
            on_click=_answer_pair,
            args=(*args, True),
        )
        cols[1].button(
            "Reject pair",
            key="btn_pair_reject",
            shortcut="X",
            width="stretch",
            on_click=_answer_pair,
            args=(*args, False),
        )
        cols[2].button("Skip", key="btn_pair_skip", shortcut="S", width="stretch", on_click=_skip, args=args)
    st.caption(
        f"Leased to you until {item.lease_expires_at:%H:%M:%S} UTC. Keyboard: O sound · X reject · S skip"
    )


def _label_queue(user: state.CurrentUser) -> None:
    """The labelling queue: claim the next case and ask for Negative / Positive / Unsure."""
    item = claim_next(state.engine(), user.username, lease_seconds=state.settings().lease_seconds)
    _progress(rounds.current_round(state.engine()))
    _retrain_caption(user.is_admin)
    if item is None:
        st.info(
            "No case is waiting for you: the queue is empty, or every remaining case is leased to "
            "another expert or was skipped by you.",
            icon=":material/inbox:",
        )
        st.markdown(
            "An admin can queue a new batch: submit a **Full round** on the Jobs page, or run "
            "`workbench submit round` on the server."
        )
        if user.is_admin:
            st.page_link("app_pages/jobs.py", label="Go to Jobs", icon=":material/work_history:")
        _buttons(None)
    else:
        _case_panel(item)
        above_images = st.container()
        _images(item)
        with above_images:  # shown above the images, but bound to this case only once they are sent
            _buttons(item)
        st.caption(
            f"Keyboard for case {item.external_id}: N Negative · P Positive · U Unsure · S Skip · Z Undo last"
        )


st.title("Label")
user = state.require_user()
state.show_flashes()
with state.page_errors():
    waiting = queue_progress(state.engine(), kinds=[PAIR_CHECK_KIND])
    open_checks = waiting["queued"] + waiting["leased"]
    answering_pairs = bool(open_checks) and st.toggle(
        f"Answer pair checks ({open_checks} waiting)",
        key="label_pair_checks",
        help="Pairs the pair sanity check flagged (maybe swapped, maybe not one cervix): kept out of "
        "training until an expert answers.",
    )
    if answering_pairs:
        _pair_checks(user.username)
    else:
        _label_queue(user)
