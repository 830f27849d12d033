"""Alembic migrations round-trip on SQLite and PostgreSQL; commands refuse an out-of-date schema."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from conftest import run_cli
from workbench.db.engine import create_db_engine
from workbench.db.models import Base
from workbench.db.schema import current_revision, downgrade, ensure_current, head_revision, upgrade
from workbench.errors import SchemaOutOfDateError

EXPRESSION_INDEXES = {"ix_queue_items_claim"}


def test_upgrade_downgrade_upgrade_round_trip(db_url: str) -> None:
    eng = create_db_engine(db_url)
    head = head_revision(eng)
    assert upgrade(eng) == (None, head)
    assert set(Base.metadata.tables) <= set(inspect(eng).get_table_names())
    assert downgrade(eng, "base") == (head, None)
    assert not set(Base.metadata.tables) & set(inspect(eng).get_table_names())
    assert upgrade(eng) == (None, head)
    # The migrations build exactly the schema the models describe. Alembic can only approximate
    # expression indexes (priority DESC) on SQLite, so that one is checked by name and columns.
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [
        d for d in diff if not (d[0] in ("add_index", "remove_index") and d[1].name in EXPRESSION_INDEXES)
    ] == []
    claim = {ix["name"]: ix for ix in inspect(eng).get_indexes("queue_items")}["ix_queue_items_claim"]
    assert claim["column_names"][0] == "status" and claim["column_names"][-1] == "id"
    ensure_current(eng)
    eng.dispose()


def test_empty_database_is_refused_with_the_fix(db_url: str) -> None:
    eng = create_db_engine(db_url)
    with pytest.raises(SchemaOutOfDateError, match="workbench db upgrade"):
        ensure_current(eng)
    assert current_revision(eng) is None


def test_cli_refuses_old_schema_and_says_what_to_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"WORKBENCH_DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"}
    res = run_cli("cases", env=env)
    assert res.returncode != 0
    assert "workbench db upgrade" in res.stderr
    assert "Traceback" not in res.stderr
    up = run_cli("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert run_cli("cases", env=env).returncode == 0
    assert run_cli("db", "downgrade", "base", env=env).returncode == 0
    res = run_cli("cases", env=env)
    assert res.returncode != 0 and "workbench db upgrade" in res.stderr
