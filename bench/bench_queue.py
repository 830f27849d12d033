"""Queue claim latency at scale: ``claim_next`` (and claim + ``submit_label``) with 1,000,000 queue rows.

Usage::

    python bench/bench_queue.py [--rows 1000000] [--claims 500] [--backend sqlite|postgresql|both]
        [--done-fraction 0.1] [--batch 1000] [--budget-s 600] [--no-scratch-index]

For each backend it builds a fresh database with the real schema (``create_db_engine`` +
``workbench.db.schema.upgrade``; SQLite is a WAL file in a temp folder, PostgreSQL a throw-away
database that is dropped afterwards), bulk-loads ``--rows`` cases and one ``label`` queue item per case
(executemany in one transaction on SQLite, COPY on PostgreSQL), grouped in rounds of ``--batch`` items
with priority ``batch - position`` as :func:`workbench.active.leases.enqueue` gives; the oldest
``--done-fraction`` of items are done and carry an expert label. Then it measures, through the public API:

* **claim only**: ``claim_next`` by a different labeller each time (no held lease, so every call runs
  the pick query);
* **claim + submit**: 4 labellers in turn claim, then ``submit_label``, then claim again.

It prints p50/p95/p99 against the target (claim p95 <= 20 ms at 1M rows), the query plan of the pick
statement (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE), and, on the same database, the effect of a scratch
index ``(priority DESC, id) WHERE status IN ('queued', 'leased')``: the exact pick statement timed (in a
rolled-back transaction) as the code issues it, and with the redundant ``status IN ('queued', 'leased')``
term SQLite needs to use a partial index. The scratch index exists only in the benchmark database.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Budget,
    noise_note,
    pg_server_version,
    print_machine,
    psycopg_conninfo,
    stopwatch,
    summarize,
    throwaway_pg_database,
)
from sqlalchemy import Engine, event, text  # noqa: E402

from workbench.active.leases import claim_next, submit_label  # noqa: E402
from workbench.db.engine import create_db_engine, is_sqlite  # noqa: E402
from workbench.db.schema import upgrade  # noqa: E402

TARGET_P95_S = 0.020
CHUNK = 50_000
CREATED = datetime(2024, 1, 1, tzinfo=UTC)
SQLITE_TS = "2024-01-01 00:00:00.000000"
SCRATCH_INDEX = "ix_bench_open_claim"
SCRATCH_DDL = (
    f"CREATE INDEX {SCRATCH_INDEX} ON queue_items (priority DESC, id) WHERE status IN ('queued', 'leased')"
)
STATUS_TERM = "cand.status IN ('queued', 'leased') AND "

CASE_COLS = (
    "id, external_id, patient_id, pre_path, post_path, pre_sha256, post_sha256, pair_sha256, "
    "pre_width, pre_height, post_width, post_height, split, created_at"
)
ROUND_COLS = "id, number, status, batch_size, created_at"
ITEM_COLS = "id, round_id, case_id, kind, strategy, reason, score, priority, status, created_at, done_at"
LABEL_COLS = "id, case_id, value, labeller, source, round_id, queue_item_id, created_at"


# -- data ------------------------------------------------------------------------------------------------
def case_rows(n: int, ts: Any) -> Iterator[tuple[Any, ...]]:
    """Cases 1..n: unique external ids and pair hashes (64 hex digits, in id order)."""
    for i in range(1, n + 1):
        h = f"{i:064x}"
        yield (
            i,
            f"case-{i:07d}",
            f"pt-{i:07d}",
            f"cases/{i:07d}/pre.jpg",
            f"cases/{i:07d}/post.jpg",
            h,
            h[::-1],
            h,
            640,
            480,
            640,
            480,
            "pool",
            ts,
        )


def round_rows(n_rounds: int, batch: int, ts: Any) -> Iterator[tuple[Any, ...]]:
    for r in range(1, n_rounds + 1):
        yield (r, r, "closed" if r < n_rounds else "open", batch, ts)


def item_rows(n: int, batch: int, n_done: int, ts: Any) -> Iterator[tuple[Any, ...]]:
    """One label item per case; rounds of ``batch`` items, priority = batch - position (as enqueue)."""
    for i in range(1, n + 1):
        pos = (i - 1) % batch
        done = i <= n_done
        yield (
            i,
            (i - 1) // batch + 1,
            i,
            "label",
            "uncertainty",
            f"p={(i * 7919 % 1000) / 1000:.3f} near the threshold",
            (i * 7919 % 1000) / 1000,
            float(batch - pos),
            "done" if done else "queued",
            ts,
            ts if done else None,
        )


def label_rows(n_done: int, batch: int, ts: Any) -> Iterator[tuple[Any, ...]]:
    """An expert label for each done item, from 20 earlier labellers; 10% positive."""
    for i in range(1, n_done + 1):
        yield (i, i, 1 if i % 10 == 0 else 0, f"seed_labeller_{i % 20}", "expert", (i - 1) // batch + 1, i, ts)


def chunks(rows: Iterator[tuple[Any, ...]], size: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def load_sqlite(path: Path, n: int, batch: int, n_done: int) -> None:
    """executemany in ONE transaction on a plain sqlite3 connection (the schema already exists)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache for the load
    conn.execute("BEGIN")
    n_rounds = (n + batch - 1) // batch
    for table, cols, rows in (
        ("cases", CASE_COLS, case_rows(n, SQLITE_TS)),
        ("rounds", ROUND_COLS, round_rows(n_rounds, batch, SQLITE_TS)),
        ("queue_items", ITEM_COLS, item_rows(n, batch, n_done, SQLITE_TS)),
        ("labels", LABEL_COLS, label_rows(n_done, batch, SQLITE_TS)),
    ):
        marks = ", ".join("?" * (cols.count(",") + 1))
        for chunk in chunks(rows):
            conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", chunk)
    conn.execute("COMMIT")
    conn.close()


