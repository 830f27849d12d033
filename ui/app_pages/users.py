"""Users (admins): list accounts, add one, disable or re-enable one. Each action is checked by the
workbench (``authorize(..., "users")``), not only by hiding this page from labellers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import state
from workbench.users import add_user, authorize, list_users, set_active


def _act(fn, done: str) -> None:  # type: ignore[no-untyped-def]
    """Run an admin action as the logged-in user; on success show ``done`` after a rerun."""
    name = state.require_user().username

    def checked():  # type: ignore[no-untyped-def]
        authorize(state.engine(), name, "users")
        return fn()

    _, err = state.run_action(checked)
    if err:
        st.error(err)
    else:
        state.flash("success", done)
        st.rerun()


st.title("Users")
user = state.require_user()
state.show_flashes()
with state.page_errors():
    authorize(state.engine(), user.username, "users")
    people = list_users(state.engine())
    st.dataframe(
        pd.DataFrame([{"user": u.username, "role": u.role, "active": u.active} for u in people]),
        hide_index=True,
        width="stretch",
    )
    st.caption("The same from a shell: `workbench users add/list/disable`.")
    left, right = st.columns(2)
    with left, st.form("form_add_user", clear_on_submit=True):
        st.markdown("**Add a user**")
        name = st.text_input("User name", key="new_user_name")
        password = st.text_input(
            "Initial password (at least 8 characters)", type="password", key="new_user_pw"
        )
        role = st.radio("Role", ["labeller", "admin"], horizontal=True, key="new_user_role")
        if st.form_submit_button("Add user", type="primary"):
            _act(lambda: add_user(state.engine(), name, password, role), f"User {name} added as {role}.")
    with right, st.form("form_active"):
        st.markdown("**Disable or re-enable a user**")
        others = [u.username for u in people if u.username != user.username]
        target = st.selectbox("User", others, key="active_user")
        enable = st.radio("Set to", ["disabled", "active"], horizontal=True, key="active_value")
        if st.form_submit_button("Apply") and target:
            _act(
                lambda: set_active(state.engine(), target, enable == "active"),
                f"User {target} is now {'active' if enable == 'active' else 'disabled'}.",
            )
