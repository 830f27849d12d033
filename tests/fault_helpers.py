"""Fault-injection plumbing: throw-away PostgreSQL and Redis servers the tests may stop, a watch
that kills a worker at a chosen step of a job, a scripted labelling session, and the invariants
every fault must leave intact (no job left running, no unverified ready version, no label twice).

Kill points are exact: the task process is stopped (SIGSTOP) while the database is read, so the
kill lands in the state the test saw. The servers belong to the test that starts them (their own
port and data folder), so restarting them never disturbs the shared PostgreSQL and Redis that
other test sessions use at the same time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from workbench.db.engine import session_scope
from workbench.db.models import Job, Label, ModelVersion
from workbench.files import sha256_file
from workbench.jobs import store

# Where measured rows go when set (docs/reliability.md's table is made from them). Not a WORKBENCH_
# name: the settings refuse unknown WORKBENCH_ variables.
REPORT_ENV = "FAULTS_REPORT"


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Poll ``check`` until it holds; seconds waited, or AssertionError naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb into a temporary folder), run as the ``postgres`` user
    when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="wb-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        from sqlalchemy import create_engine

        eng = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, as when the server is restarted under load."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin / tool), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else cmd

    def _run(self, tool: str, *args: str) -> None:
        res = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr or res.stdout}")


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb is not installed (needed for a throw-away server)")
    return Path(initdb).parent


class RedisServer:
    """A Redis server of its own, persisting as docker-compose's does (``--appendonly yes``)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wb-faults-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)]
            + ["--appendonly", "yes", "--save", "", "--logfile", str(self.root / "log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(f"redis on port {self.port}", self.ping, timeout=30, interval=0.05)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Stop the server the way a restart does (SIGTERM: it writes its append-only file and exits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def read_engine(engine: Engine) -> Engine:
    """A plain engine on the same database for watching it: on SQLite without the workbench's BEGIN
    IMMEDIATE, so reading never waits for (or blocks) a writer."""
    return create_engine(engine.url)


def pause(pids: list[int]) -> list[int]:
    """SIGSTOP each process still alive; the ones stopped."""
    stopped = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    return stopped


def resume(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def kill_at(
    reader: Engine,
    ready: Callable[[Session], int | None],
    kill: Callable[[], None],
    pids: Callable[[], list[int]],
    *,
    gate: Callable[[Session], bool] | None = None,
    timeout: float = 300,
) -> tuple[float, int]:
    """Kill (``kill()``) the moment ``ready`` names a job; the monotonic time of the kill and that id.

    The task processes (``pids()``) are stopped (SIGSTOP) while the database is read, so nothing
    moves between the check and the kill: the kill lands in exactly the state read. Until ``gate``
    holds they run 50 ms between checks, then 5 ms, so a step lasting a few milliseconds is still
    caught.
    """
    deadline = time.monotonic() + timeout
    fine = gate is None
    while time.monotonic() < deadline:
        stopped = pause(pids())
        try:
            with Session(reader) as s:
                fine = fine or bool(gate is not None and gate(s))
                job_id = ready(s)
            if job_id is not None:
                kill()
                return time.monotonic(), job_id
        finally:
            resume(stopped)
        time.sleep(0.005 if fine and gate is not None else 0.05)
    raise AssertionError(f"the kill point was not reached within {timeout:.0f} s")


@contextmanager
def jobs_locked(engine: Engine) -> Iterator[None]:
    """PostgreSQL: no job row can change (progress, heartbeat, finish) until the block ends, while
    other tables stay writable; so a step's own writes land but its finish waits."""
    with session_scope(engine) as s:
        s.execute(text("LOCK TABLE jobs IN EXCLUSIVE MODE"))
        yield


def step_running(parent_id: int, kind: str, message_has: str = "") -> Callable[[Session], int | None]:
    """A kill point: the ``kind`` step of chained job ``parent_id`` is running and its message says
    ``message_has``; the step's job id."""

    def check(s: Session) -> int | None:
        row = s.execute(
            select(Job.id, Job.message).where(
                Job.parent_id == parent_id, Job.kind == kind, Job.status == "running"
            )
        ).first()
        return row.id if row is not None and message_has in (row.message or "") else None

    return check


def job_running(job_id: int, message_has: str = "") -> Callable[[Session], int | None]:
    """A kill point: job ``job_id`` is running and its message says ``message_has``; its id."""

    def check(s: Session) -> int | None:
        row = s.execute(select(Job.status, Job.message).where(Job.id == job_id)).one()
        return job_id if row.status == "running" and message_has in (row.message or "") else None

    return check


def wait_job(
    engine: Engine,
    job_id: int,
    until: Callable[[store.JobView], bool],
    timeout: float,
    log: Callable[[], str],
) -> store.JobView:
    """The job's row once ``until`` holds for it; AssertionError with the worker's log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(engine, job_id)
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: {store.get_job(engine, job_id)}\n{log()[-4000:]}")


@dataclass
class Invariants:
    """What every fault must leave: counts that must all be zero."""

    running_jobs: list[int] = field(default_factory=list)
    unverified_ready_versions: list[int] = field(default_factory=list)
    duplicate_labels: list[tuple[int, str]] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.running_jobs, f"jobs left running: {self.running_jobs}"
        assert not self.unverified_ready_versions, (
            f"ready versions without a verified artifact: {self.unverified_ready_versions}"
        )
        assert not self.duplicate_labels, f"(case, labeller) labelled twice: {self.duplicate_labels}"


def invariants(engine: Engine) -> Invariants:
    """Jobs still running, ready versions whose artifact is missing or not the recorded sha256, and
    expert answers recorded twice for one case by one labeller (a correction in between excepted)."""
    out = Invariants()
    with session_scope(engine) as s:
        out.running_jobs = list(s.scalars(select(Job.id).where(Job.status.in_(("running", "queued")))))
        for vid, uri, digest in s.execute(
            select(ModelVersion.id, ModelVersion.artifact_uri, ModelVersion.artifact_sha256).where(
                ModelVersion.status == "ready"
            )
        ):
            if not uri or not Path(uri).is_file() or sha256_file(Path(uri)) != digest:
                out.unverified_ready_versions.append(vid)
        corrections = set(
            s.execute(select(Label.case_id, Label.labeller).where(Label.source == "correction")).all()
        )
        out.duplicate_labels = [
            (case_id, who)
            for case_id, who, n in s.execute(
                select(Label.case_id, Label.labeller, func.count())
                .where(Label.source.in_(("expert", "adjudication")))
                .group_by(Label.case_id, Label.labeller)
            )
            if n > 1 and (case_id, who) not in corrections
        ]
    return out


def record(fault: str, backend: str, outcome: str, recover_s: float | None) -> None:
    """Append one measured row to the fault table file named by ``FAULTS_REPORT`` (if set)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    row = {"fault": fault, "backend": backend, "outcome": outcome, "recover_s": recover_s}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


class LabelSession:
    """A real ``workbench label --as NAME`` process, typed into through its stdin as a labeller would."""

    PROMPT = "[n]egative [p]ositive"

    def __init__(self, labeller: str) -> None:
        import sys
        import threading

        exe = Path(sys.executable).parent / "workbench"
        self.proc = subprocess.Popen(
            [str(exe), "label", "--as", labeller],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out, self.err = bytearray(), bytearray()
        self._seen = 0
        for stream, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=_drain, args=(stream, buf), daemon=True).start()

    def next_case(self, timeout: float = 60) -> str:
        """The external id of the next case shown, once its prompt is up."""
        text = self.expect(self.PROMPT, timeout)
        return text.rsplit("\ncase ", 1)[1].split()[0]

    def expect(self, wanted: str, timeout: float = 60) -> str:
        """The output since the last expectation, up to and including ``wanted``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.decode(errors="replace")
            at = text.find(wanted, self._seen)
            if at >= 0:
                chunk, self._seen = text[self._seen : at + len(wanted)], at + len(wanted)
                return "\n" + chunk
            if self.proc.poll() is not None and text.find(wanted, self._seen) < 0:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no {wanted!r} in the session's output:\n{self.out.decode()}\n{self.err.decode()}"
        )

    def answer(self, key: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{key}\n".encode())
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Exit status and standard error, once the process ended."""
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.1)  # the drain threads catch up
        return rc, self.err.decode(errors="replace")


def _drain(stream, buf: bytearray) -> None:  # type: ignore[no-untyped-def]
    while chunk := os.read(stream.fileno(), 4096):
        buf.extend(chunk)
