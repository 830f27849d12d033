"""Identity: the local operator is a type, not a name; roles are deny by default; OIDC admission.

Real SQLite and PostgreSQL databases, the real ``workbench`` console script, the real Streamlit app
(AppTest). Every role check is walked with a labeller (refused), an admin (allowed), a disabled admin
(refused) and the local operator (allowed).
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from factories import make_version
from workbench.actors import (
    CLI_OPERATOR,
    LOCAL_OPERATOR,
    RESERVED_NAMES,
    LocalOperator,
    actor_from_record,
    is_operator,
)
from workbench.config import Settings, load_settings
from workbench.db.engine import engine_from_settings, session_scope
from workbench.db.models import Job, Promotion, User
from workbench.db.schema import upgrade
from workbench.errors import PermissionDenied, ValidationError, WorkbenchError
from workbench.jobs import store
from workbench.jobs.context import JobContext
from workbench.jobs.kinds import KINDS
from workbench.jobs.submit import submit_job
from workbench.oidc import OidcRefused, admitted_username
from workbench.users import (
    PERMISSIONS,
    AwaitingApproval,
    add_user,
    approve_user,
    authenticate,
    authorize_actor,
    ensure_oidc_user,
    list_users,
    pending_users,
    set_active,
)

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "ui" / "app.py")

# Valid parameters of every job kind (the walk below checks this covers KINDS, so a new kind must be added).
KIND_PARAMS: dict[str, dict[str, Any]] = {
    "train": {},
    "infer": {"model_version": 1},
    "calibrate": {"model_version": 1},
    "queue": {"model_version": 1},
    "round": {},
    "export": {"model_version": 1, "out_dir": "/nonexistent/bundle"},
    "sleep": {"seconds": 0.1, "steps": 1},
}
ALLOWED, DENIED = "allowed", "denied"


@pytest.fixture
def people(engine: Engine) -> dict[str, Any]:
    """A labeller, an admin, a disabled admin and the operator, by the outcome each should get."""
    add_user(engine, "lab", "lab-password", "labeller")
    add_user(engine, "boss", "boss-password", "admin")
    add_user(engine, "gone", "gone-password", "admin")
    set_active(engine, "gone", False)
    return {"lab": DENIED, "boss": ALLOWED, "gone": DENIED, "operator": ALLOWED}


def _actor(name: str) -> Any:
    return LOCAL_OPERATOR if name == "operator" else name


def outcome(call: Callable[[], Any]) -> str:
    """``denied`` for a refused role check; ``allowed`` when the call got past it (it may fail later,
    e.g. on an unknown version: that is not a permission question)."""
    try:
        call()
    except PermissionDenied:
        return DENIED
    except WorkbenchError:
        return ALLOWED
    return ALLOWED


# The operator is a type ---------------------------------------------------------------------------


def test_the_operator_is_a_type_and_its_record_reads_back_only_from_a_job_row() -> None:
    assert is_operator(CLI_OPERATOR) and str(CLI_OPERATOR) == "operator:cli"
    assert not is_operator("operator:cli") and not is_operator("cli") and not is_operator("system")
    assert (
        is_operator(actor_from_record("operator:demo"))
        and actor_from_record("operator:demo").origin == "demo"
    )
    assert actor_from_record("operator:bogus") == "operator:bogus" and not is_operator(
        actor_from_record("operator:bogus")
    )
    assert not is_operator(actor_from_record("alice"))
    for twin in (
        copy.copy(CLI_OPERATOR),
        copy.deepcopy(CLI_OPERATOR),
        pickle.loads(pickle.dumps(CLI_OPERATOR)),
    ):
        assert is_operator(twin) and twin.origin == "cli"
    with pytest.raises(ValueError, match="origin"):
        LocalOperator("root")


def test_plain_strings_are_user_names_even_when_they_spell_the_operator(engine: Engine) -> None:
    with session_scope(engine) as s:  # an account kept from before the names were reserved
        s.add(User(username="system", password_hash=None, role="admin", active=True))
    for forged in ("cli", "demo", "system", "operator:cli", "operator:local", str(CLI_OPERATOR)):
        with pytest.raises(PermissionDenied):
            authorize_actor(engine, forged, "promote")
    with pytest.raises(PermissionDenied, match="reserved name, not a user"):
        authorize_actor(engine, "system", "promote")
    authorize_actor(engine, CLI_OPERATOR, "promote")


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES) + ["SYSTEM", " Cli "])
def test_reserved_names_are_refused_at_user_creation(sqlite_url: str, name: str) -> None:
    from workbench.db.engine import create_db_engine

    eng = create_db_engine(sqlite_url)
    upgrade(eng)
    with pytest.raises(ValidationError, match="reserved"):
        add_user(eng, name, "a-good-password", "labeller")
    assert list_users(eng) == []
    eng.dispose()


# Deny by default: every job kind and every library entry point ----------------------------------


def test_every_job_kind_declares_its_roles_and_sleep_is_admin_only() -> None:
    assert set(KIND_PARAMS) == set(KINDS), "add the new kind to KIND_PARAMS (and to users.PERMISSIONS)"
    assert set(KINDS) <= set(PERMISSIONS)
    assert PERMISSIONS["sleep"] == {"admin"}
    assert {a for a, roles in PERMISSIONS.items() if "labeller" in roles} == {"label"}


def test_submit_job_walks_every_kind(engine: Engine, people: dict[str, str]) -> None:
    sent: list[int] = []

    def submit(kind: str, actor: Any) -> None:
        job_id = submit_job(
            engine, kind, KIND_PARAMS[kind], requester=actor, send=lambda j, *_: sent.append(j) or "t"
        )
        store.request_cancel(engine, job_id, actor=LOCAL_OPERATOR)  # frees the exclusive round

    for kind in KIND_PARAMS:
        for name, expected in people.items():
            assert outcome(lambda k=kind, n=name: submit(k, _actor(n))) == expected, (kind, name)
    with session_scope(engine) as s:
        rows = s.execute(select(Job.kind, Job.requester).order_by(Job.id)).all()
    assert [tuple(r) for r in rows] == [(k, who) for k in KIND_PARAMS for who in ("boss", "operator:local")]
    assert len(sent) == len(rows)


def test_a_labeller_cannot_submit_the_crashing_sleep_job(engine: Engine, people: dict[str, str]) -> None:
    with pytest.raises(PermissionDenied, match="lab is a labeller; only an admin may sleep"):
        submit_job(engine, "sleep", {"crash": True}, requester="lab", send=lambda *_: "t")
    with session_scope(engine) as s:
        assert s.scalar(select(func.count(Job.id))) == 0


def test_library_entry_points_walk_every_actor(
    engine: Engine, people: dict[str, str], tmp_path: Path
) -> None:
    from workbench.data.importer import import_source
    from workbench.export.bundle import export_bundle
    from workbench.export.promotion import promote

    settings = load_settings()
    add_user(engine, "target", None, "labeller")
    entry_points: dict[str, Callable[[Any], Any]] = {
        "request_cancel": lambda a: store.request_cancel(
            engine, store.create_job(engine, "sleep", {}, requester="x", queue="cpu"), actor=a
        ),
        "promote": lambda a: promote(engine, 9999, a, "why"),  # allowed: NotFoundError after the check
        "export_bundle": lambda a: export_bundle(engine, settings, 9999, tmp_path / "out", actor=a),
        "import_source": lambda a: import_source(engine, tmp_path / "missing.csv", requester=a),
        "add_user": lambda a: add_user(engine, "bad name!", "password-1", actor=a),
        "set_active": lambda a: set_active(engine, "nobody", False, actor=a),
        "approve_user": lambda a: approve_user(engine, "nobody", actor=a),
    }
    for entry, call in entry_points.items():
        for name, expected in people.items():
            assert outcome(lambda call=call, name=name: call(_actor(name))) == expected, (entry, name)


def test_an_undeclared_action_is_refused_to_admins_but_not_to_the_operator(
    engine: Engine, people: dict[str, str]
) -> None:
    with pytest.raises(PermissionDenied, match="not an action users may take"):
        authorize_actor(engine, "boss", "drop-everything")
    authorize_actor(engine, LOCAL_OPERATOR, "drop-everything")


def test_the_job_context_turns_the_operator_record_back_into_the_operator(engine: Engine) -> None:
    job_id = submit_job(engine, "sleep", {}, requester=CLI_OPERATOR, send=lambda *_: "t")
    job = store.get_job(engine, job_id)
    assert job.requester == "operator:cli" and type(job.requester) is str
    ctx = JobContext(engine, Settings(), job.id, job.kind, job.params, job.requester)
    assert is_operator(ctx.actor) and ctx.actor.origin == "cli"
    authorize_actor(engine, ctx.actor, "export")  # what a handler re-checking its requester does
    add_user(engine, "lab", "lab-password", "labeller")
    labeller_ctx = JobContext(engine, Settings(), job.id, job.kind, job.params, "lab")
    assert labeller_ctx.actor == "lab" and not is_operator(labeller_ctx.actor)
    with pytest.raises(PermissionDenied):
        authorize_actor(engine, labeller_ctx.actor, "export")


# The command line: the reproduction, --as, the password ----------------------------------------


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "workbench"
    return subprocess.run(
        [str(exe), *args], input=stdin, capture_output=True, text=True, env=dict(os.environ), timeout=300
    )


def test_the_reserved_name_reproduction_is_refused_on_the_command_line() -> None:
    eng = engine_from_settings(load_settings())  # conftest's fresh WORKBENCH_HOME
    upgrade(eng)
    version = make_version(eng)
    added = _cli("users", "add", "system", "--role", "labeller", "--password-stdin", stdin="pw-of-system\n")
    assert added.returncode == 1 and "user name 'system' is reserved" in added.stderr, added.stderr
    assert _cli("users", "add", "alice", "--password-stdin", stdin="alice-password\n").returncode == 0
    said = {}
    for who in ("alice", "system", "operator:cli"):
        refused = _cli("promote", str(version), "--reason", "mine", "--as", who)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        said[who] = refused.stderr
    assert "alice is a labeller; only an admin may promote" in said["alice"]
    assert "'system' is a reserved name, not a user" in said["system"]
    assert "unknown or disabled user 'operator:cli'" in said["operator:cli"]
    with session_scope(eng) as s:
        assert s.scalar(select(func.count(Promotion.id))) == 0
    done = _cli("promote", str(version), "--reason", "the operator's call")  # no --as: the operator
    assert done.returncode == 0, done.stderr
    with session_scope(eng) as s:
        assert s.scalars(select(Promotion.promoted_by)).all() == ["operator:cli"]
    eng.dispose()


def test_users_add_takes_the_password_from_a_prompt_or_stdin_never_argv() -> None:
    from workbench_cli import app

    eng = engine_from_settings(load_settings())
    upgrade(eng)
    runner = CliRunner()
    argv = runner.invoke(app, ["users", "add", "carol", "--password", "carol-password"])
    assert argv.exit_code == 1 and "process list" in argv.output, argv.output
    prompted = runner.invoke(app, ["users", "add", "carol"], input="carol-password\ncarol-password\n")
    assert prompted.exit_code == 0, prompted.output
    assert "carol-password" not in prompted.output  # hidden input
    assert authenticate(eng, "carol", "carol-password") is not None
    piped = runner.invoke(app, ["users", "add", "dave", "--password-stdin"], input="dave-password\n")
    assert piped.exit_code == 0, piped.output
    assert authenticate(eng, "dave", "dave-password") is not None
    empty = runner.invoke(app, ["users", "add", "erin", "--password-stdin"], input="")
    assert empty.exit_code == 1 and "held no password" in empty.output
    eng.dispose()


# OIDC admission -----------------------------------------------------------------------------------


def _settings(**kw: Any) -> Settings:
    return load_settings(**kw)


def test_an_unverified_email_is_never_a_name() -> None:
    for verified in (None, False, "false"):
        with pytest.raises(OidcRefused, match="has not verified the email"):
            admitted_username({"email": "boss@example.org", "email_verified": verified}, _settings())
    for verified in (True, "true", "TRUE"):
        claims = {"email": "Boss@Example.org", "email_verified": verified}
        assert admitted_username(claims, _settings()) == "boss@example.org"


def test_the_allow_list_admits_a_domain_or_a_group() -> None:
    cfg = _settings(oidc_allowed_domains="example.org", oidc_allowed_groups=["wb-labellers"])
    assert admitted_username({"email": "a@example.org", "email_verified": True}, cfg) == "a@example.org"
    with pytest.raises(OidcRefused, match="only accounts from email domains example.org or listed groups"):
        admitted_username({"email": "a@elsewhere.org", "email_verified": True, "groups": ["staff"]}, cfg)
    outsider = {"email": "b@elsewhere.org", "email_verified": True, "groups": ["staff", "wb-labellers"]}
    assert admitted_username(outsider, cfg) == "b@elsewhere.org"
    assert admitted_username({"preferred_username": "carol", "groups": "wb-labellers"}, cfg) == "carol"
    with pytest.raises(OidcRefused, match="no verified email was sent"):
        admitted_username({"preferred_username": "carol"}, _settings(oidc_allowed_domains="example.org"))


@pytest.mark.parametrize("claims", [{"preferred_username": "system"}, {"sub": "CLI"}, {"sub": "operator"}])
def test_a_reserved_provider_name_is_refused(claims: dict[str, str]) -> None:
    with pytest.raises(OidcRefused, match="reserved"):
        admitted_username(claims, _settings())


def test_allow_list_settings_are_validated() -> None:
    from workbench.errors import SettingsError

    assert _settings(oidc_allowed_domains="@Example.ORG, b.example.org").oidc_allowed_domains == [
        "example.org",
        "b.example.org",
    ]
    with pytest.raises(
        SettingsError, match="WORKBENCH_OIDC_ALLOWED_DOMAINS: not an email domain: 'not a domain'"
    ):
        _settings(oidc_allowed_domains="not a domain")


def test_a_first_oidc_login_waits_for_an_admin(engine: Engine) -> None:
    name = admitted_username({"email": "erin@example.org", "email_verified": True}, _settings())
    for _ in range(2):  # the first login creates the account, the next one finds it still pending
        with pytest.raises(AwaitingApproval, match="waiting for an admin to approve"):
            ensure_oidc_user(engine, name)
    assert [(u.username, u.active, u.pending) for u in pending_users(engine)] == [(name, False, True)]
    assert authenticate(engine, name, "") is None
    add_user(engine, "lab", "lab-password", "labeller")
    with pytest.raises(PermissionDenied):
        approve_user(engine, name, actor="lab")
    with pytest.raises(WorkbenchError, match="approve it instead"):
        set_active(engine, name, True)
    add_user(engine, "boss", "boss-password", "admin")
    approved = approve_user(engine, name, actor="boss")
    assert (approved.active, approved.pending, approved.role) == (True, False, "labeller")
    assert ensure_oidc_user(engine, name).active and pending_users(engine) == []
    with session_scope(engine) as s:
        assert s.scalar(select(User.approved_by).where(User.username == name)) == "boss"
    set_active(engine, name, False, actor="boss")
    with pytest.raises(PermissionDenied, match="disabled") as refused:
        ensure_oidc_user(engine, name)
    assert not isinstance(refused.value, AwaitingApproval)


# The Users page approves (AppTest) ----------------------------------------------------------------

OIDC_SECRETS = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-cookie-secret-of-some-length-0123456789",
    "client_id": "workbench",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
}


def _oidc_app(claims: dict[str, Any]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = OIDC_SECRETS
    at.user = {"is_logged_in": True, **claims}
    return at.run()


def _texts(elements: Any) -> str:
    return " | ".join(str(e.value) for e in elements)


def test_the_users_page_approves_a_pending_oidc_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_OIDC_ALLOWED_DOMAINS", "example.org")
    eng = engine_from_settings(load_settings())
    upgrade(eng)
    add_user(eng, "root@example.org", None, "admin")
    erin_claims = {"email": "erin@example.org", "email_verified": True}

    erin = _oidc_app(erin_claims)
    assert not erin.exception
    assert "waiting for an admin to approve" in _texts(erin.info), _texts(erin.info)
    assert not erin.sidebar.markdown and [b.key for b in erin.button] == ["oidc_logout"]
    outsider = _oidc_app({"email": "x@elsewhere.org", "email_verified": True})
    assert "x@elsewhere.org is not admitted" in _texts(outsider.error)
    unverified = _oidc_app({"email": "root@example.org", "email_verified": False})  # the admin's address
    assert "has not verified the email" in _texts(unverified.error) and not unverified.sidebar.markdown

    admin = _oidc_app({"email": "root@example.org", "email_verified": True})
    assert "Signed in as **root@example.org** (admin)" in _texts(admin.sidebar.markdown)
    admin.switch_page("app_pages/users.py").run()
    assert not admin.exception and not admin.error, _texts(admin.error)
    assert "Waiting for approval (1)" in _texts(admin.subheader)
    admin.button(key="approve_erin@example.org").click().run()
    assert "User erin@example.org approved: an active labeller now." in _texts(admin.success)
    assert "Waiting for approval" not in _texts(admin.subheader)

    erin.run()
    assert "Signed in as **erin@example.org** (labeller)" in _texts(erin.sidebar.markdown)
    with pytest.raises(ValueError):  # a labeller never gets the Users page
        erin.switch_page("app_pages/users.py")
    eng.dispose()
