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
CLAIM2_DDL = "CREATE INDEX ix_bench_claim2 ON queue_items (status, priority DESC, id)"
# The lease condition of the pick as SQLAlchemy compiles it (qmark on SQLite, pyformat on psycopg).
OR_PATTERN = r"\(cand\.status = \S+ OR cand\.status = \S+ AND cand\.lease_expires_at < \S+\)"

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
        yield (
            i,
            i,
            1 if i % 10 == 0 else 0,
            f"seed_labeller_{i % 20}",
            "expert",
            (i - 1) // batch + 1,
            i,
            ts,
        )


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
def statement_kind(sql: str) -> str:
    """A short name for each statement claim_next / submit_label issue (for the per-statement breakdown)."""
    flat = " ".join(sql.split())
    if flat.upper().startswith("BEGIN"):
        return "BEGIN IMMEDIATE"
    if flat.startswith("UPDATE queue_items SET status") and " cand" in flat:
        return "pick UPDATE"
    if flat.startswith("UPDATE queue_items SET lease_expires_at"):
        return "lease renew"
    if flat.startswith("SELECT queue_items.id") and "lease_holder" in flat:
        return "held SELECT"
    if flat.startswith("SELECT queue_items.") and "JOIN cases" in flat:
        return "load claimed"
    return "other SQL"


class StatementLog:
    """Captures the last pick statement (with parameters) and, while ``timing``, each statement's time."""

    def __init__(self, engine: Engine) -> None:
        self.sql: str | None = None
        self.params: Any = None
        self.timing = False
        self.durations: dict[str, list[float]] = {}
        self._t0 = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().startswith("UPDATE queue_items SET status") and " cand" in statement:
            self.sql, self.params = statement, parameters
        self._t0 = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if self.timing:
            kind = statement_kind(statement)
            self.durations.setdefault(kind, []).append(time.perf_counter() - self._t0)


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
    return "meets" if p95 <= TARGET_P95_S else "MISSES"


def report(title: str, samples: dict[str, list[float]], cut: bool, wanted: int) -> None:
    got = len(next(iter(samples.values())))
    print(f"    {title}" + (f"  (stopped after {got}/{wanted}: time cap)" if cut else ""))
    for key, values in samples.items():
        s = summarize(values)
        tail = f"  target p95 <= 20 ms: {verdict(s.p95)}" if key == "claim" else ""
        print(f"      {key:<14} {s.ms()}{tail}")


def measure_api(
    engine: Engine, log: StatementLog, tag: str, claims: int, cap_s: float, loop: bool = True
) -> dict[str, float]:
    """Claim-only (with a per-statement breakdown) and claim+submit through the public API; claim p95s."""

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
    log.durations, log.timing = {}, True
    only, cut = timed_loop(claim_only, claims, cap_s)
    log.timing = False
    report("claim_next only (a new labeller each time, so every call runs the pick):", only, cut, claims)
    claim_total = sum(only["claim"])
    parts = ", ".join(
        f"{kind} {summarize(d).p50 * 1e3:.2f}" for kind, d in sorted(log.durations.items()) if d
    )
    rest = (claim_total - sum(sum(d) for d in log.durations.values())) / len(only["claim"])
    print(f"      per statement p50 (ms): {parts}; commit + Python, mean {rest * 1e3:.2f}")
    out = {"claim_only_p50": summarize(only["claim"]).p50, "claim_only_p95": summarize(only["claim"]).p95}
    if loop:
        both, cut2 = timed_loop(claim_submit, claims, cap_s)
        report("claim_next + submit_label (4 labellers in turn):", both, cut2, claims)
        out["loop_claim_p95"] = summarize(both["claim"]).p95
        out["loop_total_p95"] = summarize(both["claim+submit"]).p95
    return out


