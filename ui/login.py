"""Log in: through the configured OIDC provider, else with a workbench user name and password.

Not a page of its own: ``app.py`` renders it in place of whichever page was asked for, so that after
logging in the user lands on that page (a deep link such as ``/jobs`` survives the login).
"""

from __future__ import annotations

import streamlit as st

from ui import state
from workbench.users import authenticate


def render_login() -> None:
    """The login form (or the OIDC button); on success the session's user is set and the app reruns."""
    st.title("Cervical pair workbench")
    state.show_flashes()
    if state.oidc_configured():
        st.write("Sign in with your organisation's account.")
        if st.button("Log in", type="primary", icon=":material/login:", key="oidc_login"):
            st.login()
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
