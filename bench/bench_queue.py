"""Queue claim latency at scale: ``claim_next`` (and claim + ``submit_label``) with 1,000,000 queue rows.

Usage::

    python bench/bench_queue.py [--rows 1000000] [--claims 500] [--backend sqlite|postgresql|both]
        [--done-fraction 0.1] [--batch 1000] [--budget-s 600] [--no-before]
    python bench/bench_queue.py --concurrency 20 [--think-ms "1000,4000;300,1000"] [--duration-s 60] [--stress-s 15]

For each backend it builds a fresh database with the real schema (``create_db_engine`` +
``workbench.db.schema.upgrade``; SQLite is a WAL file in a temp folder, PostgreSQL a throw-away
database that is dropped afterwards), bulk-loads ``--rows`` cases and one ``label`` queue item per case
(executemany in one transaction on SQLite, COPY on PostgreSQL), in rounds of ``--batch`` items with
priority ``batch - position`` as :func:`workbench.active.labelling_queue.enqueue` gives; the oldest
``--done-fraction`` of the items are done and carry an expert label. Then, target claim p95 <= 20 ms:

* **[A] as shipped** (schema at head): ``claim_next`` by a new labeller each time (no held lease, so
  every call runs the pick query), then 4 labellers in turn ``claim_next`` + ``submit_label``;
  p50/p95/p99, the time of each SQL statement (the rest is commit + Python), the query plans of the pick
  and of submit_label's open-adjudication lookup (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE), and the floor
  of any write transaction here (one-row UPDATE + COMMIT);
* **[B] before migration 0002**, on the same data: the schema downgraded one revision (the old
  ``(status, priority, id)`` claim index, no labeller or case_id index) and :func:`claim_before_0002`,
  a copy of the previous pick (``status = 'queued' OR (status = 'leased' AND expired)``, which made both
  databases sort every open item); the ratios before/after are printed at the end.

Bare statements are timed in transactions that are rolled back; the database is deleted at the end.

With ``--concurrency N`` the same database is loaded, then [A]/[B] give way to labellers working at once
(:mod:`queue_concurrent`: separate processes, each with its own user and Engine, claim -> look at the
case for ``--think-ms`` -> submit): first ONE labeller with no think time for ``--claims`` claims (the
single-claimer p95, target <= 10 ms), then N labellers for ``--duration-s`` (target claim p95 <= 20 ms),
then N labellers with no think time for ``--stress-s`` (a stress figure, information only); then the
duplicate counts from the database, which must all be 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from common import (  # noqa: E402
    CASE_COLS,
    SQLITE_TS,
    Budget,
    bench_database,
    bulk_load,
    case_rows,
    noise_note,
    pg_server_version,
    print_machine,
    stopwatch,
    summarize,
)
from queue_concurrent import Phase, duplicate_report, parse_think_ms, phase_line, run_labellers  # noqa: E402
from sqlalchemy import Engine, and_, event, or_, select, text  # noqa: E402
from sqlalchemy.orm import aliased  # noqa: E402

from workbench.active.labelling_queue import (  # noqa: E402
    DEFAULT_LEASE_SECONDS,
    ClaimedItem,
    claim_next,
    submit_label,
)
from workbench.active.labelling_queue.claims import (  # noqa: E402
    _claimed,
    lease_update,
    offer_conditions,
    renew_held_lease,
)
from workbench.db.engine import create_db_engine, is_sqlite, session_scope  # noqa: E402
from workbench.db.models import QueueItem, utcnow  # noqa: E402
from workbench.db.schema import downgrade, upgrade  # noqa: E402

TARGET_P95_S = 0.020
SINGLE_TARGET_P95_S = 0.010
ROUND_COLS = "id, number, status, batch_size, created_at"
ITEM_COLS = "id, round_id, case_id, kind, strategy, reason, score, priority, status, created_at, done_at"
LABEL_COLS = "id, case_id, value, labeller, source, round_id, queue_item_id, created_at"


# -- data ------------------------------------------------------------------------------------------------
def round_rows(n_rounds: int, batch: int, ts: Any) -> Iterator[tuple[Any, ...]]:
    for r in range(1, n_rounds + 1):
        yield (r, r, "labelling" if r < n_rounds else "open", batch, ts)


def item_rows(n: int, batch: int, n_done: int, ts: Any) -> Iterator[tuple[Any, ...]]:
    """One label item per case; rounds of ``batch`` items, priority = batch - position (as enqueue)."""
    for i in range(1, n + 1):
        pos = (i - 1) % batch
        done = i <= n_done
        score = (i * 7919 % 1000) / 1000
        yield (
            i,
            (i - 1) // batch + 1,
            i,
            "label",
            "uncertainty",
            f"p={score:.3f} near the threshold",
            score,
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


def load(url: str, n: int, batch: int, n_done: int) -> None:
    ts: Any = SQLITE_TS if url.startswith("sqlite") else datetime(2024, 1, 1, tzinfo=UTC)
    n_rounds = (n + batch - 1) // batch
    bulk_load(
        url,
        [
            ("cases", CASE_COLS, case_rows(n, ts)),
            ("rounds", ROUND_COLS, round_rows(n_rounds, batch, ts)),
            ("queue_items", ITEM_COLS, item_rows(n, batch, n_done, ts)),
            ("labels", LABEL_COLS, label_rows(n_done, batch, ts)),
        ],
    )


# -- the claim before migration 0002 (for the before/after comparison) ---------------------------------
def claim_before_0002(
    engine: Engine, labeller: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> ClaimedItem | None:
    """The pick of ``claim_next`` before migration 0002 (default kinds), kept here only to measure it.

    It took expired leases inside the pick (``status = 'queued' OR (status = 'leased' AND expired)``);
    with that OR neither database can read the claim index in ORDER BY order, so each claim sorted every
    open item. The shipped code releases expired leases first and picks ``status = 'queued'`` only.
    """
    now = utcnow()
    expires = now + timedelta(seconds=float(lease_seconds))
    with session_scope(engine) as s:
        held_id = renew_held_lease(s, labeller, now, expires)
        if held_id is not None:
            return _claimed(s, held_id)
        cand = aliased(QueueItem, name="cand")
        pick = (
            select(cand.id)
            .where(
                or_(cand.status == "queued", and_(cand.status == "leased", cand.lease_expires_at < now)),
                *offer_conditions(cand, labeller),
            )
            .order_by(cand.priority.desc(), cand.id)
            .limit(1)
        )
        lease = lease_update(pick, is_sqlite(engine))
        item_id = s.connection().execute(lease, {"labeller": labeller, "expires": expires}).scalar()
        return None if item_id is None else _claimed(s, item_id)


# -- measurement -----------------------------------------------------------------------------------------
STATEMENT_NAMES = (  # (prefix of the flattened SQL, must also contain, name): first match wins
    ("BEGIN", "", "BEGIN IMMEDIATE"),
    ("UPDATE queue_items SET status=", " cand", "pick UPDATE"),
    ("UPDATE queue_items SET lease_expires_at", "", "lease renew"),
    ("UPDATE queue_items SET status=", "done_at", "close item"),
    ("UPDATE queue_items SET status=", "lease_expires_at <", "release expired"),
    ("SELECT queue_items.id FROM queue_items WHERE", "lease_holder =", "held SELECT"),
    ("SELECT queue_items.id", "JOIN cases", "load claimed"),
    ("SELECT queue_items.case_id", "", "item case_id"),
    ("SELECT cases.", "", "lock case"),
    ("SELECT labels.", "labels.queue_item_id =", "existing label"),
    ("SELECT labels.id, labels.case_id, labels.value", "", "label history"),
    ("SELECT queue_items.", "queue_items.kind =", "open adjudication"),
    ("SELECT queue_items.", "WHERE queue_items.id =", "lock item"),
    ("INSERT INTO labels", "", "insert label"),
)


def statement_kind(sql: str) -> str:
    """A short name for each statement claim_next / submit_label issue (for the per-statement breakdown)."""
    flat = " ".join(sql.split())
    for prefix, needle, name in STATEMENT_NAMES:
        if flat.startswith(prefix) and needle in flat:
            return name
    return flat[:48]


class StatementLog:
    """Captures the last pick statement (with parameters) and, while ``timing``, each statement's time."""

    def __init__(self, engine: Engine) -> None:
        self.sql: str | None = None
        self.params: Any = None
        self.timing = False
        self.capture = True
        self.durations: dict[str, list[float]] = {}
        self.examples: dict[str, tuple[str, Any]] = {}
        self._t0 = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if (
            self.capture
            and statement.lstrip().startswith("UPDATE queue_items SET status")
            and " cand" in statement
        ):
            self.sql, self.params = statement, parameters
        self._t0 = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if self.timing:
            kind = statement_kind(statement)
            self.durations.setdefault(kind, []).append(time.perf_counter() - self._t0)
            self.examples[kind] = (statement, parameters)

    def breakdown(self, iterations: int, total_s: float) -> str:
        """Per statement kind: p50 in ms and calls per iteration, slowest total first; then the rest."""
        ranked = sorted(self.durations.items(), key=lambda kv: -sum(kv[1]))
        parts = [f"{kind} {summarize(d).p50 * 1e3:.2f} (x{len(d) / iterations:.0f})" for kind, d in ranked]
        rest = (total_s - sum(sum(d) for d in self.durations.values())) / iterations
        return ", ".join(parts) + f"; commit + Python per call, mean {rest * 1e3:.2f}"


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
    engine: Engine,
    log: StatementLog,
    tag: str,
    claims: int,
    cap_s: float,
    loop: bool = True,
    claim: Callable[[Engine, str], Any] = claim_next,
    what: str = "claim_next",
) -> dict[str, float]:
    """Claim-only (with a per-statement breakdown) and claim+submit (``submit_label``); the claim figures."""

    def claim_only(i: int) -> dict[str, float]:
        t0 = time.perf_counter()
        item = claim(engine, f"{tag}_claimer_{i}")
        dt = time.perf_counter() - t0
        assert item is not None, "the queue ran dry"
        return {"claim": dt}

    labellers = [f"{tag}_labeller_{k}" for k in range(4)]

    def claim_submit(i: int) -> dict[str, float]:
        who = labellers[i % len(labellers)]
        t0 = time.perf_counter()
        item = claim(engine, who)
        t1 = time.perf_counter()
        assert item is not None, "the queue ran dry"
        submit_label(engine, item.item_id, who, 1 if i % 10 == 0 else 0)
        t2 = time.perf_counter()
        return {"claim": t1 - t0, "submit": t2 - t1, "claim+submit": t2 - t0}

    for i in range(3):  # warm-up: connection pool, statement caches, first page reads
        claim_only(10_000_000 + i)
    log.durations, log.examples, log.timing = {}, {}, True
    only, cut = timed_loop(claim_only, claims, cap_s)
    log.timing = False
    report(f"{what} only (a new labeller each time, so every call runs the pick):", only, cut, claims)
    print(f"      per statement, p50 ms: {log.breakdown(len(only['claim']), sum(only['claim']))}")
    out = {"claim_only_p50": summarize(only["claim"]).p50, "claim_only_p95": summarize(only["claim"]).p95}
    if loop:
        log.durations, log.examples, log.timing = {}, {}, True
        both, cut2 = timed_loop(claim_submit, claims, cap_s)
        log.timing = False
        report(f"{what} + submit_label (4 labellers in turn):", both, cut2, claims)
        n = len(both["claim"])
        print(f"      per statement, p50 ms: {log.breakdown(n, sum(both['claim+submit']))}")
        out["loop_claim_p95"] = summarize(both["claim"]).p95
        out["loop_total_p95"] = summarize(both["claim+submit"]).p95
        out["loop_submit_p95"] = summarize(both["submit"]).p95
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


