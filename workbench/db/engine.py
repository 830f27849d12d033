"""Engine and session factory: SQLite gets WAL, a busy timeout, foreign keys, immediate writes and
``synchronous=FULL`` (a committed label survives a power loss).

Error messages quoting the database URL go through :class:`~workbench.errors.SettingsError`, which
masks its password (``postgresql://workbench:***@host/db``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from workbench.config import Settings
from workbench.errors import SettingsError


def is_sqlite(engine_or_url: Engine | str) -> bool:
    """Whether an engine or URL points at SQLite."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def create_db_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    """Create an Engine; for SQLite enable WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE.

    SQLite's default deferred transactions upgrade to write locks late and fail with "database is
    locked" under concurrent writers; starting every transaction with BEGIN IMMEDIATE serialises
    writers up front, and the busy timeout makes them wait instead of failing.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise SettingsError(f"WORKBENCH_DATABASE_URL: cannot parse {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            pool_pre_ping=False,
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except Exception as exc:  # unknown dialect or missing driver
        raise SettingsError(f"WORKBENCH_DATABASE_URL: unusable database URL {url!r}: {exc}") from None


#: SQLite durability: with WAL, ``synchronous=NORMAL`` skips the fsync at each commit, so the last
#: commits before a power loss (or an OS crash) can vanish even though the labeller saw "saved". Labels
#: are the one thing the workbench cannot recompute, so every commit is fsynced (``FULL``); the cost is
#: one fsync per transaction, which labelling and job bookkeeping can afford.
SQLITE_SYNCHRONOUS = "FULL"


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, busy timeout, foreign keys and durable commits on every connection; BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_from_settings(settings: Settings) -> Engine:
    """The Engine for the configured database."""
    settings.ensure_home()
    return create_db_engine(settings.db_url, settings.sqlite_busy_timeout_ms)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
