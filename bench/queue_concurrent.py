"""Concurrent labellers for ``bench_queue.py --concurrency N``: N processes, each one person.

Each labeller is a separate process (multiprocessing ``spawn``) with its own user name and its own
Engine. It loops: ``claim_next`` (timed, wall clock in the process) -> looks at the case for a think
time drawn uniformly from ``think_ms`` -> ``submit_label`` -> again, until its phase's time is up; the
item in hand when time runs out is still submitted, so no lease is left behind. The processes start
each phase together (a barrier), after their imports and first connection, so start-up is not measured.

Duplicates are checked afterwards from the database and the processes' own records
(:func:`duplicate_report`): an item claimed by two labellers, a queue item with two labels, a label
whose author is not the labeller who claimed the item, an item not closed, a lease left open.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common import summarize
from sqlalchemy import Engine, bindparam, text

from workbench.active.labelling_queue import claim_next, submit_label
from workbench.db.engine import create_db_engine


@dataclass(frozen=True)
class Phase:
    """One measured phase: how long the labellers work and how long each looks at a case (ms)."""

    name: str
    duration_s: float
    think_ms: tuple[float, float]
    max_claims: int | None = None  # per labeller; None = until the time is up


@dataclass(frozen=True)
class Claim:
    """One claim as a labeller process saw it (latencies in seconds)."""

    phase: str
    labeller: str
    item_id: int
    started: float  # time.time() when the claim began
    claim_s: float
    submit_s: float


def parse_think_ms(value: str) -> tuple[float, float]:
    """``"LO,HI"`` in milliseconds (0 <= LO <= HI), as given to ``--think-ms``."""
    parts = value.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--think-ms wants LO,HI in milliseconds (e.g. 300,1000), got {value!r}") from None
    if not 0 <= lo <= hi:
        raise ValueError(f"--think-ms wants 0 <= LO <= HI, got {value!r}")
    return lo, hi


def _work(engine: Engine, name: str, phase: Phase, rng: random.Random) -> list[Claim]:
    """One labeller's phase: claim, think, submit, until the time (or max_claims) is up."""
    out: list[Claim] = []
    deadline = time.monotonic() + phase.duration_s
    while time.monotonic() < deadline and (phase.max_claims is None or len(out) < phase.max_claims):
        started, t0 = time.time(), time.perf_counter()
        item = claim_next(engine, name)
        t1 = time.perf_counter()
        if item is None:
            raise RuntimeError(f"{name}: the queue ran dry")
        time.sleep(rng.uniform(*phase.think_ms) / 1000)
        t2 = time.perf_counter()
        submit_label(engine, item.item_id, name, 1 if rng.random() < 0.1 else 0)
        out.append(Claim(phase.name, name, item.item_id, started, t1 - t0, time.perf_counter() - t2))
    return out


def _labeller(url: str, name: str, phases: Sequence[Phase], barrier: Any, results: Any) -> None:
    """A labeller process: connect and warm up (one claim + submit, recorded but not timed), then each
    phase after the barrier; its claims go to ``results``, or ``("error", name, message)``."""
    try:
        engine = create_db_engine(url)
        rng = random.Random(name)
        warm = _work(engine, name, Phase("warm-up", 0.0, (0, 0), max_claims=1), rng)
        results.put(("claims", name, warm))
        for phase in phases:
            barrier.wait()
            results.put(("claims", name, _work(engine, name, phase, rng)))
        engine.dispose()
    except BaseException as exc:  # reported by the parent; the barrier is broken so nobody waits forever
        barrier.abort()
        results.put(("error", name, f"{type(exc).__name__}: {exc}"))


