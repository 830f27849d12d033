"""Shared plumbing of the Streamlit pages: settings, the cached Engine, the logged-in user, errors.

The Engine is cached per database URL with ``st.cache_resource`` (one pool per server process; a
Session is never cached: each workbench function opens and closes its own). The logged-in user lives
in ``st.session_state`` and is re-checked against the database on every run, so a disabled user is
logged out at their next click.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from workbench.config import Settings, load_settings
from workbench.db.engine import create_db_engine
from workbench.db.schema import ensure_current
from workbench.errors import PermissionDenied, WorkbenchError
from workbench.redaction import redact

USER_KEY = "wb_user"
FLASH_KEY = "wb_flash"
REFUSAL_KEY = "wb_oidc_refusal"  # why the identity provider's account may not (yet) use the workbench


@dataclass(frozen=True)
class CurrentUser:
    """The person using this browser session."""

    username: str
    role: str
    via: str  # "password" or "oidc"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def settings() -> Settings:
    """Settings in effect (re-read each run: cheap, and a bad value is reported, not cached)."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def _engine_for(url: str, busy_timeout_ms: int) -> Engine:
    return create_db_engine(url, busy_timeout_ms)


@st.cache_resource(show_spinner=False)
def _schema_checked(url: str) -> bool:
    """Run the schema check once per database (a failure raises, and is not cached)."""
    ensure_current(_engine_for(url, settings().sqlite_busy_timeout_ms))
    return True


def engine() -> Engine:
    """The Engine of the configured database, after checking the schema is current."""
    cfg = settings()
    cfg.ensure_home()
    eng = _engine_for(cfg.db_url, cfg.sqlite_busy_timeout_ms)
    _schema_checked(cfg.db_url)
    return eng


def sender() -> Callable[[int, str, str], str]:
    """The Celery sender that ``submit_job`` hands each new job to."""
    from workbench_workers.app import send_job

    return send_job


def error_text(exc: BaseException) -> str:
    """One clear line for an expected failure (never a traceback, never a password)."""
    return redact(_error_line(exc))


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, WorkbenchError):
        return str(exc)
    if isinstance(exc, OperationalError | DBAPIError):
        detail = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
        return f"The database is unreachable or refused the request: {detail[0] if detail else type(exc).__name__}"
    return f"Database error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"


@contextlib.contextmanager
def page_errors() -> Iterator[None]:
    """Show a WorkbenchError or database error as one st.error line; the page goes on after the block."""
    try:
        yield
    except PermissionDenied as exc:
        st.error(f"Not allowed: {exc}", icon=":material/block:")
    except WorkbenchError as exc:
        st.error(error_text(exc), icon=":material/error:")
    except SQLAlchemyError as exc:
        st.error(error_text(exc), icon=":material/database:")


def run_action(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """Call ``fn``; (its result, None) or (None, one-line error) for expected failures."""
    try:
        return fn(), None
    except PermissionDenied as exc:
        return None, f"Not allowed: {exc}"
    except (WorkbenchError, SQLAlchemyError) as exc:
        return None, error_text(exc)


# Flash messages survive one rerun (an action in a callback, shown by the next render). --------------


def flash(kind: str, text: str) -> None:
    """Queue a message (``success``, ``info``, ``warning`` or ``error``) for the next render."""
    st.session_state.setdefault(FLASH_KEY, []).append((kind, text))


def show_flashes() -> None:
    """Show and clear queued messages."""
    for kind, text in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(text)


# Users ---------------------------------------------------------------------------------------------


def oidc_configured() -> bool:
    """Whether an OIDC provider is configured: Streamlit's secrets hold an ``[auth]`` section."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file (or an unreadable one): password login
        return False


def oidc_claims() -> dict[str, Any] | None:
    """The identity provider's claims for this browser session (``st.user``); None when signed out.

    The one place the UI reads them (tests set ``AppTest.user``)."""
    claims = dict(st.user)
    return claims if claims.get("is_logged_in") else None


def oidc_refusal() -> tuple[bool, str] | None:
    """(awaiting approval?, why) when the signed-in OIDC account may not use the workbench, else None."""
    return st.session_state.get(REFUSAL_KEY)


def _oidc_user(eng: Engine) -> CurrentUser | None:
    """The admitted, approved and active user behind the OIDC session, else None (the refusal is kept
    for the login page: not admitted, waiting for approval, or disabled)."""
    from workbench.oidc import admitted_username
    from workbench.users import AwaitingApproval, ensure_oidc_user

    claims = oidc_claims()
    if claims is None:
        st.session_state.pop(REFUSAL_KEY, None)
        return None
    try:
        view = ensure_oidc_user(eng, admitted_username(claims, settings()))
    except PermissionDenied as exc:
        st.session_state.pop(USER_KEY, None)
        st.session_state[REFUSAL_KEY] = (isinstance(exc, AwaitingApproval), str(exc))
        return None
    st.session_state.pop(REFUSAL_KEY, None)
    user = CurrentUser(view.username, view.role, "oidc")
    st.session_state[USER_KEY] = {"username": user.username, "role": user.role, "via": "oidc"}
    return user


def current_user(eng: Engine) -> CurrentUser | None:
    """The logged-in, still active user; None when nobody is logged in (or the user was disabled)."""
    from workbench.users import get_user

    if oidc_configured():
        return _oidc_user(eng)
    stored = st.session_state.get(USER_KEY)
    if not stored:
        return None
    try:
        view = get_user(eng, stored["username"])
    except PermissionDenied:
        st.session_state.pop(USER_KEY, None)
        flash("warning", f"User {stored['username']} is unknown or disabled: logged out.")
        return None
    user = CurrentUser(view.username, view.role, stored.get("via", "password"))
    st.session_state[USER_KEY] = {"username": user.username, "role": user.role, "via": user.via}
    return user


def require_user() -> CurrentUser:
    """The current user for a page (the app only shows pages once someone is logged in)."""
    stored = st.session_state.get(USER_KEY)
    if not stored:
        st.warning("Please log in.")
        st.stop()
    return CurrentUser(stored["username"], stored["role"], stored.get("via", "password"))


def log_in(username: str, role: str) -> None:
    st.session_state[USER_KEY] = {"username": username, "role": role, "via": "password"}


def log_out() -> None:
    """Forget the user of this session (and end the OIDC session when there is one)."""
    via = (st.session_state.get(USER_KEY) or {}).get("via")
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if via == "oidc":
        st.logout()


def fmt_estimate(est: dict[str, Any] | None, digits: int = 3) -> str:
    """``0.123 [0.100, 0.150]`` from an Estimate dict; ``n/a`` (with the reason) when undefined."""
    if not est or est.get("value") is None:
        reason = (est or {}).get("reason")
        return f"n/a ({reason})" if reason else "n/a"
    lo, hi = est.get("low"), est.get("high")
    if lo is None:
        lo, hi = est.get("wilson_low"), est.get("wilson_high")
    if lo is None or hi is None:
        return f"{est['value']:.{digits}f}"
    return f"{est['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