def load_postgresql(url: str, n: int, batch: int, n_done: int) -> None:
    """COPY ... FROM STDIN for each table, then move the id sequences past the loaded ids and ANALYZE."""
    import psycopg

    n_rounds = (n + batch - 1) // batch
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.cursor() as cur:
            for table, cols, rows in (
                ("cases", CASE_COLS, case_rows(n, CREATED)),
                ("rounds", ROUND_COLS, round_rows(n_rounds, batch, CREATED)),
                ("queue_items", ITEM_COLS, item_rows(n, batch, n_done, CREATED)),
                ("labels", LABEL_COLS, label_rows(n_done, batch, CREATED)),
            ):
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
        conn.commit()
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum does soon after a bulk load


# -- measurement -----------------------------------------------------------------------------------------
class PickCapture:
    """Remembers the last pick statement (the conditional UPDATE of claim_next) and its parameters."""

    def __init__(self, engine: Engine) -> None:
        self.sql: str | None = None
        self.params: Any = None
        event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE QUEUE_ITEMS") and " cand" in statement:
            self.sql, self.params = statement, parameters


def timed_loop(
    fn: Callable[[int], dict[str, float]], n: int, cap_s: float
) -> tuple[dict[str, list[float]], bool]:
    """Run fn(i) up to n times or until cap_s seconds have gone; fn returns named durations."""
    out: dict[str, list[float]] = {}
    start = time.monotonic()
    for i in range(n):
        for key, value in fn(i).items():
            out.setdefault(key, []).append(value)
        if time.monotonic() - start > cap_s:
            return out, True
    return out, False


def verdict(p95: float) -> str:
    return "MEETS" if p95 <= TARGET_P95_S else "MISSES"


def report(title: str, samples: dict[str, list[float]], cut: bool, wanted: int, target_key: str | None) -> None:
    print(f"  {title}" + (f"  (stopped after {len(next(iter(samples.values())))}/{wanted}: time cap)" if cut else ""))
    for key, values in samples.items():
        s = summarize(values)
        tail = f"  -> target p95 <= 20 ms: {verdict(s.p95)}" if key == target_key else ""
        print(f"    {key:<14} {s.ms()}{tail}")


