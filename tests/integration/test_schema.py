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


def _add_round(eng, number: int, status: str) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with eng.begin() as conn:
        conn.execute(
            text("INSERT INTO rounds (number, status, created_at) VALUES (:n, :s, CURRENT_TIMESTAMP)"),
            {"n": number, "s": status},
        )


def test_round_status_check_refuses_unknown_status_after_upgrade_from_0006(db_url: str) -> None:
    """0007: existing rounds survive the upgrade; a status outside ROUND_STATUSES is refused after it."""
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from factories import insert_cases
    from workbench.db.engine import session_scope
    from workbench.db.models import ROUND_STATUSES, QueueItem, Round

    eng = create_db_engine(db_url)
    upgrade(eng, "0006")
    for number, status in enumerate(ROUND_STATUSES, start=1):
        _add_round(eng, number, status)
    _add_round(eng, 99, "paused")  # 0006 has no CHECK: the bad value is stored
    with eng.begin() as conn:
        conn.execute(Round.__table__.delete().where(Round.number == 99))
    # A queue item of round 1: on SQLite the batch-mode rebuild of `rounds` must not trip its foreign key.
    (case_id,) = insert_cases(eng, 1)
    with session_scope(eng) as s:
        first = s.scalar(select(Round.id).where(Round.number == 1))
        s.add(QueueItem(case_id=case_id, round_id=first, kind="label", strategy="random", reason="test"))
    assert upgrade(eng) == ("0006", head_revision(eng))
    with eng.connect() as conn:
        assert conn.execute(select(QueueItem.round_id)).scalar_one() == first
    with eng.connect() as conn:
        kept = dict(conn.execute(select(Round.number, Round.status)).all())
    assert kept == dict(enumerate(ROUND_STATUSES, start=1))
    with pytest.raises(IntegrityError, match="(?i)ck_rounds_status|check constraint"):
        _add_round(eng, 100, "paused")
    downgrade(eng, "0006")
    _add_round(eng, 100, "paused")  # the downgrade drops the constraint again
    eng.dispose()
