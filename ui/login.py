"""Log in: through the configured OIDC provider, else with a workbench user name and password.

Not a page of its own: ``app.py`` renders it in place of whichever page was asked for, so that after
logging in the user lands on that page (a deep link such as ``/jobs`` survives the login).
"""

from __future__ import annotations

import streamlit as st

from workbench.users import authenticate
from workbench_ui import state


def _oidc_login() -> None:
    """The provider's login button; for a signed-in account that may not enter, why and a sign-out."""
    refusal = state.oidc_refusal()
    if refusal is None:
        st.write("Sign in with your organisation's account.")
        if st.button("Log in", type="primary", icon=":material/login:", key="oidc_login"):
            st.login()
        return
    waiting, why = refusal
    if waiting:
        st.info(
            f"Signed in, and waiting for an admin to approve your account: {why}", icon=":material/hourglass:"
        )
    else:
        st.error(f"Not allowed: {why}", icon=":material/block:")
    if st.button("Sign out", icon=":material/logout:", key="oidc_logout"):
        state.log_out()
        st.logout()


def render_login() -> None:
    """The login form (or the OIDC button); on success the session's user is set and the app reruns."""
    st.title("Cervical pair workbench")
    state.show_flashes()
    if state.oidc_configured():
        _oidc_login()
        return
    st.caption("Accounts are created by an admin (`workbench users add NAME --role labeller`).")
    with st.form("login"):
        username = st.text_input("User name", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        with state.page_errors():
            user = authenticate(state.engine(), username, password)
            if user is None:
                st.error("Unknown user name, wrong password, or a disabled account.")
            else:
                state.log_in(user.username, user.role)
                st.rerun()
