"""Bulk write of predictions: ``write_predictions`` throughput on SQLite and PostgreSQL.

Usage::

    python bench/bench_predictions.py [--rows 100000] [--batch 256] [--repeats 2]
        [--backend sqlite|postgresql|both] [--budget-s 300]

For each backend: a fresh database with the real schema (SQLite WAL file in a temp folder, or a
throw-away PostgreSQL database dropped afterwards), ``--rows`` cases bulk-loaded, then for each repeat
a new ready model version whose predictions for every case are written

* in calls of ``--batch`` rows (256, as the inference job writes them): rows/s overall and the
  per-call latency (p50/p95/p99);
* in ONE call of all rows.

Each variant writes to its own model version (the table keeps the earlier versions' rows, as it does in
use). Every write is checked by counting the rows afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
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
    summarize,
)
from sqlalchemy import Engine, func, select  # noqa: E402

from workbench.db.engine import create_db_engine, is_sqlite, session_scope  # noqa: E402
from workbench.db.models import ModelVersion, Prediction  # noqa: E402
from workbench.db.schema import upgrade  # noqa: E402
from workbench.model.predictions import write_predictions  # noqa: E402


def new_version(engine: Engine, tag: str) -> int:
    with session_scope(engine) as s:
        mv = ModelVersion(preset="bench", backbone=tag, config={}, status="ready", created_by="bench")
        s.add(mv)
        s.flush()
        return mv.id


def count(engine: Engine, version_id: int) -> int:
    with session_scope(engine) as s:
        return int(
            s.scalar(
                select(func.count()).select_from(Prediction).where(Prediction.model_version_id == version_id)
            )
        )


def scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.0, 2.0, n)
    prob = 1.0 / (1.0 + np.exp(-logit))
    return logit, prob, rng.uniform(0.0, 0.3, n)


def batched(engine: Engine, case_ids: list[int], batch: int, seed: int) -> tuple[float, list[float], int]:
    """Write every case's prediction in calls of ``batch``; (wall s, per-call s, version id)."""
    vid = new_version(engine, f"batched-{seed}")
    logit, prob, unc = scores(len(case_ids), seed)
    calls: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(case_ids), batch):
        c0 = time.perf_counter()
        write_predictions(
            engine,
            vid,
            case_ids[i : i + batch],
            logit[i : i + batch],
            prob[i : i + batch],
            unc[i : i + batch],
        )
        calls.append(time.perf_counter() - c0)
    return time.perf_counter() - t0, calls, vid


def single(engine: Engine, case_ids: list[int], seed: int) -> tuple[float, int]:
    vid = new_version(engine, f"single-{seed}")
    logit, prob, unc = scores(len(case_ids), seed)
    t0 = time.perf_counter()
    write_predictions(engine, vid, case_ids, logit, prob, unc)
    return time.perf_counter() - t0, vid


def run_backend(url: str, args: argparse.Namespace, budget: Budget) -> dict[str, list[float]]:
    engine = create_db_engine(url)
    try:
        upgrade(engine)
        sqlite = is_sqlite(engine)
        ts = SQLITE_TS if sqlite else datetime(2024, 1, 1, tzinfo=UTC)
        t0 = time.perf_counter()
        bulk_load(url, [("cases", CASE_COLS, case_rows(args.rows, ts))])
        print(f"  {args.rows:,} cases bulk-loaded in {time.perf_counter() - t0:.1f} s", flush=True)
        case_ids = list(range(1, args.rows + 1))
        rates: dict[str, list[float]] = {"batched": [], "single": []}
        for rep in range(args.repeats):
            if rep and budget.exhausted(reserve=60):
                print(f"  budget spent: stopped after {rep} repeat(s)")
                break
            wall, calls, vid = batched(engine, case_ids, args.batch, seed=2 * rep)
            assert count(engine, vid) == args.rows, "batched write lost rows"
            rates["batched"].append(args.rows / wall)
            s = summarize(calls)
            print(
                f"  repeat {rep + 1}: {len(calls)} calls of {args.batch}: {wall:6.1f} s, "
                f"{args.rows / wall:9,.0f} rows/s; per call {s.ms()}",
                flush=True,
            )
            wall1, vid1 = single(engine, case_ids, seed=2 * rep + 1)
            assert count(engine, vid1) == args.rows, "single-call write lost rows"
            rates["single"].append(args.rows / wall1)
            print(
                f"  repeat {rep + 1}: 1 call of {args.rows:,}:    {wall1:6.1f} s, {args.rows / wall1:9,.0f} rows/s",
                flush=True,
            )
        return rates
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write_predictions throughput")
    parser.add_argument("--rows", type=int, default=100_000, help="predictions per write (one per case)")
    parser.add_argument("--batch", type=int, default=256, help="rows per call in the batched variant")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of both variants (new versions)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--budget-s", type=float, default=None, help="overall wall-clock budget")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("--rows, --batch and --repeats must be positive")
    budget = Budget(args.budget_s)
    print("bench_predictions: write_predictions throughput")
    print_machine()
    print(f"  {noise_note()}")
    results: dict[str, dict[str, list[float]]] = {}
    failed = False
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        print(f"\n=== {backend} ===", flush=True)
        try:
            with bench_database(backend, "wbbench_pred") as url:
                if backend == "postgresql":
                    print(f"  PostgreSQL server {pg_server_version(url)}")
                results[backend] = run_backend(url, args, budget)
        except RuntimeError as exc:
            print(f"  SKIPPED: {exc}")
            failed = True
        print(f"  {noise_note()}")
    print(f"\nsummary: median rows/s over repeats (each repeat writes {args.rows:,} rows to a new version)")
    for backend, rates in results.items():
        b, s = float(np.median(rates["batched"])), float(np.median(rates["single"]))
        print(
            f"  {backend:<11} calls of {args.batch}: {b:9,.0f} rows/s   one call: {s:9,.0f} rows/s   "
            f"one call / batched = x{s / b:.2f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