def measure_api(engine: Engine, tag: str, claims: int, cap_s: float) -> dict[str, float]:
    """Claim-only and claim+submit through the public API; returns the claim p95s."""

    def claim_only(i: int) -> dict[str, float]:
        t0 = time.perf_counter()
        item = claim_next(engine, f"{tag}_claimer_{i}")
        dt = time.perf_counter() - t0
        assert item is not None, "the queue ran dry"
        return {"claim": dt}

    labellers = [f"{tag}_labeller_{k}" for k in range(4)]

    def claim_submit(i: int) -> dict[str, float]:
        who = labellers[i % len(labellers)]
        t0 = time.perf_counter()
        item = claim_next(engine, who)
        t1 = time.perf_counter()
        assert item is not None, "the queue ran dry"
        submit_label(engine, item.item_id, who, 1 if i % 10 == 0 else 0)
        t2 = time.perf_counter()
        return {"claim": t1 - t0, "submit": t2 - t1, "claim+submit": t2 - t0}

    for i in range(3):  # warm-up: connection pool, statement caches, first page reads
        claim_only(10_000_000 + i)
    only, cut1 = timed_loop(claim_only, claims, cap_s)
    report("claim only (a new labeller each time):", only, cut1, claims, "claim")
    both, cut2 = timed_loop(claim_submit, claims, cap_s)
    report("claim + submit (4 labellers in turn):", both, cut2, claims, "claim")
    return {"claim_only_p95": summarize(only["claim"]).p95, "loop_claim_p95": summarize(both["claim"]).p95}