def time_statement(engine: Engine, sql: str, params: Any, repeat: int, cap_s: float) -> list[float]:
    """Execute a statement ``repeat`` times, each in its own transaction rolled back afterwards."""
    out: list[float] = []
    start = time.monotonic()
    for _ in range(repeat):
        with engine.connect() as conn:
            t0 = time.perf_counter()
            result = conn.exec_driver_sql(sql, params)
            if result.returns_rows:
                result.all()
            out.append(time.perf_counter() - t0)
            conn.rollback()
        if time.monotonic() - start > cap_s:
            break
    return out


def commit_floor(engine: Engine, repeat: int, cap_s: float) -> list[float]:
    """The least a write transaction costs here: UPDATE one row and COMMIT (the WAL flush on PostgreSQL)."""
    out: list[float] = []
    start = time.monotonic()
    for _ in range(repeat):
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE queue_items SET score = score WHERE id = 1")
        out.append(time.perf_counter() - t0)
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


def run_backend(url: str, args: argparse.Namespace, budget: Budget) -> None:
    engine = create_db_engine(url)
    try:
        _run_backend(engine, url, args, budget)
    finally:
        engine.dispose()


def _run_backend(engine: Engine, url: str, args: argparse.Namespace, budget: Budget) -> None:
    name = "SQLite" if is_sqlite(engine) else "PostgreSQL"
    n_done = int(args.rows * args.done_fraction)
    print(
        f"  loading {args.rows:,} cases + {args.rows:,} queue items ({n_done:,} done, with labels)",
        flush=True,
    )
    with stopwatch() as t_up:
        before_rev, head = upgrade(engine)
    with stopwatch() as t_load:
        load(url, args.rows, args.batch, n_done)
    rate = (2 * args.rows + n_done) / t_load[0]
    how = "executemany, one transaction" if is_sqlite(engine) else "COPY, then VACUUM ANALYZE"
    print(f"  schema at {head} in {t_up[0]:.1f} s; bulk load {t_load[0]:.1f} s ({rate:,.0f} rows/s, {how})")
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT status, count(*) FROM queue_items GROUP BY status")).all())
    print(f"  queue_items by status: {counts}", flush=True)

    if args.concurrency:
        run_concurrent(engine, url, args)
        return
    log = StatementLog(engine)
    cap = max(5.0, min(args.phase_cap_s, budget.left() / 6))
    rcap = min(args.raw_cap_s, cap / 2)
    summary: list[tuple[str, dict[str, float]]] = []
    raw: dict[str, list[float]] = {}

    def timed(key: str, label: str, sql: str, params: Any) -> None:
        raw[key] = time_statement(engine, sql, params, args.raw_repeat, rcap)
        print(raw_line(label, raw[key]), flush=True)

    print(f"\n  [A] as shipped (schema {head}); time cap {cap:.0f} s per phase", flush=True)
    summary.append(("as shipped", measure_api(engine, log, "now", args.claims, cap)))
    examples = dict(log.examples)
    assert log.sql is not None, "no pick statement was seen"
    sql, params = log.sql, log.params
    print_plan("pick as shipped", explain(engine, sql, params))
    lookup = examples.get("open adjudication")
    if lookup is not None:
        print("\n    submit_label's open-adjudication lookup: " + " ".join(lookup[0].split())[:160] + " ...")
        print_plan("open-adjudication lookup as shipped", explain(engine, *lookup))
    print("\n    statements alone (rolled back each time):")
    timed("pick", "pick as shipped", sql, params)
    if lookup is not None:
        timed("lookup", "open-adjudication lookup as shipped", *lookup)
    raw["floor"] = commit_floor(engine, 100, rcap)
    print(raw_line("floor: a one-row UPDATE + COMMIT", raw["floor"]))
    if args.no_before or budget.exhausted(reserve=40):
        print("  [B] skipped" + ("" if args.no_before else " (budget spent)"))
        print_summary(name, summary, raw)
        return

    print(f"\n  [B] before migration {head}: schema downgraded one revision, the previous pick", flush=True)
    with stopwatch() as t_down:
        _, at = downgrade(engine, "-1")
    engine.dispose()  # no pooled connection keeps the old schema
    print(f"    schema at {at} in {t_down[0]:.1f} s")
    log.sql = None
    summary.append(
        (
            "before 0002",
            measure_api(engine, log, "old", args.claims, cap, claim=claim_before_0002, what="old claim"),
        )
    )
    assert log.sql is not None, "no pick statement was seen"
    print_plan("pick before migration 0002", explain(engine, log.sql, log.params))
    if lookup is not None:
        print_plan("open-adjudication lookup before migration 0002", explain(engine, *lookup))
    print("\n    statements alone (rolled back each time):")
    timed("old pick", "pick before migration 0002", log.sql, log.params)
    if lookup is not None:
        timed("old lookup", "open-adjudication lookup before 0002", *lookup)
    print_summary(name, summary, raw)


