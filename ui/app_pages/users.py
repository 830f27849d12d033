"""Users (admins): list accounts, approve the ones a first OIDC login created, add one, disable or
re-enable one. Each action is checked by the workbench (``PERMISSIONS["users"]``: admins only), not
only by hiding this page from labellers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from workbench.users import add_user, approve_user, authorize, list_users, pending_users, set_active
from workbench_ui import state


def _act(fn: Callable[[str], Any], done: str) -> None:
    """Run ``fn(acting user name)``; on success show ``done`` after a rerun, else the error now."""
    name = state.require_user().username
    _, err = state.run_action(lambda: fn(name))
    if err:
        st.error(err)
    else:
        state.flash("success", done)
        st.rerun()


def _status(pending: bool, active: bool) -> str:
    return "pending approval" if pending else "active" if active else "disabled"


def _pending(people: list[str]) -> None:
    """Accounts waiting for approval, each with an Approve button (they become active labellers)."""
    st.subheader(f"Waiting for approval ({len(people)})")
    st.caption(
        "Created by a first sign-in through the identity provider; approved accounts become labellers "
        "(`workbench users approve NAME` does the same from a shell)."
    )
    for person in people:
        left, right = st.columns([4, 1])
        left.markdown(f"**{person}**")
        if right.button("Approve", key=f"approve_{person}", type="primary"):
            _act(
                lambda actor, who=person: approve_user(state.engine(), who, actor=actor),
                f"User {person} approved: an active labeller now.",
            )


st.title("Users")
user = state.require_user()
state.show_flashes()
with state.page_errors():
    authorize(state.engine(), user.username, "users")
    people = list_users(state.engine())
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "user": u.username,
                    "role": u.role,
                    "active": u.active,
                    "status": _status(u.pending, u.active),
                }
                for u in people
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption("The same from a shell: `workbench users add/list/approve/disable`.")
    waiting = [u.username for u in pending_users(state.engine())]
    if waiting:
        _pending(waiting)
    left, right = st.columns(2)
    with left, st.form("form_add_user", clear_on_submit=True):
        st.markdown("**Add a user**")
        name = st.text_input("User name", key="new_user_name")
        password = st.text_input(
            "Initial password (at least 8 characters)", type="password", key="new_user_pw"
        )
        role = st.radio("Role", ["labeller", "admin"], horizontal=True, key="new_user_role")
        if st.form_submit_button("Add user", type="primary"):
            _act(
                lambda actor: add_user(state.engine(), name, password, role, actor=actor),
                f"User {name} added as {role}.",
            )
    with right, st.form("form_active"):
        st.markdown("**Disable or re-enable a user**")
        others = [u.username for u in people if u.username != user.username]
        target = st.selectbox("User", others, key="active_user")
        enable = st.radio("Set to", ["disabled", "active"], horizontal=True, key="active_value")
        if st.form_submit_button("Apply") and target:
            _act(
                lambda actor: set_active(state.engine(), target, enable == "active", actor=actor),
                f"User {target} is now {'active' if enable == 'active' else 'disabled'}.",
            )
