"""Users and roles: who may do what. Passwords are argon2-hashed; roles are checked in library functions.

Roles: ``labeller`` (label only) and ``admin`` (also train, calibrate, export, manage users). Every
action declares the roles allowed in :data:`PERMISSIONS`; an action missing there is refused to every
user (deny by default). The local operator (:class:`workbench.actors.LocalOperator`, never a name) may
do anything. With an OIDC provider in front of the UI, a first login creates a disabled account
*pending approval* (:func:`ensure_oidc_user`) that an admin approves (:func:`approve_user`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, select

from workbench.actors import LOCAL_OPERATOR, RESERVED_NAMES, Actor, check_not_reserved, is_operator
from workbench.db.engine import session_scope
from workbench.db.models import ROLES, User, utcnow
from workbench.errors import ConflictError, NotFoundError, PermissionDenied, ValidationError

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
MIN_PASSWORD = 8
_ADMIN = frozenset({"admin"})
_ANYONE = frozenset({"labeller", "admin"})
# action -> roles allowed. Job kinds are actions too (``submit_job`` checks the kind's name), so every
# kind in ``workbench.jobs.kinds.KINDS`` must be listed (a test checks); anything missing is refused.
PERMISSIONS: dict[str, frozenset[str]] = {
    "label": _ANYONE,  # claim, answer, skip, undo, pair checks (the Label page)
    "train": _ADMIN,
    "infer": _ADMIN,
    "calibrate": _ADMIN,
    "queue": _ADMIN,
    "round": _ADMIN,
    "export": _ADMIN,
    "sleep": _ADMIN,  # diagnostic job; ``crash=True`` kills its worker child
    "promote": _ADMIN,
    "import": _ADMIN,
    "cancel": _ADMIN,
    "users": _ADMIN,  # add, disable, enable, approve
}
_hasher = PasswordHasher()


class AwaitingApproval(PermissionDenied):
    """An OIDC account that exists but that no admin has approved yet."""


@dataclass(frozen=True)
class UserView:
    """A user as adapters see it (never the hash). ``pending``: waiting for an admin's approval."""

    username: str
    role: str
    active: bool
    pending: bool = False


def _view(user: User) -> UserView:
    return UserView(user.username, user.role, user.active, bool(user.pending))


def check_username(username: str) -> str:
    """The stripped name when it is a valid, non-reserved user name; ValidationError saying why."""
    name = (username or "").strip()
    if not USERNAME.match(name):
        raise ValidationError("username: 2-64 characters of letters, digits, '_', '.', '@' or '-'")
    return check_not_reserved(name)


def _find(session, username: str) -> User | None:  # type: ignore[no-untyped-def]
    return session.scalar(select(User).where(User.username == username))


def add_user(
    engine: Engine,
    username: str,
    password: str | None,
    role: str = "labeller",
    *,
    actor: Actor = LOCAL_OPERATOR,
) -> UserView:
    """Create an active user (``password`` None: an OIDC-only user) as ``actor`` (an admin).

    ValidationError for a bad or reserved name, role or password; ConflictError when the name is taken
    (case-insensitively).
    """
    authorize_actor(engine, actor, "users")
    name = check_username(username)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise ValidationError(f"password: at least {MIN_PASSWORD} characters")
    with session_scope(engine) as s:
        if s.scalar(select(User).where(func.lower(User.username) == name.lower())):
            raise ConflictError(f"user {name!r} already exists")
        s.add(
            User(
                username=name,
                password_hash=_hasher.hash(password) if password else None,
                role=role,
                approved_by=str(actor),
                approved_at=utcnow(),
            )
        )
    return UserView(name, role, True)


def list_users(engine: Engine) -> list[UserView]:
    """All users by name."""
    with session_scope(engine) as s:
        return [_view(u) for u in s.scalars(select(User).order_by(User.username))]


def pending_users(engine: Engine) -> list[UserView]:
    """Accounts created by a first OIDC login and waiting for an admin's approval, oldest first."""
    with session_scope(engine) as s:
        rows = s.scalars(select(User).where(User.pending.is_(True)).order_by(User.created_at, User.id))
        return [_view(u) for u in rows]