def run_concurrent(engine: Engine, url: str, args: argparse.Namespace) -> None:
    """One labeller alone, then ``--concurrency`` labellers with think time, then without; duplicates."""
    n = args.concurrency
    print("\n  [C] labellers as separate processes (own user and Engine each), claim -> look -> submit")
    single = Phase("single", args.phase_cap_s, (0.0, 0.0), max_claims=args.claims)
    claims = run_labellers(url, 1, [single], "single")
    print(phase_line(single, 1, claims, SINGLE_TARGET_P95_S), flush=True)
    phases = [
        Phase("people" if i == 0 else f"people{i + 1}", args.duration_s, think)
        for i, think in enumerate(args.think_ms)
    ]
    if args.stress_s > 0:
        phases.append(Phase("stress", args.stress_s, (0.0, 0.0)))
    many = run_labellers(url, n, phases, "labeller")
    for phase in phases:
        line = phase_line(phase, n, many, TARGET_P95_S)
        print(line + ("  (stress, information only)" if phase.name == "stress" else ""), flush=True)
    print(f"    {noise_note()}")
    counts = duplicate_report(engine, claims + many)
    print(f"    duplicates over {len(claims) + len(many)} claims (all must be 0): {counts}", flush=True)
    if any(counts.values()):
        raise SystemExit(f"duplicate leases or labels: {counts}")


