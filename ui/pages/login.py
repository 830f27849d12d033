"""Log in: through the configured OIDC provider, else with a workbench user name and password."""

from __future__ import annotations

import streamlit as st

from ui import state
from workbench.users import authenticate

st.title("Cervical pair workbench")
state.show_flashes()

if state.oidc_configured():
    st.write("Sign in with your organisation's account.")
    if st.button("Log in", type="primary", icon=":material/login:", key="oidc_login"):
        st.login()
else:
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
