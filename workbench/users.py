"""Users and roles: who did what. Passwords are argon2-hashed; roles are checked in library functions.

Roles: ``labeller`` (label only) and ``admin`` (also train, calibrate, export, manage users). With an
OIDC provider in front of the UI, users are created on first login with the labeller role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, select

from workbench.db.engine import session_scope
from workbench.db.models import ROLES, User
from workbench.errors import ConflictError, NotFoundError, PermissionDenied, ValidationError

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
MIN_PASSWORD = 8
ADMIN_ACTIONS = frozenset(
    {"train", "infer", "calibrate", "queue", "round", "export", "promote", "import", "users", "cancel"}
)
_hasher = PasswordHasher()


@dataclass(frozen=True)
class UserView:
    """A user as adapters see it (never the hash)."""

    username: str
    role: str
    active: bool


def _check_username(username: str) -> str:
    name = (username or "").strip()
    if not USERNAME.match(name):
        raise ValidationError("username: 2-64 characters of letters, digits, '_', '.', '@' or '-'")
    return name


def add_user(engine: Engine, username: str, password: str | None, role: str = "labeller") -> UserView:
    """Create a user (``password`` None: an OIDC-only user); ConflictError when the name is taken."""
    name = _check_username(username)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise ValidationError(f"password: at least {MIN_PASSWORD} characters")
    with session_scope(engine) as s:
        if s.scalar(select(User).where(func.lower(User.username) == name.lower())):
            raise ConflictError(f"user {name!r} already exists")
        s.add(User(username=name, password_hash=_hasher.hash(password) if password else None, role=role))
    return UserView(name, role, True)


def list_users(engine: Engine) -> list[UserView]:
    """All users by name."""
    with session_scope(engine) as s:
        return [
            UserView(u.username, u.role, u.active) for u in s.scalars(select(User).order_by(User.username))
        ]


def set_active(engine: Engine, username: str, active: bool) -> UserView:
    """Disable (or re-enable) a user; a disabled user cannot log in or act."""
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        user.active = active
        return UserView(user.username, user.role, user.active)


def authenticate(engine: Engine, username: str, password: str) -> UserView | None:
    """The user when name and password match an active user, else None (no hint which was wrong)."""
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == (username or "").strip()))
        if user is None or not user.active or not user.password_hash:
            _hasher.hash("timing-equaliser")  # similar time whether or not the user exists
            return None
        try:
            _hasher.verify(user.password_hash, password or "")
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        return UserView(user.username, user.role, user.active)


def get_user(engine: Engine, username: str) -> UserView:
    """An active user by name; PermissionDenied when unknown or disabled."""
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None or not user.active:
            raise PermissionDenied(f"unknown or disabled user {username!r}")
        return UserView(user.username, user.role, user.active)


def ensure_oidc_user(engine: Engine, username: str) -> UserView:
    """The user behind an OIDC login, created as a labeller on first sight."""
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            user = User(username=_check_username(username), password_hash=None, role="labeller", active=True)
            s.add(user)
        if not user.active:
            raise PermissionDenied(f"user {username!r} is disabled")
        return UserView(user.username, user.role, user.active)


def authorize(engine: Engine, username: str, action: str) -> UserView:
    """The acting user if allowed to do ``action``; PermissionDenied naming the role needed."""
    user = get_user(engine, username)
    if action in ADMIN_ACTIONS and user.role != "admin":
        raise PermissionDenied(f"{username} is a {user.role}; only an admin may {action}")
    return user


LOCAL_OPERATORS = frozenset({"cli", "demo", "system"})


def authorize_actor(engine: Engine, actor: str, action: str) -> None:
    """Role check for library entry points: the local shell operator (``cli``, ``demo``, ``system``:
    someone with access to the server's files and settings) may do anything; everyone else must be
    an active user whose role allows ``action``."""
    if actor in LOCAL_OPERATORS:
        return
    authorize(engine, actor, action)
