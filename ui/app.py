"""The workbench UI: ``workbench ui`` runs ``streamlit run ui/app.py``.

One entry script: it checks the database, resolves the logged-in user and hands over to the page the
user picked (``st.navigation``). Pages are thin: every read and write goes through workbench functions,
which check the acting user's role themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run ui/app.py` puts ui/ itself on the path, not the root
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from workbench.errors import WorkbenchError  # noqa: E402
from workbench.redaction import redact  # noqa: E402
from workbench_ui import state  # noqa: E402
from workbench_ui.login import render_login  # noqa: E402

PAGES = HERE / "app_pages"  # not "pages/": that name switches Streamlit to its old directory-based routing

st.set_page_config(page_title="Cervical pair workbench", page_icon=":material/biotech:", layout="wide")

try:
    eng = state.engine()
    user = state.current_user(eng)
except (WorkbenchError, SQLAlchemyError) as exc:  # shown before login: never a password in it
    st.title("Cervical pair workbench")
    st.error(redact(state.error_text(exc)), icon=":material/error:")
    st.stop()

pages = [
    st.Page(PAGES / "label.py", title="Label", icon=":material/label:", default=True),
    st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/work_history:"),
    st.Page(PAGES / "calibration.py", title="Calibration", icon=":material/tune:"),
    st.Page(PAGES / "models.py", title="Models", icon=":material/model_training:"),
    st.Page(PAGES / "data.py", title="Data", icon=":material/dataset:"),
]


if user is None:
    # Register the pages (hidden) so the requested page is remembered, but show the login form instead.
    st.navigation(pages, position="hidden")
    render_login()
    st.stop()

if user.is_admin:
    pages.append(st.Page(PAGES / "users.py", title="Users", icon=":material/group:"))

with st.sidebar:
    st.markdown(f"Signed in as **{user.username}** ({user.role})")
    if st.button("Log out", icon=":material/logout:", key="logout"):
        state.log_out()
        st.rerun()

st.navigation(pages).run()