def explain(engine: Engine, sql: str, params: Any) -> str:
    """The plan of a statement; on PostgreSQL EXPLAIN ANALYZE inside a rolled-back transaction."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
            parents = {r[0]: r[1] for r in rows}

            def depth(parent: int) -> int:
                return 0 if parent not in parents else 1 + depth(parents[parent])

            out = "\n".join(f"{'  ' * depth(r[1])}{r[-1]}" for r in rows)
        else:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).all()
            out = "\n".join(r[0] for r in rows)
        conn.rollback()
    return out


def print_plan(title: str, plan: str) -> None:
    print(f"\n    plan, {title}:")
    print("      " + plan.replace("\n", "\n      "))


def rewrite(sql: str, params: Any, pattern: str, replacement: str) -> tuple[str, Any]:
    """Replace the one match of ``pattern`` in a captured statement; drop the qmark parameters it held."""
    m = re.search(pattern, sql)
    if m is None:
        raise RuntimeError(f"pattern {pattern!r} not found in the pick statement")
    new_sql = sql[: m.start()] + replacement + sql[m.end() :]
    if isinstance(params, dict):  # psycopg named parameters: unused ones are harmless
        return new_sql, params
    first = sql[: m.start()].count("?")
    held = m.group(0).count("?")
    return new_sql, tuple(params[:first]) + tuple(params[first + held :])


def with_status_term(sql: str, params: Any) -> tuple[str, Any]:
    """Shape 1: the pick with a redundant ``status IN ('queued', 'leased')`` term (partial-index match)."""
    return rewrite(
        sql, params, r"FROM queue_items AS cand\s+WHERE\s+", "FROM queue_items AS cand\nWHERE " + STATUS_TERM
    )


def queued_only(sql: str, params: Any) -> tuple[str, Any]:
    """Shape 2: the pick restricted to ``status = 'queued'`` (expired leases released just before)."""
    return rewrite(sql, params, OR_PATTERN, "cand.status = 'queued'")


def time_statement(engine: Engine, sql: str, params: Any, repeat: int, cap_s: float) -> list[float]:
    """Execute a statement ``repeat`` times, each in its own transaction rolled back afterwards."""
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


def ddl(engine: Engine, *statements: str) -> float:
    """Run DDL in one transaction; drop pooled connections so no SQLite connection keeps a stale schema."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt)
    if not is_sqlite(engine):
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE queue_items")
    engine.dispose()
    return time.perf_counter() - t0


def raw_line(label: str, samples: list[float]) -> str:
    return f"      {label:<44} {summarize(samples).ms()}"


