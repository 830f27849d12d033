"""``workbench queue cold-start``: TypiClust picks from the unlabelled pool of a real import (real
synthetic image files, SQLite and PostgreSQL), queued as label items; never a val/test case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from workbench.config import get_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import session_scope
from workbench.db.models import Case, QueueItem


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small hard pairs, half without a label (those land in the pool)."""
    root = tmp_path_factory.mktemp("cold") / "data"
    generate_dataset(
        root, n=40, positive_rate=0.2, seed=2, size=(48, 48), unlabelled_fraction=0.5, difficulty="hard"
    )
    return root


def _cli(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str):  # type: ignore[no-untyped-def]
    from workbench_cli import app

    monkeypatch.setenv("WORKBENCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["queue", "cold-start", *args])


def test_cold_start_queues_typical_pool_cases_only(
    engine: Engine, db_url: str, synth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_source(engine, synth / "manifest.csv")
    with session_scope(engine) as s:
        splits = dict(s.execute(select(Case.id, Case.split)).all())
    pool = [c for c, split in splits.items() if split == "pool"]
    assert len(pool) >= 10 and any(split in ("val", "test") for split in splits.values())

    res = _cli(monkeypatch, db_url, "--n", "4")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["queued"] == 4
    with session_scope(engine) as s:
        items = s.execute(
            select(QueueItem.case_id, QueueItem.kind, QueueItem.strategy, QueueItem.reason)
        ).all()
    assert len(items) == 4 and {splits[i.case_id] for i in items} == {"pool"}
    assert {(i.kind, i.strategy) for i in items} == {("label", "cold_start")}
    assert all("cold start (TypiClust): most typical of cluster" in i.reason for i in items)

    res = _cli(monkeypatch, db_url, "--n", "0")
    assert res.exit_code != 0 and "must be at least 1, got 0" in res.output
    left = len(pool) - 4  # queued cases are no longer candidates
    res = _cli(monkeypatch, db_url, "--n", str(left + 1))
    assert res.exit_code != 0 and f"the pool holds {left} unlabelled case(s)" in res.output
    assert _cli(monkeypatch, db_url, "--n", str(left)).exit_code == 0  # every remaining case
    res = _cli(monkeypatch, db_url, "--n", "1")
    assert res.exit_code != 0 and "no unlabelled pool cases" in res.output
    with session_scope(engine) as s:
        queued = list(s.scalars(select(QueueItem.case_id)))
    assert sorted(queued) == sorted(pool)