def run_labellers(url: str, n: int, phases: Sequence[Phase], prefix: str) -> list[Claim]:
    """Run ``n`` labeller processes through ``phases`` on the database at ``url``; every claim made.

    Raises RuntimeError naming the labeller when one of them fails.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    results = ctx.Queue()
    names = [f"{prefix}_{k:02d}" for k in range(n)]
    procs = [ctx.Process(target=_labeller, args=(url, who, phases, barrier, results)) for who in names]
    for p in procs:
        p.start()
    errors: list[str] = []
    claims: list[Claim] = []
    expected = n * (len(phases) + 1)
    received = 0

    def drain() -> None:  # the processes block on a full pipe unless someone reads it
        nonlocal received
        while received < expected and not errors:
            kind, who, payload = results.get()
            received += 1
            if kind == "error":
                errors.append(f"{who}: {payload}")
            else:
                claims.extend(payload)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for phase in phases:
            barrier.wait(timeout=300 + phase.duration_s)
    except threading.BrokenBarrierError:
        pass  # a labeller failed; its message is in ``errors``
    reader.join(timeout=600)
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.terminate()
    if errors:
        raise RuntimeError("labeller failed: " + "; ".join(errors[:3]))
    if reader.is_alive():
        raise RuntimeError("labellers did not report back in time")
    return claims


def duplicate_report(engine: Engine, claims: Sequence[Claim]) -> dict[str, int]:
    """Counts that must all be 0 after a run (from the processes' records and the database)."""
    holders: dict[int, set[str]] = {}
    for c in claims:
        holders.setdefault(c.item_id, set()).add(c.labeller)
    with engine.connect() as conn:
        twice = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT queue_item_id FROM labels WHERE queue_item_id IS NOT NULL "
                "GROUP BY queue_item_id HAVING count(*) > 1) t"
            )
        ).scalar_one()
        leased = conn.execute(text("SELECT count(*) FROM queue_items WHERE status = 'leased'")).scalar_one()
        rows = _labels_of(conn, sorted(holders))
    wrong = sum(
        1
        for item_id, who in holders.items()
        if len(who) == 1 and (rows.get(item_id) != (next(iter(who)), "done"))
    )
    return {
        "items claimed by 2+ labellers": sum(1 for who in holders.values() if len(who) > 1),
        "claims of an item already claimed": len(claims) - len(holders),
        "queue items with 2+ labels": int(twice),
        "claimed items not done or labelled by another": wrong,
        "leases left open": int(leased),
    }


def _labels_of(conn: Any, item_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Per queue item: (labeller of its label, item status), read 500 items at a time."""
    sql = text(
        "SELECT q.id, l.labeller, q.status FROM queue_items q JOIN labels l ON l.queue_item_id = q.id "
        "WHERE q.id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    out: dict[int, tuple[str, str]] = {}
    for i in range(0, len(item_ids), 500):
        for item_id, labeller, status in conn.execute(sql, {"ids": item_ids[i : i + 500]}):
            out[int(item_id)] = (str(labeller), str(status))
    return out


def phase_line(phase: Phase, n: int, claims: Sequence[Claim], target_s: float) -> str:
    """One row of the table: labellers, think time, claims, claims/s, claim p50/p95/p99, submit p95."""
    mine = [c for c in claims if c.phase == phase.name]
    if not mine:
        return f"    {phase.name:<9} {n:>3} labellers: no claims"
    lat = summarize([c.claim_s for c in mine])
    sub = summarize([c.submit_s for c in mine])
    starts = [c.started for c in mine]
    span = max(starts) - min(starts)
    rate = f"{(lat.n - 1) / span:6.1f}/s" if span > 0 else "     -  "
    think = f"{phase.think_ms[0]:.0f}-{phase.think_ms[1]:.0f}"
    verdict = "meets" if lat.p95 <= target_s else "MISSES"
    return (
        f"    {phase.name:<9} {n:>3} labellers, think {think:>8} ms: {lat.n:5d} claims, "
        f"{rate}; claim p50 {lat.p50 * 1e3:6.2f}  p95 {lat.p95 * 1e3:6.2f}  "
        f"p99 {lat.p99 * 1e3:6.2f} ms (target p95 <= {target_s * 1e3:.0f} ms: {verdict}); "
        f"submit p95 {sub.p95 * 1e3:6.2f} ms"
    )