def explain(engine: Engine, sql: str, params: Any) -> str:
    """The plan of the pick statement; on PostgreSQL EXPLAIN ANALYZE inside a rolled-back transaction."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
            text_ = "\n".join(f"{'  ' * _depth(rows, r)}{r[-1]}" for r in rows)
        else:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).all()
            text_ = "\n".join(r[0] for r in rows)
        conn.rollback()
    return text_


def _depth(rows: list[Any], row: Any) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent in parents:
        depth, parent = depth + 1, parents[parent]
    return depth


def with_status_term(sql: str) -> str:
    """The pick statement with a leading ``status IN ('queued', 'leased')`` term in the inner WHERE."""
    new, count = re.subn(r"(FROM queue_items AS cand\s+WHERE\s+)", r"\1" + STATUS_TERM, sql, count=1)
    if count != 1:
        raise RuntimeError("could not find the inner WHERE of the pick statement")
    return new


def time_statement(engine: Engine, sql: str, params: Any, repeat: int, cap_s: float) -> list[float]:
    """Execute the pick UPDATE ``repeat`` times, each in its own transaction rolled back afterwards."""
    out: list[float] = []
    start = time.monotonic()
    for _ in range(repeat):
        with engine.connect() as conn:
            t0 = time.perf_counter()
            conn.exec_driver_sql(sql, params).all()
            out.append(time.perf_counter() - t0)
            conn.rollback()
        if time.monotonic() - start > cap_s:
            break
    return out


def run_backend(engine: Engine, args: argparse.Namespace, budget: Budget) -> None:
    name = "SQLite" if is_sqlite(engine) else "PostgreSQL"
    n_done = int(args.rows * args.done_fraction)
    print(f"  loading {args.rows:,} cases + {args.rows:,} queue items ({n_done:,} done, with labels)", flush=True)
    with stopwatch() as t_up:
        upgrade(engine)
    url = engine.url.render_as_string(hide_password=False)
    with stopwatch() as t_load:
        if is_sqlite(engine):
            load_sqlite(Path(engine.url.database), args.rows, args.batch, n_done)
        else:
            load_postgresql(url, args.rows, args.batch, n_done)
    rate = (2 * args.rows + n_done) / t_load[0]
    print(f"  schema {t_up[0]:.1f} s; bulk load {t_load[0]:.1f} s ({rate:,.0f} rows/s)", flush=True)
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT status, count(*) FROM queue_items GROUP BY status")).all())
    print(f"  queue_items by status: {counts}")

    capture = PickCapture(engine)
    cap = max(10.0, min(args.phase_cap_s, budget.left() / 8))
    print(f"\n  [A] as shipped (indexes of the migrations; time cap {cap:.0f} s per phase)", flush=True)
    base = measure_api(engine, "base", args.claims, cap)
    assert capture.sql is not None
    sql, params = capture.sql, capture.params
    print("\n  plan of the pick statement as shipped:")
    print("    " + explain(engine, sql, params).replace("\n", "\n    "))
    raw_base = time_statement(engine, sql, params, args.raw_repeat, cap / 2)
    print(f"\n    pick UPDATE alone, as shipped        {summarize(raw_base).ms()}")
    if args.no_scratch_index:
        return
    if budget.exhausted(reserve=30):
        print("  budget spent: scratch-index measurement skipped")
        return

    print(f"\n  [B] scratch index (benchmark database only): {SCRATCH_DDL}", flush=True)
    with engine.begin() as conn, stopwatch() as t_ix:
        conn.exec_driver_sql(SCRATCH_DDL)
        conn.exec_driver_sql("ANALYZE queue_items" if not is_sqlite(engine) else "SELECT 1")
    print(f"    built in {t_ix[0]:.1f} s")
    print("\n  plan of the pick statement as shipped, scratch index present:")
    print("    " + explain(engine, sql, params).replace("\n", "\n    "))
    raw_ix = time_statement(engine, sql, params, args.raw_repeat, cap / 2)
    print(f"\n    pick UPDATE alone, as shipped        {summarize(raw_ix).ms()}")
    shaped = with_status_term(sql)
    print(f"\n  plan with the extra term `{STATUS_TERM.strip()[:-4]}` in the inner WHERE:")
    print("    " + explain(engine, shaped, params).replace("\n", "\n    "))
    raw_shaped = time_statement(engine, shaped, params, args.raw_repeat, cap / 2)
    print(f"\n    pick UPDATE alone, with status term  {summarize(raw_shaped).ms()}")
    print("\n    full claim_next (code as shipped) with the scratch index:")
    fixed = measure_api(engine, "ix", args.claims, cap)

    print(f"\n  {name} summary, claim p95 (target <= 20 ms at 1M rows):")
    print(f"    as shipped:                          {base['claim_only_p95'] * 1e3:9.2f} ms claim only, "
          f"{base['loop_claim_p95'] * 1e3:9.2f} ms in the claim+submit loop")
    print(f"    + scratch index, query as shipped:   {fixed['claim_only_p95'] * 1e3:9.2f} ms claim only, "
          f"{fixed['loop_claim_p95'] * 1e3:9.2f} ms in the claim+submit loop")
    r_base, r_ix, r_sh = (summarize(x).p50 for x in (raw_base, raw_ix, raw_shaped))
    print(f"    pick statement p50: as shipped {r_base * 1e3:.2f} ms; + index {r_ix * 1e3:.2f} ms "
          f"(x{r_base / r_ix:.1f}); + index + status term {r_sh * 1e3:.2f} ms (x{r_base / r_sh:.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="queue claim latency with a large queue")
    parser.add_argument("--rows", type=int, default=1_000_000, help="cases and queue items to load")
    parser.add_argument("--claims", type=int, default=500, help="claims per measured phase")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--done-fraction", type=float, default=0.1, help="oldest items already labelled")
    parser.add_argument("--batch", type=int, default=1000, help="queue items per round")
    parser.add_argument("--raw-repeat", type=int, default=30, help="timings of the bare pick statement")
    parser.add_argument("--phase-cap-s", type=float, default=60.0, help="most seconds per measured phase")
    parser.add_argument("--budget-s", type=float, default=None, help="overall wall-clock budget")
    parser.add_argument("--no-scratch-index", action="store_true", help="skip the scratch-index variant")
    args = parser.parse_args(argv)
    if args.rows < 2 * args.claims + 100:
        parser.error("--rows must exceed twice --claims (plus 100) so the queue never runs dry")
    if not 0 <= args.done_fraction < 0.5:
        parser.error("--done-fraction must be in [0, 0.5)")
    budget = Budget(args.budget_s)

    print("bench_queue: claim_next latency with a large queue")
    print_machine()
    print(f"  {noise_note()}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    failed = False
    for backend in backends:
        print(f"\n=== {backend} ===", flush=True)
        if backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="bench_queue_") as tmp:
                engine = create_db_engine(f"sqlite:///{Path(tmp) / 'queue.db'}")
                try:
                    run_backend(engine, args, budget)
                finally:
                    engine.dispose()
        else:
            try:
                with throwaway_pg_database("wbbench_queue") as url:
                    print(f"  PostgreSQL server {pg_server_version(url)}")
                    engine = create_db_engine(url)
                    try:
                        run_backend(engine, args, budget)
                    finally:
                        engine.dispose()
            except RuntimeError as exc:
                print(f"  SKIPPED: {exc}")
                failed = True
        print(f"  {noise_note()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
