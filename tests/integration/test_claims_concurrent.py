"""Labellers as separate processes claiming from one real queue (SQLite and PostgreSQL) at once.

Each process is one labeller with its own Engine (as 20 people on the labelling page would be): no
item may be leased to two of them, and every item ends with exactly one label, by the one who held it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, func, select

from factories import insert_cases
from together import start_together
from workbench.active.labelling_queue import enqueue, queue_progress
from workbench.active.strategies import Selected
from workbench.db.engine import session_scope
from workbench.db.models import Label, QueueItem

N_LABELLERS = 6
N_ITEMS = 90
ROOT = Path(__file__).resolve().parents[2]


# One labeller, run as its own Python process (a plain subprocess: multiprocessing's spawn would re-run
# whatever ``__main__`` an earlier test left behind). It signals ready, waits for "go", then claims,
# reloads (must get the same item back) and submits until the queue is empty; prints its item ids.
LABELLER = """
import json, os, sys, time
from workbench.active.labelling_queue import claim_next, submit_label
from workbench.db.engine import create_db_engine

url, name, signals = sys.argv[1:4]
engine = create_db_engine(url)
open(os.path.join(signals, "ready-" + name), "w").close()
while not os.path.exists(os.path.join(signals, "go")):
    time.sleep(0.01)
claimed = []
while (item := claim_next(engine, name)) is not None:
    claimed.append(item.item_id)
    again = claim_next(engine, name)
    if again is None or again.item_id != item.item_id:
        raise AssertionError(f"reload gave {again} instead of item {item.item_id}")
    submit_label(engine, item.item_id, name, item.case_id % 2)
print(json.dumps(claimed))
"""


def run_labellers(url: str, n: int, signals: Path) -> dict[str, list[int]]:
    """Start ``n`` labeller processes, let them go together; the items each one claimed."""
    names = [f"expert{k:02d}" for k in range(n)]
    procs = start_together(LABELLER, names, lambda who: [url, who, str(signals)], signals)
    try:
        out: dict[str, list[int]] = {}
        for who, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{who} failed:\n{stderr[-2000:]}"
            out[who] = json.loads(stdout.strip().splitlines()[-1])
        return out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def test_labeller_processes_never_share_an_item(engine: Engine, db_url: str, tmp_path: Path) -> None:
    item_ids = enqueue(
        engine,
        [Selected(cid, "near_threshold", 0.5, "test") for cid in insert_cases(engine, N_ITEMS)],
    )
    claims = run_labellers(db_url, N_LABELLERS, tmp_path)

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