def run_backend(engine: Engine, args: argparse.Namespace, budget: Budget) -> None:
    name = "SQLite" if is_sqlite(engine) else "PostgreSQL"
    n_done = int(args.rows * args.done_fraction)
    print(
        f"  loading {args.rows:,} cases + {args.rows:,} queue items ({n_done:,} done, with labels)",
        flush=True,
    )
    with stopwatch() as t_up:
        upgrade(engine)
    url = engine.url.render_as_string(hide_password=False)
    with stopwatch() as t_load:
        if is_sqlite(engine):
            load_sqlite(Path(engine.url.database), args.rows, args.batch, n_done)
        else:
            load_postgresql(url, args.rows, args.batch, n_done)
    rate = (2 * args.rows + n_done) / t_load[0]
    how = "executemany, one transaction" if is_sqlite(engine) else "COPY, then VACUUM ANALYZE"
    print(f"  schema {t_up[0]:.1f} s; bulk load {t_load[0]:.1f} s ({rate:,.0f} rows/s, {how})", flush=True)
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT status, count(*) FROM queue_items GROUP BY status")).all())
    print(f"  queue_items by status: {counts}")

    log = StatementLog(engine)
    cap = max(10.0, min(args.phase_cap_s, budget.left() / 10))
    summary: list[tuple[str, dict[str, float]]] = []
    raw: dict[str, list[float]] = {}

    print(f"\n  [A] as shipped (indexes of the migrations); time cap {cap:.0f} s per phase", flush=True)
    summary.append(("as shipped", measure_api(engine, log, "base", args.claims, cap)))
    assert log.sql is not None
    sql, params = log.sql, log.params
    print_plan("pick as shipped", explain(engine, sql, params))
    q_sql, q_params = queued_only(sql, params)
    print_plan("pick restricted to status = 'queued' (shape 2)", explain(engine, q_sql, q_params))
    print("\n    the pick statement alone (rolled back each time):")
    raw["shipped"] = time_statement(engine, sql, params, args.raw_repeat, cap / 2)
    print(raw_line("as shipped", raw["shipped"]))
    raw["shape2"] = time_statement(engine, q_sql, q_params, args.raw_repeat, cap / 2)
    print(raw_line("shape 2 (status = 'queued')", raw["shape2"]))
    if args.no_scratch_index or budget.exhausted(reserve=60):
        print("  scratch-index variants skipped" + ("" if args.no_scratch_index else " (budget spent)"))
        return

    print(f"\n  [B] scratch index 1 (benchmark database only): {SCRATCH_DDL}", flush=True)
    print(f"    built in {ddl(engine, SCRATCH_DDL):.1f} s")
    s_sql, s_params = with_status_term(sql, params)
    print_plan("pick as shipped", explain(engine, sql, params))
    print_plan(f"pick with the term `{STATUS_TERM[:-5]}` (shape 1)", explain(engine, s_sql, s_params))
    print("\n    the pick statement alone (rolled back each time):")
    raw["ix1 shipped"] = time_statement(engine, sql, params, args.raw_repeat, cap / 2)
    print(raw_line("as shipped", raw["ix1 shipped"]))
    raw["ix1 shape1"] = time_statement(engine, s_sql, s_params, args.raw_repeat, cap / 2)
    print(raw_line("shape 1 (+ status IN ('queued', 'leased'))", raw["ix1 shape1"]))
    summary.append(("+ scratch index 1", measure_api(engine, log, "ix1", args.claims, cap, loop=False)))
    ddl(engine, f"DROP INDEX {SCRATCH_INDEX}")
    if budget.exhausted(reserve=45):
        print("  budget spent: scratch index 2 skipped")
        print_summary(name, summary, raw)
        return

    print(
        f"\n  [C] scratch index 2 (benchmark database only): {CLAIM2_DDL}, replacing ix_queue_items_claim",
        flush=True,
    )
    print(f"    built in {ddl(engine, 'DROP INDEX ix_queue_items_claim', CLAIM2_DDL):.1f} s")
    print_plan("pick as shipped", explain(engine, sql, params))
    print_plan("pick restricted to status = 'queued' (shape 2)", explain(engine, q_sql, q_params))
    print("\n    the pick statement alone (rolled back each time):")
    raw["ix2 shipped"] = time_statement(engine, sql, params, args.raw_repeat, cap / 2)
    print(raw_line("as shipped", raw["ix2 shipped"]))
    raw["ix2 shape2"] = time_statement(engine, q_sql, q_params, args.raw_repeat, cap / 2)
    print(raw_line("shape 2 (status = 'queued')", raw["ix2 shape2"]))
    release = "UPDATE queue_items SET status = 'queued' WHERE status = 'leased' AND lease_expires_at < " + (
        "datetime('now')" if is_sqlite(engine) else "now()"
    )
    raw["release"] = time_statement(engine, release, (), args.raw_repeat, cap / 2)
    print(raw_line("release of expired leases (shape 2 step 1)", raw["release"]))
    summary.append(("+ scratch index 2", measure_api(engine, log, "ix2", args.claims, cap, loop=False)))
    print_summary(name, summary, raw)


def print_summary(
    name: str, summary: list[tuple[str, dict[str, float]]], raw: dict[str, list[float]]
) -> None:
    print(f"\n  {name} summary (target: claim p95 <= 20 ms at 1M rows)")
    print("    claim_next, code as shipped:")
    for label, res in summary:
        loop = (
            f"; claim+submit loop: claim p95 {res['loop_claim_p95'] * 1e3:.2f} ms, "
            f"claim+submit p95 {res['loop_total_p95'] * 1e3:.2f} ms"
            if "loop_claim_p95" in res
            else ""
        )
        print(
            f"      {label:<20} claim p50 {res['claim_only_p50'] * 1e3:8.2f} ms, p95 "
            f"{res['claim_only_p95'] * 1e3:8.2f} ms ({verdict(res['claim_only_p95'])}){loop}"
        )
    base = summarize(raw["shipped"]).p50
    print("    pick statement alone, p50 (speed-up vs as shipped):")
    for key, label in (
        ("shipped", "as shipped"),
        ("shape2", "shape 2, migration indexes"),
        ("ix1 shipped", "index 1, query as shipped"),
        ("ix1 shape1", "index 1 + shape 1"),
        ("ix2 shipped", "index 2, query as shipped"),
        ("ix2 shape2", "index 2 + shape 2"),
    ):
        if key in raw:
            p50 = summarize(raw[key]).p50
            print(f"      {label:<28} {p50 * 1e3:9.2f} ms  (x{base / p50:.1f})")


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
