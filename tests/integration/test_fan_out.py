"""The job rows behind a round spread over workers: fan-out, hand-back (one winner), cancel, shards
written once, shard plans. On SQLite and PostgreSQL, with concurrent callers where it matters."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from factories import insert_cases, make_version
from workbench.db.engine import session_scope
from workbench.db.models import Job, Prediction, Round
from workbench.errors import ConflictError, WorkbenchError
from workbench.jobs import dispatch, store
from workbench.jobs.context import JobContext
from workbench.jobs.params import InferParams, RoundParams
from workbench.model.predictions import write_predictions
from workbench.model.scoring import plan_shards


def _running_round(engine: Engine, kind: str = "round") -> int:
    job_id = store.create_job(engine, kind, {}, requester="operator:test", queue="gpu")
    assert store.claim_job(engine, job_id, "w1", 3) is not None
    return job_id


def _shards(engine: Engine, parent: int, n: int) -> list[int]:
    children = [("infer", {"model_version": 1, "case_range": [i, i]}, "gpu") for i in range(n)]
    return store.fan_out(engine, parent, children, {"round_id": 7, "span": [0.6, 0.85], "then_queue": "cpu"})


def _finish(engine: Engine, job_id: int, status: str = "succeeded") -> None:
    assert store.claim_job(engine, job_id, "w2", 3) is not None
    assert store.finish_job(engine, job_id, status)


def test_the_round_is_handed_back_once_every_shard_ended(engine: Engine) -> None:
    parent = _running_round(engine)
    shards = _shards(engine, parent, 3)
    job = store.get_job(engine, parent)
    assert job.status == "waiting" and store.fan_out_state(engine, parent)["children"] == shards
    assert store.active_job_of_kind(engine, "round", stale_after=timedelta(seconds=0)) == parent
    _finish(engine, shards[0])
    _finish(engine, shards[1], "failed")
    assert store.hand_back(engine, [parent]) == []  # one shard still open
    _finish(engine, shards[2])
    assert store.hand_back(engine, [parent]) == [parent]
    job = store.get_job(engine, parent)
    # back on the queue its fan-out named; the hand-back is not a new attempt
    assert (job.status, job.queue, job.attempts) == ("queued", "cpu", 0)
    assert store.hand_back(engine) == []  # nothing waits any more
    assert store.claim_job(engine, parent, "cpu-worker", 3).attempts == 1


def test_concurrent_hand_backs_have_one_winner(engine: Engine) -> None:
    """Ten workers ending the last shard at once (and sweeps): the round is sent on exactly once."""
    # five waiting parents: one round (rounds never overlap, migration 0009), four of another kind
    parents = [_running_round(engine, "round" if i == 0 else "sleep") for i in range(5)]
    for parent in parents:
        for shard in _shards(engine, parent, 2):
            _finish(engine, shard)
    won: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def caller(i: int) -> None:
        barrier.wait()
        got = store.hand_back(engine, None if i % 2 else parents)
        with lock:
            won.extend(got)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == parents


def test_cancelling_a_waiting_round_cancels_its_queued_shards_and_its_round(engine: Engine) -> None:
    parent = _running_round(engine)
    with session_scope(engine) as s:
        s.add(Round(number=1, status="running", job_id=parent, batch_size=5))
    shards = _shards(engine, parent, 3)
    assert store.claim_job(engine, shards[0], "w2", 3) is not None  # one shard is running
    store.request_cancel(engine, parent)
    assert [store.get_job(engine, i).status for i in shards] == ["running", "cancelled", "cancelled"]
    assert store.get_job(engine, parent).status == "waiting"  # the running shard stops at its next chunk
    assert store.cancel_requested(engine, shards[0])
    assert store.finish_job(engine, shards[0], "cancelled")
    assert store.hand_back(engine) == []
    with session_scope(engine) as s:
        rnd = s.scalar(select(Round).where(Round.job_id == parent))
    assert store.get_job(engine, parent).status == "cancelled" and rnd.status == "failed"

    # nothing running: the cancel ends the waiting round at once
    other = _running_round(engine)
    _shards(engine, other, 2)
    assert store.request_cancel(engine, other).status == "cancelled"


def test_fan_out_refuses_a_job_that_is_not_running(engine: Engine) -> None:
    parent = _running_round(engine)
    assert store.finish_job(engine, parent, "failed", error="gone")
    with pytest.raises(ConflictError, match="not running"):
        _shards(engine, parent, 2)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.parent_id == parent)) == 0


def test_a_lost_shard_is_requeued_not_failed(engine: Engine) -> None:
    """A shard runs as its own task: when its worker goes, it is re-queued like a top-level job; an
    in-process step of a chained job (no task of its own) is not."""
    parent = _running_round(engine)
    shard = _shards(engine, parent, 1)[0]
    store.set_task_id(engine, shard, "job-shard-task")
    assert store.claim_job(engine, shard, "gone-worker", 3) is not None
    assert store.requeue_lost(engine, job_ids=[shard], worker="gone-worker") == [shard]
    assert store.get_job(engine, shard).status == "queued"


def test_fan_out_without_a_sender_runs_in_process_and_a_refused_send_fails_clearly(engine: Engine) -> None:
    from workbench.config import Settings

    parent = _running_round(engine)
    ctx = JobContext(engine, Settings(), parent, "round", RoundParams(), "operator:test")
    steps = [("infer", InferParams(model_version=1, case_range=(1, 2)))]
    dispatch.register_group_sender(None)
    assert dispatch.fan_out(ctx, steps, span=(0.6, 0.85), then_queue="cpu", state={}) is None

    def refuse(_jobs: list[tuple[int, str, str]]) -> list[str]:
        raise ConnectionError("broker down")

    dispatch.register_group_sender(refuse)
    try:
        with pytest.raises(WorkbenchError, match="broker refused the 1 child job"):
            dispatch.fan_out(ctx, steps, span=(0.6, 0.85), then_queue="cpu", state={})
    finally:
        dispatch.register_group_sender(None)
    job = store.get_job(engine, parent)
    assert job.status == "running" and store.fan_out_state(engine, parent) is None
    with session_scope(engine) as s:
        assert s.scalars(select(Job.status).where(Job.parent_id == parent)).all() == ["failed"]


def test_predictions_are_written_once_per_version_and_case(engine: Engine) -> None:
    version = make_version(engine)
    cases = insert_cases(engine, 6)
    z = np.linspace(-2, 2, 6)
    write_predictions(engine, version, cases[:4], z[:4], 1 / (1 + np.exp(-z[:4])), None)
    # a resumed shard, or a second delivery, writes an overlapping chunk: the first rows stay
    write_predictions(engine, version, cases, z + 10, 1 / (1 + np.exp(-z - 10)), None)
    with session_scope(engine) as s:
        rows = dict(s.execute(select(Prediction.case_id, Prediction.logit)).all())
    assert len(rows) == 6 and [rows[c] for c in cases] == pytest.approx([*z[:4], *(z[4:] + 10)])


def test_shard_plans_cover_the_unscored_cases_once(engine: Engine) -> None:
    version = make_version(engine)
    cases = insert_cases(engine, 23) + insert_cases(engine, 5, split="train")
    assert plan_shards(engine, version, ["pool"], 10) == [
        (cases[0], cases[9]),
        (cases[10], cases[19]),
        (cases[20], cases[22]),
    ]
    write_predictions(engine, version, cases[:12], np.zeros(12), np.full(12, 0.5), None)
    assert plan_shards(engine, version, ["pool"], 10) == [(cases[12], cases[21]), (cases[22], cases[22])]
