"""Labellers as separate processes claiming from one real queue (SQLite and PostgreSQL) at once.

Each process is one labeller with its own Engine (as 20 people on the labelling page would be): no
item may be leased to two of them, and every item ends with exactly one label, by the one who held it.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from sqlalchemy import Engine, func, select

from factories import insert_cases
from workbench.active.labelling_queue import claim_next, enqueue, queue_progress, submit_label
from workbench.active.strategies import Selected
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Label, QueueItem

N_LABELLERS = 6
N_ITEMS = 90


def labeller(url: str, name: str, start: Any, results: Any) -> None:
    """One labeller process: claim, reload (must get the same item), submit, until the queue is empty.
    Puts ``(name, [item ids], None)`` on ``results``, or ``(name, [...], error)`` if anything failed."""
    claimed: list[int] = []
    try:
        engine = create_db_engine(url)
        start.wait(timeout=120)
        while (item := claim_next(engine, name)) is not None:
            claimed.append(item.item_id)
            again = claim_next(engine, name)
            if again is None or again.item_id != item.item_id:
                raise AssertionError(f"reload gave {again} instead of item {item.item_id}")
            submit_label(engine, item.item_id, name, item.case_id % 2)
        engine.dispose()
        results.put((name, claimed, None))
    except BaseException as exc:  # reported to the test
        results.put((name, claimed, f"{type(exc).__name__}: {exc}"))


def run_labellers(url: str, n: int) -> dict[str, list[int]]:
    """Start ``n`` labeller processes together; the items each one claimed."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(n)
    results = ctx.Queue()
    names = [f"expert{k:02d}" for k in range(n)]
    procs = [ctx.Process(target=labeller, args=(url, who, start, results)) for who in names]
    for p in procs:
        p.start()
    out: dict[str, list[int]] = {}
    errors: list[str] = []
    try:
        for _ in procs:
            name, claimed, error = results.get(timeout=300)
            out[name] = claimed
            if error:
                errors.append(f"{name}: {error}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    assert not errors, errors
    return out


def test_labeller_processes_never_share_an_item(engine: Engine, db_url: str) -> None:
    item_ids = enqueue(
        engine,
        [Selected(cid, "near_threshold", 0.5, "test") for cid in insert_cases(engine, N_ITEMS)],
    )
    claims = run_labellers(db_url, N_LABELLERS)

    claimed = [i for items in claims.values() for i in items]
    assert sorted(claimed) == sorted(item_ids)  # every item leased once, none to two labellers
    assert sum(1 for items in claims.values() if items) > 1  # the processes really competed
    holder = {i: who for who, items in claims.items() for i in items}
    with session_scope(engine) as s:
        labels = s.execute(select(Label.queue_item_id, Label.labeller, Label.source)).all()
        per_item = dict(
            s.execute(select(Label.queue_item_id, func.count()).group_by(Label.queue_item_id)).all()
        )
        statuses = set(s.scalars(select(QueueItem.status).where(QueueItem.id.in_(item_ids))))
    assert len(labels) == N_ITEMS and set(per_item.values()) == {1}  # every label stored once
    assert all(holder[item] == who and source == "expert" for item, who, source in labels)
    assert statuses == {"done"}
    progress = queue_progress(engine)
    assert progress["done"] == N_ITEMS and progress["leased"] == 0 and progress["queued"] == 0