def set_active(engine: Engine, username: str, active: bool, *, actor: Actor = LOCAL_OPERATOR) -> UserView:
    """Disable (or re-enable) a user as ``actor`` (an admin); a disabled user cannot log in or act.

    A pending account is enabled with :func:`approve_user`, which records who approved it.
    """
    authorize_actor(engine, actor, "users")
    with session_scope(engine) as s:
        user = _find(s, username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        if active and user.pending:
            raise ConflictError(f"user {username!r} is waiting for approval: approve it instead")
        user.active = active
        return _view(user)


def approve_user(engine: Engine, username: str, *, actor: Actor = LOCAL_OPERATOR) -> UserView:
    """Approve a pending account (``actor`` must be an admin): it becomes an active labeller.

    NotFoundError for an unknown user, ConflictError for one that is not pending.
    """
    authorize_actor(engine, actor, "users")
    with session_scope(engine) as s:
        user = _find(s, username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        if not user.pending:
            raise ConflictError(f"user {username!r} is not waiting for approval")
        user.pending, user.active = False, True
        user.approved_by, user.approved_at = str(actor), utcnow()
        return _view(user)


def authenticate(engine: Engine, username: str, password: str) -> UserView | None:
    """The user when name and password match an active user, else None (no hint which was wrong)."""
    with session_scope(engine) as s:
        user = _find(s, (username or "").strip())
        if user is None or not user.active or not user.password_hash:
            _hasher.hash("timing-equaliser")  # similar time whether or not the user exists
            return None
        try:
            _hasher.verify(user.password_hash, password or "")
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        return _view(user)


def get_user(engine: Engine, username: str) -> UserView:
    """An active user by name; PermissionDenied when unknown or disabled."""
    with session_scope(engine) as s:
        user = _find(s, username)
        if user is None or not user.active:
            raise PermissionDenied(f"unknown or disabled user {username!r}")
        return _view(user)


def ensure_oidc_user(engine: Engine, username: str) -> UserView:
    """The active user behind an admitted OIDC login (see :func:`workbench.oidc.admitted_username`).

    A first login creates the account disabled and pending; until an admin approves it, this raises
    :class:`AwaitingApproval`. A disabled account raises PermissionDenied.
    """
    name = check_username(username)
    with session_scope(engine) as s:
        user = _find(s, name)
        if user is None:
            if s.scalar(select(User).where(func.lower(User.username) == name.lower())):
                raise PermissionDenied(f"the account name {name!r} differs only in case from another one")
            user = User(username=name, password_hash=None, role="labeller", active=False, pending=True)
            s.add(user)
        view = _view(user)
    if view.pending:
        raise AwaitingApproval(
            f"your account {name!r} is waiting for an admin to approve it; try again once they have"
        )
    if not view.active:
        raise PermissionDenied(f"user {name!r} is disabled")
    return view


def authorize(engine: Engine, username: str, action: str) -> UserView:
    """The acting user if active and allowed to do ``action``; PermissionDenied naming what is needed."""
    if not isinstance(username, str):
        raise PermissionDenied(f"not a user name: {username!r}")
    if username.strip().lower() in RESERVED_NAMES:  # an account kept from before they were reserved
        raise PermissionDenied(
            f"{username!r} is a reserved name, not a user: the local operator acts without a name "
            "(omit --as on the command line; in code pass workbench.actors.LOCAL_OPERATOR)"
        )
    user = get_user(engine, username)
    allowed = PERMISSIONS.get(action)
    if allowed is None:
        raise PermissionDenied(f"{action!r} is not an action users may take (only the local operator may)")
    if user.role not in allowed:
        who = " or ".join(f"{'an' if r[0] in 'aeiou' else 'a'} {r}" for r in sorted(allowed))
        raise PermissionDenied(f"{username} is a {user.role}; only {who} may {action}")
    return user


def authorize_actor(engine: Engine, actor: Actor, action: str) -> None:
    """Role check for library entry points: the local operator (a :class:`LocalOperator`, never a
    string) may do anything; any other actor is a user name that must be active and allowed."""
    if is_operator(actor):
        return
    authorize(engine, actor, action)
