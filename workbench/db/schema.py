"""Schema version management: upgrade/downgrade with Alembic and refuse to run on an old schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from workbench.errors import SchemaOutOfDateError, WorkbenchError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
UPGRADE_HINT = "workbench db upgrade"


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to the engine's database (the migrations folder of this project)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision(engine: Engine) -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None, "no Alembic revisions found"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """One transaction for a migration run. On SQLite, foreign-key enforcement is off while it runs:
    batch mode rebuilds a table (copy, drop, rename), and dropping a table that other rows reference
    fails with enforcement on. The references are checked before the commit instead
    (``PRAGMA foreign_key_check``), so a migration can never leave a dangling one behind."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # outside any transaction: inside one this pragma is a no-op
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise WorkbenchError(
                            f"the migration would leave {len(broken)} dangling reference(s) "
                            f"(first: table {broken[0][0]}, row {broken[0][1]}); nothing was changed"
                        )
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the schema; returns (revision before, revision after)."""
    before = current_revision(engine)
    with _migration_connection(engine) as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current_revision(engine)


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Downgrade the schema to ``revision`` ("base" drops every table)."""
    before = current_revision(engine)
    with _migration_connection(engine) as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    return before, current_revision(engine)


def ensure_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDateError` unless the database is at the code's head revision."""
    current = current_revision(engine)
    head = head_revision(engine)
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaOutOfDateError(f"the database {where} has no workbench schema yet: run `{UPGRADE_HINT}`")
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaOutOfDateError(
            f"the database {where} is at revision {current}, which this version of the workbench does not "
            "know (it was upgraded by a newer version); upgrade the workbench"
        )
    raise SchemaOutOfDateError(
        f"the database schema is behind (at {current}, code expects {head}): run `{UPGRADE_HINT}`"
    )
