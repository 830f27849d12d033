"""The job system with a real worker process, on the embedded SQLite broker and on the real Redis server."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select
from test_job_endings import executions, fast_heartbeat, send_sleep  # noqa: F401 (a fixture)
from test_job_endings import wait_job as _wait

from conftest import Stack, run_cli
from workbench.db.engine import session_scope
from workbench.db.models import Job
from workbench.jobs import store


def _job_id(stdout: str) -> int:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("submitted"))
    return int(line.split()[-1])


def test_job_runs_with_progress_and_result(stack: Stack) -> None:
    res = run_cli("submit", "sleep", "--seconds", "2", "--steps", "4", "--wait")
    assert res.returncode == 0, res.stderr + stack.worker.log()[-2000:]
    job = store.get_job(stack.engine, _job_id(res.stdout))
    assert job.status == "succeeded" and job.progress == 1.0
    assert job.result == {"slept": 2.0}
    assert job.message == "step 4/4" and job.attempts == 1
    node, pid, start = job.worker.split("/")  # unique per worker start: name/pid/start id
    assert node == stack.worker.name and int(pid) == stack.worker.proc.pid and len(start) == 12
    listing = run_cli("jobs", "list")
    assert f"{job.id:>5} sleep" in listing.stdout


def test_failed_job_keeps_its_error(stack: Stack) -> None:
    res = run_cli("submit", "sleep", "--seconds", "0.2", "--steps", "2", "--fail", "--wait")
    assert res.returncode == 1 and "asked to fail" in res.stderr
    job = store.get_job(stack.engine, _job_id(res.stdout))
    assert job.status == "failed" and job.error == "asked to fail"


def test_cancel_a_running_job(stack: Stack) -> None:
    res = run_cli("submit", "sleep", "--seconds", "60", "--steps", "120")
    job_id = _job_id(res.stdout)
    _wait(stack, job_id, until=lambda j: j.status == "running" and j.progress > 0)
    assert run_cli("jobs", "cancel", str(job_id)).returncode == 0
    job = _wait(stack, job_id, timeout=30)
    assert job.status == "cancelled"
    assert job.progress < 0.5


@pytest.mark.usefixtures("fast_heartbeat")  # before the stack: its worker beats every second
def test_worker_killed_mid_job_is_redelivered_and_completes_once(stack: Stack) -> None:
    job_id = send_sleep(stack, seconds=6, steps=12, trace="killed")
    _wait(stack, job_id, until=lambda j: j.status == "running" and j.progress > 0.1)
    stack.worker.kill()  # SIGKILL parent and children: nothing gets to clean up
    assert store.get_job(stack.engine, job_id).status == "running"
    stack.worker.start()  # the node restarts; the job's heartbeat goes stale and a sweep re-sends it
    job = _wait(stack, job_id, timeout=120)
    assert job.status == "succeeded"
    assert job.attempts == 2
    assert len(executions("killed")) == 2  # the killed run and the finished one: never a third


def test_job_that_always_kills_its_process_fails_after_capped_attempts(stack: Stack) -> None:
    job_id = send_sleep(stack, seconds=0.4, steps=4, crash=True, trace="crash")
    job = _wait(stack, job_id, timeout=180)
    assert job.status == "failed"
    assert "gave up after 3 attempt(s)" in job.error
    assert job.attempts == 4  # the fourth delivery is refused by the cap instead of run
    assert len(executions("crash")) == 3


def test_pickle_message_is_refused(stack: Stack) -> None:
    from workbench.config import load_settings
    from workbench_workers.app import TASK_NAME, make_app

    job_id = store.create_job(
        stack.engine, "sleep", {"seconds": 0.1, "steps": 1}, requester="test", queue="cpu"
    )
    app = make_app(load_settings())
    app.send_task(TASK_NAME, args=[job_id], queue="cpu", serializer="pickle")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "ContentDisallowed" not in stack.worker.log():
        time.sleep(0.3)
    assert "Refusing to deserialize untrusted content of type pickle" in stack.worker.log()
    assert store.get_job(stack.engine, job_id).status == "queued"  # never ran


def test_submit_with_broker_down_leaves_no_queued_row(
    engine, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", db_url)
    monkeypatch.setenv("WORKBENCH_BROKER_URL", "redis://127.0.0.1:6399/0")  # nothing listens there
    res = run_cli("submit", "sleep", timeout=120)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(
        "error: cannot submit the sleep job: broker unreachable"
    )
    with session_scope(engine) as s:
        statuses = s.scalars(select(Job.status)).all()
    assert statuses == ["failed"]
