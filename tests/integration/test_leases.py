"""The leased labelling queue on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from factories import insert_cases
from workbench.active import labelling_queue
from workbench.active.labelling_queue import (
    claim_next,
    enqueue,
    ensure_queueable,
    skip,
    submit_label,
    undo_last,
)
from workbench.active.strategies import Selected
from workbench.data.labels import current_labels
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Case, Label, QueueItem, utcnow
from workbench.errors import ConflictError, ValidationError

make_cases = insert_cases


def queue(
    engine: Engine, case_ids: list[int], kind: str = "label", strategy: str = "near_threshold"
) -> list[int]:
    sel = [Selected(cid, strategy, 0.5, f"test item {cid}") for cid in case_ids]
    return enqueue(engine, sel, kind=kind)


def expire(engine: Engine, item_id: int) -> None:
    with session_scope(engine) as s:
        s.execute(
            update(QueueItem)
            .where(QueueItem.id == item_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )


def label_rows(engine: Engine) -> list[Label]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Label).order_by(Label.id)))


def test_concurrent_claims_never_double_lease(engine: Engine, db_url: str) -> None:
    n_items, n_threads = 500, 20
    item_ids = queue(engine, make_cases(engine, n_items))
    assert len(item_ids) == n_items
    claims: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def worker(name: str) -> None:
        eng = create_db_engine(db_url)  # each labeller: its own engine, connection and sessions
        try:
            start.wait()
            while True:
                item = claim_next(eng, name)
                if item is None:
                    return
                with lock:
                    claims.append((item.item_id, name))
                submit_label(eng, item.item_id, name, item.case_id % 2)
        except BaseException as exc:  # recorded and asserted below
            errors.append(exc)
        finally:
            eng.dispose()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(f"expert{i:02d}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - t0
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)
    claimed = [i for i, _ in claims]
    assert len(claimed) == n_items and set(claimed) == set(item_ids)  # every item once, none twice
    assert len({who for _, who in claims}) > 1  # the work really was shared
    rows = label_rows(engine)
    assert len(rows) == n_items
    by_item = {r.queue_item_id: r for r in rows}
    assert len(by_item) == n_items
    assert all(by_item[i].labeller == who and by_item[i].source == "expert" for i, who in claims)
    progress = labelling_queue.queue_progress(engine)
    assert progress["done"] == n_items and progress["queued"] == 0 and progress["leased"] == 0
    assert elapsed < 60, f"500 claims by 20 labellers took {elapsed:.1f}s"


def test_reload_returns_the_same_item_and_priority_orders_claims(engine: Engine) -> None:
    cases = make_cases(engine, 3)
    ids = queue(engine, cases)  # first in the batch = highest priority
    first = claim_next(engine, "alice", lease_seconds=60)
    assert first is not None and first.item_id == ids[0] and first.case_id == cases[0]
    assert first.pre_path.endswith("pre.jpg") and first.strategy == "near_threshold"
    assert first.reason == f"test item {cases[0]}" and first.lease_holder == "alice"
    again = claim_next(engine, "alice", lease_seconds=600)
    assert again is not None and again.item_id == first.item_id
    assert again.lease_expires_at > first.lease_expires_at  # renewed
    other = claim_next(engine, "bob")
    assert other is not None and other.item_id == ids[1]


def test_expired_lease_returns_to_the_queue(engine: Engine) -> None:
    (item_id,) = queue(engine, make_cases(engine, 1))
    assert claim_next(engine, "alice", lease_seconds=0.2).item_id == item_id  # type: ignore[union-attr]
    assert claim_next(engine, "bob") is None  # still alice's
    time.sleep(0.3)
    stolen = claim_next(engine, "bob")
    assert stolen is not None and stolen.item_id == item_id and stolen.lease_holder == "bob"

    (item2,) = queue(engine, make_cases(engine, 1))
    claim_next(engine, "carol")
    expire(engine, item2)
    assert labelling_queue.queue_progress(engine)["expired"] == 1
    assert labelling_queue.release_expired(engine) == 1
    with session_scope(engine) as s:
        assert s.get(QueueItem, item2).status == "queued"  # type: ignore[union-attr]
    assert labelling_queue.release_expired(engine) == 0


def test_stale_lease_submit_is_refused_with_a_clear_message(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    (item_id,) = queue(engine, [case_id])
    with session_scope(engine) as s:
        ext = s.get(Case, case_id).external_id  # type: ignore[union-attr]
    claim_next(engine, "alice")
    with pytest.raises(ConflictError, match=f"case {ext} is leased to alice"):
        submit_label(engine, item_id, "bob", 1)
    expire(engine, item_id)
    with pytest.raises(
        ConflictError, match=rf"your lease on case {ext} expired at .* UTC; it was returned to the queue"
    ):
        submit_label(engine, item_id, "alice", 1)
    labelling_queue.release_expired(engine)
    with pytest.raises(ConflictError, match="expired"):
        submit_label(engine, item_id, "alice", 1)
    assert claim_next(engine, "bob").item_id == item_id  # type: ignore[union-attr]
    with pytest.raises(ConflictError, match=f"case {ext} is leased to bob"):
        submit_label(engine, item_id, "alice", 1)
    assert label_rows(engine) == []
    assert submit_label(engine, item_id, "bob", 0).value == 0


def test_double_submit_records_one_label(engine: Engine) -> None:
    (item_id,) = queue(engine, make_cases(engine, 1))
    claim_next(engine, "alice")
    first = submit_label(engine, item_id, "alice", 1, note="clear lesion")
    second = submit_label(engine, item_id, "alice", 1)
    assert not first.duplicate and second.duplicate
    assert second.label_id == first.label_id
    rows = label_rows(engine)
    assert len(rows) == 1 and rows[0].note == "clear lesion" and rows[0].queue_item_id == item_id
    with pytest.raises(ConflictError, match="use undo"):
        submit_label(engine, item_id, "alice", 0)
    with pytest.raises(ConflictError, match="already labelled by alice"):
        submit_label(engine, item_id, "bob", 1)
    with pytest.raises(ValidationError, match="label value"):
        submit_label(engine, item_id, "alice", 2)  # type: ignore[arg-type]
    assert len(label_rows(engine)) == 1


def test_unsure_goes_to_someone_else(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    (item_id,) = queue(engine, [case_id])
    claim_next(engine, "alice")
    res = submit_label(engine, item_id, "alice", None)
    assert res.value is None and res.requeued_item_id is not None
    rows = label_rows(engine)
    assert len(rows) == 1 and rows[0].value is None and rows[0].labeller == "alice"
    assert claim_next(engine, "alice") is None  # not back to the same person
    bob = claim_next(engine, "bob")
    assert bob is not None and bob.item_id == res.requeued_item_id and bob.case_id == case_id
    assert "Unsure" in (bob.reason or "")
    # bob is unsure too: alice (who already answered) and bob are both kept away from it
    res2 = submit_label(engine, bob.item_id, "bob", None)
    assert claim_next(engine, "alice") is None and claim_next(engine, "bob") is None
    carol = claim_next(engine, "carol")
    assert carol is not None and carol.item_id == res2.requeued_item_id
    submit_label(engine, carol.item_id, "carol", 1)
    progress = labelling_queue.queue_progress(engine)
    assert progress == {
        "total": 3,
        "done": 3,
        "queued": 0,
        "leased": 0,
        "expired": 0,
        "cancelled": 0,
        "positives_found": 1,
        "unsure": 2,
    }


def test_skip_goes_to_someone_else(engine: Engine) -> None:
    (item_id,) = queue(engine, make_cases(engine, 1))
    claim_next(engine, "alice")
    with pytest.raises(ConflictError, match="not leased to you"):
        skip(engine, item_id, "bob")
    skip(engine, item_id, "alice")
    skip(engine, item_id, "alice")  # idempotent
    assert label_rows(engine) == []
    assert claim_next(engine, "alice") is None
    with pytest.raises(ConflictError, match="not leased to you"):
        submit_label(engine, item_id, "alice", 1)
    bob = claim_next(engine, "bob")
    assert bob is not None and bob.item_id == item_id


def test_second_read_goes_to_a_different_expert(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    (item_id,) = queue(engine, [case_id])
    claim_next(engine, "alice")
    submit_label(engine, item_id, "alice", 0)
    with pytest.raises(ValidationError, match="second_read"):
        queue(engine, [case_id])  # already labelled: only as a second opinion
    (second,) = queue(engine, [case_id], kind="second_read", strategy="second_opinion")
    assert claim_next(engine, "alice") is None
    assert claim_next(engine, "bob", kinds=["label"]) is None
    bob = claim_next(engine, "bob")
    assert bob is not None and bob.item_id == second and bob.kind == "second_read"


def test_undo_withdraws_and_reopens_for_the_same_labeller(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    (item_id,) = queue(engine, [case_id])
    assert undo_last(engine, "alice") is None
    claim_next(engine, "alice")
    submit_label(engine, item_id, "alice", 1)
    correction = undo_last(engine, "alice")
    assert correction is not None and correction.source == "correction" and correction.value is None
    assert f"#{label_rows(engine)[0].id}" in (correction.note or "")
    with session_scope(engine) as s:
        assert current_labels(s, [case_id]) == {case_id: None}
    assert claim_next(engine, "bob") is None  # re-opened for alice only
    again = claim_next(engine, "alice")
    assert again is not None and again.case_id == case_id and again.item_id != item_id
    submit_label(engine, again.item_id, "alice", 0)
    with session_scope(engine) as s:
        assert current_labels(s, [case_id]) == {case_id: 0}
    assert undo_last(engine, "alice") is not None
    assert undo_last(engine, "alice") is None  # both labels withdrawn; history kept
    assert [(r.source, r.value) for r in label_rows(engine)] == [
        ("expert", 1),
        ("correction", None),
        ("expert", 0),
        ("correction", None),
    ]


def test_ensure_queueable_guards_val_and_test(engine: Engine) -> None:
    for split in ("val", "test"):
        with pytest.raises(ValidationError, match="never queued"):
            ensure_queueable(split, "label", "C1")
    ensure_queueable("pool")
    ensure_queueable("train", "label")
    ensure_queueable("val", "second_read")
    with pytest.raises(ValidationError, match="unknown split"):
        ensure_queueable("holdout")
    with pytest.raises(ValidationError, match="unknown queue kind"):
        ensure_queueable("pool", "review")
    val_case = make_cases(engine, 1, split="val")
    with pytest.raises(ValidationError, match="'val' split"):
        queue(engine, val_case)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(QueueItem)) == 0


def test_enqueue_skips_open_items_and_refuses_duplicates(engine: Engine) -> None:
    cases = make_cases(engine, 3)
    assert len(queue(engine, cases[:2])) == 2
    assert len(queue(engine, cases)) == 1  # only the case without an open item
    with pytest.raises(ValidationError, match="twice"):
        queue(engine, [cases[0], cases[0]])
