"""The automatic retraining trigger (WORKBENCH_RETRAIN_AFTER_LABELS): a round is submitted exactly once
after N new expert labels, even when labellers submit at the same moment, never while a round is
queued, running or waiting, and never with N = 0; a real worker picks the triggered round up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import IntegrityError
from test_job_endings import wait_job
from test_ui_apptest import Seeded, app_as, seeded, template, texts  # noqa: F401 (fixtures)

from conftest import Stack
from factories import insert_cases
from together import start_together
from workbench.active.labelling_queue import claim_next, enqueue, submit_label
from workbench.active.strategies import Selected
from workbench.config import Settings
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Job, utcnow
from workbench.db.schema import upgrade
from workbench.jobs import store
from workbench.jobs.params import RoundParams
from workbench.rounds import AUTO_REQUESTER, retrain_status, trigger_round_if_due

ROOT = Path(__file__).resolve().parents[2]
N_LABELLERS = 20


def no_broker(job_id: int, kind: str, queue: str) -> str:
    """A sender for tests that look at job rows only: the message goes nowhere."""
    return f"test-{job_id}"


def queue_cases(engine: Engine, n: int) -> list[int]:
    return enqueue(engine, [Selected(cid, "random", 0.5, "test") for cid in insert_cases(engine, n)])


def label(engine: Engine, n: int, who: str = "expert") -> None:
    """Claim and answer ``n`` queued items as ``who`` (positive, so every one counts)."""
    for _ in range(n):
        item = claim_next(engine, who)
        assert item is not None, "the test queue ran dry"
        submit_label(engine, item.item_id, who, 1)


def round_jobs(engine: Engine) -> list[Job]:
    with session_scope(engine) as s:
        rows = list(s.scalars(select(Job).where(Job.kind == "round").order_by(Job.id)))
        s.expunge_all()
        return rows


# Exclusive kinds are guarded by the database ------------------------------------------------------


def test_the_database_refuses_a_second_active_round(engine: Engine) -> None:
    from workbench.actors import LOCAL_OPERATOR
    from workbench.jobs.submit import submit_job

    first = store.create_job(engine, "round", {}, requester="test", queue="gpu")
    with pytest.raises(IntegrityError):  # what a racing second submit hits after both checks passed
        store.create_job(engine, "round", {}, requester="test", queue="gpu")
    store.create_job(engine, "train", {}, requester="test", queue="gpu")  # other kinds: any number
    store.create_job(engine, "train", {}, requester="test", queue="gpu")
    assert store.claim_job(engine, first, "w@h/1/a", max_attempts=3) is not None
    with session_scope(engine) as s:  # its worker is gone: the next submit ends it, then inserts
        s.execute(update(Job).where(Job.id == first).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    second = submit_job(
        engine, "round", {}, requester=LOCAL_OPERATOR, send=no_broker, stale_after=timedelta(minutes=5)
    )
    ended = store.get_job(engine, first)
    assert ended.status == "failed" and "stopped reporting" in (ended.error or "")
    assert store.active_job_of_kind(engine, "round") == second


def test_upgrade_to_0009_keeps_the_oldest_of_overlapping_rounds(db_url: str) -> None:
    eng = create_db_engine(db_url)
    upgrade(eng, "0008")
    with eng.begin() as conn:
        for status in ("succeeded", "queued", "running", "waiting"):
            conn.execute(
                text(
                    "INSERT INTO jobs (kind, params, status, progress, requester, cancel_requested, "
                    "attempts, created_at) VALUES ('round', '{}', :s, 0, 'test', false, 0, CURRENT_TIMESTAMP)"
                ),
                {"s": status},
            )
    upgrade(eng)
    with eng.connect() as conn:
        rows = conn.execute(text("SELECT status, error FROM jobs ORDER BY id")).all()
    assert [r[0] for r in rows] == ["succeeded", "queued", "failed", "failed"]
    assert "another round job was already queued or running" in rows[2][1]
    eng.dispose()


# The trigger ---------------------------------------------------------------------------------------


def test_trigger_waits_for_n_labels_and_for_an_active_round(engine: Engine) -> None:
    settings = Settings(retrain_after_labels=3)
    queue_cases(engine, 8)
    label(engine, 2)
    assert trigger_round_if_due(engine, settings, no_broker) is None
    assert retrain_status(engine, 3).remaining == 1
    # an admin's round is queued: the third label does not start another one
    admin = store.create_job(engine, "round", {}, requester="root", queue="gpu")
    label(engine, 1)
    assert retrain_status(engine, 3).active_job == admin
    assert trigger_round_if_due(engine, settings, no_broker) is None
    for status in ("running", "waiting"):  # nor while it runs, nor while its shards are out
        with session_scope(engine) as s:
            s.execute(update(Job).where(Job.id == admin).values(status=status, heartbeat_at=utcnow()))
        assert trigger_round_if_due(engine, settings, no_broker) is None
    with session_scope(engine) as s:
        s.execute(update(Job).where(Job.id == admin).values(status="succeeded"))
    # labels from before the admin's round job were in its reach; the one after it counts
    assert retrain_status(engine, 3).new_labels == 1
    label(engine, 1)
    assert trigger_round_if_due(engine, settings, no_broker) is None
    label(engine, 1)
    auto = trigger_round_if_due(engine, settings, no_broker, RoundParams(batch_size=4))
    assert auto is not None
    job = store.get_job(engine, auto)
    assert (job.kind, job.status, job.requester, job.params["batch_size"]) == (
        "round",
        "queued",
        "operator:auto",
        4,
    )
    status = retrain_status(engine, 3)
    assert status.active_job == auto and status.active_automatic
    assert trigger_round_if_due(engine, settings, no_broker) is None  # once
    assert len(round_jobs(engine)) == 2


def test_n_zero_never_triggers(engine: Engine) -> None:
    queue_cases(engine, 6)
    label(engine, 6)
    assert trigger_round_if_due(engine, Settings(retrain_after_labels=0), no_broker) is None
    assert retrain_status(engine, 0).remaining is None
    assert round_jobs(engine) == []


# Twenty labellers at once ---------------------------------------------------------------------------

# One labeller process: claims an item, signals ready, waits for "go", then labels and runs the trigger
# as the Label page does; prints the trigger's answer. The trigger waits until every label is in, so
# all twenty see the threshold crossed at once: the worst case for a check-then-insert (without the
# unique index over active round jobs, this test creates several round jobs).
LABELLER = """
import json, os, sys, time
from workbench.active.labelling_queue import claim_next, submit_label
from workbench.config import Settings
from workbench.db.engine import create_db_engine
from workbench.rounds import trigger_round_if_due