def print_summary(
    name: str, summary: list[tuple[str, dict[str, float]]], raw: dict[str, list[float]]
) -> None:
    print(f"\n  {name} summary (target: claim p95 <= 20 ms at 1M rows)")
    for label, res in summary:
        loop = (
            f"; claim+submit loop: claim p95 {res['loop_claim_p95'] * 1e3:.1f}, "
            f"submit p95 {res['loop_submit_p95'] * 1e3:.1f}, both p95 {res['loop_total_p95'] * 1e3:.1f} ms"
            if "loop_claim_p95" in res
            else ""
        )
        print(
            f"    {label:<12} claim p50 {res['claim_only_p50'] * 1e3:8.1f} ms, p95 "
            f"{res['claim_only_p95'] * 1e3:8.1f} ms ({verdict(res['claim_only_p95'])}){loop}"
        )
    results = dict(summary)
    if "before 0002" in results:
        now, old = results["as shipped"], results["before 0002"]
        print(
            f"    claim p50 before / after migration 0002: x{old['claim_only_p50'] / now['claim_only_p50']:.0f}"
            f" ({old['claim_only_p50'] * 1e3:.1f} -> {now['claim_only_p50'] * 1e3:.1f} ms)"
        )
    for new_key, old_key, label in (("pick", "old pick", "pick"), ("lookup", "old lookup", "lookup")):
        if new_key in raw and old_key in raw:
            new, old = summarize(raw[new_key]).p50, summarize(raw[old_key]).p50
            print(
                f"    {label} statement p50 before / after: x{old / new:.0f} ({old * 1e3:.2f} -> {new * 1e3:.2f} ms)"
            )
    if "floor" in raw:
        print(f"    floor of a write transaction here: p50 {summarize(raw['floor']).p50 * 1e3:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="queue claim latency with a large queue")
    parser.add_argument("--rows", type=int, default=1_000_000, help="cases and queue items to load")
    parser.add_argument("--claims", type=int, default=500, help="claims per measured phase")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--done-fraction", type=float, default=0.1, help="oldest items already labelled")
    parser.add_argument("--batch", type=int, default=1000, help="queue items per round")
    parser.add_argument("--raw-repeat", type=int, default=30, help="timings of each bare statement")
    parser.add_argument("--phase-cap-s", type=float, default=20.0, help="most seconds per measured phase")
    parser.add_argument("--raw-cap-s", type=float, default=8.0, help="most seconds per bare-statement timing")
    parser.add_argument("--budget-s", type=float, default=None, help="overall wall-clock budget")
    parser.add_argument("--no-before", action="store_true", help="skip [B] (the schema before 0002)")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="labeller processes working at once (0: [A]/[B] instead)"
    )
    parser.add_argument(
        "--think-ms",
        default="1000,4000;300,1000",
        help="LO,HI: each labeller looks at a case uniform(LO, HI) ms; several ranges separated by ';' are "
        "run one after another (default: a reader deciding in 1-4 s, then a brisk 0.3-1 s)",
    )
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds the labellers work")
    parser.add_argument("--stress-s", type=float, default=15.0, help="seconds with no think time (0: skip)")
    args = parser.parse_args(argv)
    try:
        args.think_ms = [parse_think_ms(part) for part in args.think_ms.split(";") if part.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    if args.concurrency < 0 or args.duration_s <= 0 or args.stress_s < 0:
        parser.error("--concurrency must be >= 0, --duration-s > 0 and --stress-s >= 0")
    if args.rows < 6 * args.claims + 100:
        parser.error("--rows must exceed 6 x --claims (plus 100) so the queue never runs dry")
    if not 0 <= args.done_fraction < 0.5:
        parser.error("--done-fraction must be in [0, 0.5)")
    budget = Budget(args.budget_s)

    print("bench_queue: claim_next latency with a large queue")
    print_machine()
    print(f"  {noise_note()}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    failed = False
    for i, backend in enumerate(backends):
        print(f"\n=== {backend} ===", flush=True)
        share = Budget(None if args.budget_s is None else budget.left() / (len(backends) - i))
        try:
            with bench_database(backend, "wbbench_queue") as url:
                if backend == "postgresql":
                    print(f"  PostgreSQL server {pg_server_version(url)}")
                run_backend(url, args, share)
        except RuntimeError as exc:
            print(f"  SKIPPED: {exc}")
            failed = True
        print(f"  {noise_note()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
