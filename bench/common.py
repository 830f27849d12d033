"""Shared helpers of the benchmarks: machine description, timing statistics, throw-away PostgreSQL
databases, and rewriting one marked section of ``docs/benchmarks.md``.

Every benchmark prints figures measured in ONE run (medians and tails, not single timings), because the
machine is shared and noisy; :func:`noise_note` records the load average next to the figures.
"""

from __future__ import annotations

import itertools
import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "benchmarks.md"
PG_ADMIN_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PACKAGES = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "numpy",
    "scikit-learn",
    "netcal",
    "torch",
    "tensorflow",
    "keras",
    "celery",
)

if str(ROOT) not in sys.path:  # the scripts run as ``python bench/x.py`` from the repository root
    sys.path.insert(0, str(ROOT))


# -- machine ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip().strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions (from package metadata, nothing is imported); missing ones are left out."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_visible() -> str | None:
    """The first GPU named by ``nvidia-smi -L``, or None when no NVIDIA GPU is visible (TF not imported)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("GPU")]
    return lines[0] if res.returncode == 0 and lines else None


def machine_description() -> dict[str, str]:
    """CPU, cores, memory, OS, Python, SQLite and package versions of this machine, as display strings."""
    desc = {
        "CPU": _cpu_model(),
        "cores": f"{usable_cores()} usable ({os.cpu_count()} online)",
        "memory": _memory_gib(),
        "OS": _os_name(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "GPU": gpu_visible() or "none visible",
    }
    desc.update({f"{k}": v for k, v in package_versions().items()})
    return desc


def print_machine() -> None:
    """One line per machine fact (the header of every benchmark's output)."""
    for key, value in machine_description().items():
        print(f"  {key:<12} {value}")


def noise_note() -> str:
    """The load average, so a reader can judge how noisy the shared machine was during the run."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {usable_cores()} cores"


# -- timing ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """Order statistics of a list of durations, in seconds."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    minimum: float
    maximum: float

    def ms(self) -> str:
        """One line in milliseconds: n, median, p95, p99, min, max."""
        return (
            f"n={self.n:<5d} p50 {self.p50 * 1e3:8.2f} ms  p95 {self.p95 * 1e3:8.2f} ms  "
            f"p99 {self.p99 * 1e3:8.2f} ms  min {self.minimum * 1e3:7.2f}  max {self.maximum * 1e3:8.2f}"
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(durations: Sequence[float]) -> Summary:
    """Median, p95, p99, mean, min and max of durations in seconds."""
    s = sorted(durations)
    return Summary(
        n=len(s),
        p50=percentile(s, 50),
        p95=percentile(s, 95),
        p99=percentile(s, 99),
        mean=sum(s) / len(s),
        minimum=s[0],
        maximum=s[-1],
    )


@contextmanager
def stopwatch(label: str | None = None) -> Iterator[list[float]]:
    """Time a block; the elapsed seconds are appended to the yielded list (and printed with ``label``)."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)
        if label:
            print(f"  {label}: {out[0]:.1f} s", flush=True)


class Budget:
    """A wall-clock budget in seconds: scripts shorten their work rather than overrun it."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.monotonic() - self.start)

    def exhausted(self, reserve: float = 0.0) -> bool:
        return self.left() <= reserve


# -- PostgreSQL ------------------------------------------------------------------------------------------
def pg_admin_url() -> str:
    """Admin URL of the PostgreSQL server (``WORKBENCH_BENCH_PG_URL``, else the test suite's setting)."""
    return os.environ.get(
        "WORKBENCH_BENCH_PG_URL", os.environ.get("WORKBENCH_TEST_PG_URL", PG_ADMIN_URL_DEFAULT)
    )


@contextmanager
def throwaway_pg_database(prefix: str = "wbbench") -> Iterator[str]:
    """Create a fresh PostgreSQL database, yield its SQLAlchemy URL, and drop it afterwards (always).

    Raises RuntimeError with the reason when the server cannot be reached.
    """
    from sqlalchemy import create_engine, text

    admin_url = pg_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise RuntimeError(f"PostgreSQL is not reachable at {admin_url}: {exc}".splitlines()[0]) from None
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def psycopg_conninfo(sqlalchemy_url: str) -> str:
    """A libpq connection string for a ``postgresql+psycopg://`` SQLAlchemy URL (for COPY)."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_server_version(sqlalchemy_url: str) -> str:
    from sqlalchemy import create_engine, text

    eng = create_engine(sqlalchemy_url)
    try:
        with eng.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        eng.dispose()


# -- bulk loading ----------------------------------------------------------------------------------------
CASE_COLS = (
    "id, external_id, patient_id, pre_path, post_path, pre_sha256, post_sha256, pair_sha256, "
    "pre_width, pre_height, post_width, post_height, split, created_at"
)
SQLITE_TS = "2024-01-01 00:00:00.000000"  # how SQLAlchemy stores DateTime on SQLite


def case_rows(n: int, ts: object, split: str = "pool") -> Iterator[tuple[object, ...]]:
    """Cases 1..n for ``CASE_COLS``: unique external ids and pair hashes (64 hex digits, in id order)."""
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
            split,
            ts,
        )


def bulk_load(url: str, tables: Sequence[tuple[str, str, Iterable[tuple[object, ...]]]]) -> None:
    """Load ``(table, columns, rows)`` fast into an upgraded database with explicit ids.

    SQLite: executemany in ONE transaction on a plain sqlite3 connection (synchronous off for the load).
    PostgreSQL: ``COPY ... FROM STDIN`` per table, then each id sequence is moved past the loaded ids and
    the database is VACUUM ANALYZEd, as autovacuum would soon do after a bulk load. Timestamps must be
    ``SQLITE_TS`` strings on SQLite and datetimes on PostgreSQL.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache for the load
        conn.execute("BEGIN")
        for table, cols, rows in tables:
            marks = ", ".join("?" * (cols.count(",") + 1))
            it = iter(rows)
            while chunk := list(itertools.islice(it, 50_000)):
                conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", chunk)
        conn.execute("COMMIT")
        conn.close()
        return
    import psycopg

    with psycopg.connect(psycopg_conninfo(url)) as pg:
        pg.execute("SET synchronous_commit = off")
        with pg.cursor() as cur:
            for table, cols, rows in tables:
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
        pg.commit()
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")


@contextmanager
def bench_database(backend: str, prefix: str) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in a temp folder, or a throw-away PostgreSQL database."""
    import tempfile

    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}_") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
    elif backend == "postgresql":
        with throwaway_pg_database(prefix) as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


# -- docs/benchmarks.md ----------------------------------------------------------------------------------
DOC_INTRO = """# Benchmarks

Speed targets of the workbench are checked by the scripts in `bench/`, not by timed assertions in the
tests: each script prints figures measured in **one** run (medians and tails such as p95/p99 for
latencies, rates for throughput, ratios where it compares two things), and this page keeps the output of
the latest run of each. The reference machine is **shared and noisy** (2 cores used by other jobs too):
read single figures with that in mind; every section records the load average during its run.

Run everything (about 15 minutes on the reference machine, GPU check only where a GPU is visible):

```bash
make bench                       # = .venv/bin/python bench/run_all.py
.venv/bin/python bench/run_all.py --only queue,predictions,calibration
.venv/bin/python bench/run_all.py --list     # the scripts, their commands and time limits
```

`run_all.py` runs each script as a subprocess under a time limit and rewrites its section below
(between the `<!-- bench:NAME -->` markers) with the command and what it printed; sections of scripts
that were not run are left as they were. The PostgreSQL benchmarks create and drop their own database on
`WORKBENCH_BENCH_PG_URL` (default `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`).
"""


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"bad section name {name!r}")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def render_section(name: str, title: str, body: str) -> str:
    """A marked section: markers, a heading and ``body`` (markdown)."""
    start, end = _markers(name)
    return f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"


def code_block(text: str) -> str:
    """Fenced block that survives backticks inside ``text``."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def machine_section() -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in machine_description().items())
    body = (
        "The machine of the latest `run_all.py` run (each section below says when it was run).\n\n"
        f"| | |\n| --- | --- |\n{rows}"
    )
    return render_section("machine", "Machine", body)


def read_section(name: str, path: Path = DOC_PATH) -> str | None:
    """The current text of a section (markers included), or None when it is not there."""
    if not path.exists():
        return None
    start, end = _markers(name)
    text = path.read_text()
    m = re.search(re.escape(start) + r".*?" + re.escape(end), text, flags=re.S)
    return m.group(0) if m else None


def write_section(name: str, section: str, path: Path = DOC_PATH) -> None:
    """Replace the section ``name`` in the page (created with the intro when missing), or append it."""
    start, end = _markers(name)
    text = path.read_text() if path.exists() else DOC_INTRO
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), flags=re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")


def workbench(env: dict[str, str], *args: str) -> str:
    """Run ``workbench ARGS`` (the installed command of this venv) and return its output; fail loudly."""
    exe = Path(sys.executable).with_name("workbench")
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 3):  # 3: the version did not learn (reported, not fatal here)
        raise SystemExit(
            f"workbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def replay_data(folder: Path, args: Any) -> Path:
    """The label-efficiency benchmarks' data set (``synth``, 10% positive) from their shared options
    (``n``, ``data_seed``, ``size``, ``difficulty``, ``noise``), written into ``folder``; its manifest."""
    from workbench.data.synth import generate_dataset, parse_size

    data = generate_dataset(
        folder,
        n=args.n,
        positive_rate=0.1,
        seed=args.data_seed,
        size=parse_size(args.size),
        difficulty=args.difficulty,
        label_noise=args.noise,
    )
    return Path(data.manifest)