url, name, signals, every = sys.argv[1:5]
engine = create_db_engine(url)
item = claim_next(engine, name)
open(os.path.join(signals, "ready-" + name), "w").close()
while not os.path.exists(os.path.join(signals, "go")):
    time.sleep(0.005)
submit_label(engine, item.item_id, name, 1)
open(os.path.join(signals, "labelled-" + name), "w").close()
while not os.path.exists(os.path.join(signals, "trigger")):
    time.sleep(0.005)
job = trigger_round_if_due(engine, Settings(retrain_after_labels=int(every)), lambda j, k, q: f"test-{j}")
print(json.dumps(job))
"""


def run_labellers(url: str, signals: Path, every: int) -> list[int | None]:
    names = [f"expert{k:02d}" for k in range(N_LABELLERS)]
    started = start_together(LABELLER, names, lambda who: [url, who, str(signals), str(every)], signals)
    procs = list(started.values())
    try:
        deadline = time.monotonic() + 120
        while not all((signals / f"labelled-{who}").exists() for who in names):
            assert time.monotonic() < deadline, "labeller processes did not label"
            assert all(p.poll() is None for p in procs), "a labeller process died"
            time.sleep(0.01)
        (signals / "trigger").touch()
        answers = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr[-2000:]
            answers.append(json.loads(stdout.strip().splitlines()[-1]))
        return answers
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def test_twenty_labellers_crossing_the_threshold_start_one_round(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    queue_cases(engine, N_LABELLERS)
    answers = run_labellers(db_url, tmp_path, every=4)  # most of the 20 see the threshold crossed
    started = [a for a in answers if a is not None]
    jobs = round_jobs(engine)
    assert len(jobs) == 1, [(j.id, j.status) for j in jobs]
    assert started == [jobs[0].id]
    assert jobs[0].requester == str(AUTO_REQUESTER) and jobs[0].status == "queued"


# A real worker on both brokers ---------------------------------------------------------------------


def test_a_triggered_round_is_picked_up_by_the_worker(stack: Stack) -> None:
    from workbench.config import get_settings
    from workbench_workers.app import get_app, send_job

    get_settings.cache_clear()
    get_app.cache_clear()  # this test's broker
    settings = Settings(retrain_after_labels=2)
    queue_cases(stack.engine, 3)
    job_id = None
    for _ in range(3):  # the Label page: label, then the trigger
        label(stack.engine, 1)
        job_id = job_id or trigger_round_if_due(stack.engine, settings, send_job)
    assert job_id is not None and len(round_jobs(stack.engine)) == 1
    # Fake image paths: the round cannot learn here; what matters is that a worker ran the job.
    job = wait_job(stack, job_id, timeout=120)
    assert job.attempts >= 1 and job.worker and job.worker.startswith(stack.worker.name)
    assert job.requester == "operator:auto"
    assert trigger_round_if_due(stack.engine, settings, send_job) is None  # no new labels since


# Visible in the UI ---------------------------------------------------------------------------------


def test_label_page_counts_down_and_says_a_round_started(
    seeded: Seeded,  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workbench.config import get_settings

    monkeypatch.setenv("WORKBENCH_RETRAIN_AFTER_LABELS", "2")
    get_settings.cache_clear()
    at = app_as("alice")
    assert "2 more new expert label(s)" in texts(at.caption)
    at.button(key="btn_positive").click().run()
    assert "1 more new expert label(s)" in texts(at.caption)
    at.button(key="btn_negative").click().run()
    (job,) = round_jobs(seeded.engine)
    assert job.requester == "operator:auto" and job.status == "queued"
    assert f"Round job #{job.id} started automatically" in texts(at.success)
    assert f"round job #{job.id} (started automatically) is queued" in texts(at.caption)
    at.button(key="btn_positive").click().run()  # more labels while it is queued: no second round
    assert len(round_jobs(seeded.engine)) == 1

    at.switch_page("app_pages/jobs.py").run()
    assert not at.exception
    requesters = at.dataframe[0].value["requester"].tolist()
    assert any(r.startswith("automatic") for r in requesters), requesters


def test_cli_label_loop_starts_the_round(tmp_path: Path) -> None:
    from workbench.users import add_user

    db = tmp_path / "home" / "workbench.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "WORKBENCH_DATABASE_URL": f"sqlite:///{db}",
        "WORKBENCH_RETRAIN_AFTER_LABELS": "2",
        "WORKBENCH_HOME": str(tmp_path / "home"),
    }
    eng = create_db_engine(env["WORKBENCH_DATABASE_URL"])
    upgrade(eng)
    add_user(eng, "alice", "alice-password", "labeller")
    queue_cases(eng, 2)
    exe = Path(sys.executable).parent / "workbench"
    res = subprocess.run(
        [str(exe), "label", "--as", "alice"],
        input="p\nn\n",
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    (job,) = round_jobs(eng)
    assert f"round job {job.id} started automatically after 2 new expert labels" in res.stdout
    assert job.requester == "operator:auto" and job.status == "queued"
    eng.dispose()
