"""``workbench demo --no-ui`` on the embedded default (SQLite database and broker, a real worker it starts)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli
from workbench.active.labelling_queue import queue_progress
from workbench.db.engine import create_db_engine
from workbench.db.models import PAIR_CHECK_KIND


def test_demo_runs_its_round_although_the_import_queued_pair_check_items(tmp_path: Path) -> None:
    """Suspect pairs found at import go to the queue as pair-check items; they are not a round's batch, so
    the demo must still train, score and queue (it used to read any queued item as "a round exists")."""
    home = tmp_path / "home"
    env = {"WORKBENCH_HOME": str(home), "WORKBENCH_DATABASE_URL": "", "WORKBENCH_BROKER_URL": ""}
    faulty = tmp_path / "faulty"
    synth = ("synth", str(faulty), "--n", "80", "--size", "96x96", "--positive-rate", "0.2")
    res = run_cli(*synth, "--swap-rate", "0.05", "--mismatch-rate", "0.05", env=env)
    assert res.returncode == 0, res.stderr
    assert run_cli("db", "upgrade", env=env).returncode == 0
    res = run_cli("import", str(faulty), env=env)
    assert res.returncode == 0, res.stderr
    engine = create_db_engine(f"sqlite:///{home / 'workbench.db'}")
    assert queue_progress(engine, kinds=(PAIR_CHECK_KIND,))["queued"] > 0

    res = run_cli(
        "demo", "--no-ui", "--n", "60", "--epochs", "1", "--difficulty", "easy", env=env, timeout=900
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "round job" in res.stdout and "train -> infer -> calibrate -> queue" in res.stdout
    assert "no new round needed" not in res.stdout
    assert "[6/6] --no-ui: done" in res.stdout
    from sqlalchemy import select

    from workbench.db.engine import session_scope
    from workbench.db.models import Job

    with session_scope(engine) as s:
        rounds = s.scalars(select(Job).where(Job.kind == "round")).all()
    assert [j.status for j in rounds] == ["succeeded"]
    # a second run finds what the first left (its round's batch, unless that round did not learn)
    again = run_cli(
        "demo", "--no-ui", "--n", "60", "--epochs", "1", "--difficulty", "easy", env=env, timeout=900
    )
    assert again.returncode == 0, again.stdout + again.stderr
    engine.dispose()
