"""Shared fixtures: real SQLite and PostgreSQL databases (a throw-away one per test session), real files."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from workbench.db.engine import create_db_engine
from workbench.db.schema import upgrade

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "WORKBENCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("WORKBENCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's real settings: a fresh home, no stray WORKBENCH_ variables."""
    for key in list(os.environ):
        if key.startswith("WORKBENCH_") and not key.startswith("WORKBENCH_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    from workbench.config import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A throw-away PostgreSQL database for this test session (created here, dropped at the end)."""
    name = f"wbtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the suite must not silently skip PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_pg(url: str) -> None:
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    _reset_pg(pg_server_url)
    return pg_server_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database test runs on SQLite (embedded default) and on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an upgraded (current) schema."""
    eng = create_db_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real ``workbench`` console script in a subprocess (as a user would)."""
    full_env = {k: v for k, v in os.environ.items()}
    full_env.update(env or {})
    exe = Path(sys.executable).parent / "workbench"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


class WorkerProcess:
    """A real ``workbench worker`` process (Celery prefork) with its own log file."""

    def __init__(
        self, env: dict[str, str], log_path: Path, queues: str = "gpu,cpu", name: str = "testworker@local"
    ):
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.queues = queues
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> WorkerProcess:
        import time

        exe = Path(sys.executable).parent / "workbench"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(exe), "worker", "-Q", self.queues, "-n", self.name, "-l", "INFO"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-3000:]}")
            if " ready." in self.log_path.read_text(errors="replace")[offset:]:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and children), as a crash or the OOM killer would."""
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def children(self) -> list[int]:
        """Pids of the worker's child (pool) processes."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(x) for x in out.stdout.split()]


def flush_redis_db(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@dataclass
class Stack:
    """A workbench with an upgraded database and a running worker: its environment, worker and engine."""

    env: dict[str, str]
    worker: WorkerProcess
    engine: Engine


@pytest.fixture(params=["sqlite-broker", "redis-broker"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The embedded default (SQLite database + SQLite broker), and PostgreSQL + the real Redis server."""
    from workbench.config import load_settings
    from workbench.db.engine import engine_from_settings

    env = {"WORKBENCH_HOME": str(tmp_path / "home")}
    if request.param == "redis-broker":
        env["WORKBENCH_DATABASE_URL"] = request.getfixturevalue("pg_url")
        env["WORKBENCH_BROKER_URL"] = REDIS_URL
        flush_redis_db(REDIS_URL)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    eng = engine_from_settings(load_settings())
    upgrade(eng)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    yield Stack(env, worker, eng)
    worker.stop()
    eng.dispose()


# tests/unit holds the tests that need no service, worker or browser (`make test-fast`, about a minute);
# collection stops with a clear error when one of them asks for a service fixture.
UNIT_DIR = Path(__file__).resolve().parent / "unit"
SERVICE_FIXTURES = frozenset({"pg_server_url", "pg_url", "db_url", "engine", "stack"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrong = [
        f"{item.nodeid} ({', '.join(sorted(SERVICE_FIXTURES & set(getattr(item, 'fixturenames', ()))))})"
        for item in items
        if Path(str(item.fspath)).is_relative_to(UNIT_DIR)
        and SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    if wrong:
        raise pytest.UsageError("unit tests use no services; move to tests/integration: " + "; ".join(wrong))
