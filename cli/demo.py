"""``workbench demo``: the main job on the embedded default, from nothing to a labelling queue in the UI.

Steps: schema -> synthetic pairs -> import -> a local worker on the configured broker -> a first
round through the job system (train -> infer -> calibrate -> queue) -> a demo admin user -> the UI.
Each step reuses what a previous run left (data set, imported cases, a finished round, the user),
so a second run goes straight to the UI. Ctrl-C stops the worker and the UI it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from workbench.active.labelling_queue import queue_progress
from workbench.actors import DEMO_OPERATOR
from workbench.data.importer import import_source
from workbench.data.summary import format_split_counts, split_counts
from workbench.data.synth import generate_dataset
from workbench.db import schema
from workbench.errors import ConflictError, WorkbenchError
from workbench.jobs import store
from workbench.jobs.submit import submit_job
from workbench.users import add_user, list_users
from workbench_cli.common import engine, handle_errors, settings
from workbench_cli.data import print_import_result
from workbench_cli.jobs import wait_for
from workbench_cli.ui import streamlit_command

DEMO_ADMIN = "demo-admin"
#: realistic: faint and small lesions among look-alikes (workbench synth). At the demo's size (500 pairs
#: at 128x128) the CPU preset learns it in its first round: validation AUROC 1.00 on 70 cases with 7
#: positive, 20 cases queued, about 5.5 minutes from the import to the queue on 2 cores (2026-11-30).
DEMO_DIFFICULTY = "realistic"


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_ready(log: Path, marker: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WorkbenchError(f"process exited early; see {log}")
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise WorkbenchError(f"not ready after {timeout:.0f} s; see {log}")


def _ensure_admin(eng, home: Path) -> str:  # type: ignore[no-untyped-def]
    """Create the demo admin once; its password is kept in the home folder (mode 600) and printed."""
    secret = home / "demo-admin-password.txt"
    if any(u.username == DEMO_ADMIN for u in list_users(eng)):
        return (
            secret.read_text().strip() if secret.exists() else "(set on the first run; see that run's output)"
        )
    password = secrets.token_urlsafe(12)
    add_user(eng, DEMO_ADMIN, password, "admin", actor=DEMO_OPERATOR)
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return password


@handle_errors
def demo(
    n: int = typer.Option(500, "--n", help="Synthetic pairs to generate."),
    unlabelled: float = typer.Option(
        0.3, "--unlabelled", help="Fraction of pairs without a label (the pool)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data and the training run."),
    difficulty: str = typer.Option(
        DEMO_DIFFICULTY, "--difficulty", help="Synthetic data: easy, realistic or hard (workbench synth)."
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        min=1,
        help="Training epochs of the first round (default: the CPU preset's, with early stopping).",
    ),
    batch_size: int = typer.Option(20, "--batch-size", min=1, help="Cases queued for labelling."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Start the UI at the end (and keep running)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65_535, help="UI port (default: setting)."),
) -> None:
    """Set up, generate and import synthetic pairs, run a first round with a local worker, open the UI."""
    cfg = settings()
    cfg.ensure_home()
    logs = cfg.home / "logs"
    typer.echo(f"workbench home: {cfg.home}")
    eng = engine(check_schema=False)
    before, after = schema.upgrade(eng)
    where = eng.url.render_as_string(hide_password=True)
    typer.echo(
        f"[1/6] database {where}: schema {after}" + ("" if before == after else f" (was {before or 'empty'})")
    )

    data_dir = cfg.home / "demo-data"
    summary = generate_dataset(
        data_dir,
        n=n,
        positive_rate=0.1,
        seed=seed,
        unlabelled_fraction=unlabelled,
        difficulty=difficulty,
    )
    typer.echo(
        f"[2/6] synthetic data ({difficulty}): {summary.n} pairs, {summary.positives} positive, "
        f"{summary.labelled} labelled, in {summary.root}"
    )
    result = import_source(eng, summary.manifest, requester=DEMO_OPERATOR, report_dir=cfg.home / "reports")
    typer.echo("[3/6] ", nl=False)
    print_import_result(result, verbose=False)
    typer.echo(format_split_counts(split_counts(eng)))

    procs: list[subprocess.Popen[bytes]] = []

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (and a service manager's SIGTERM) stop what the demo started, even when the shell that
    # launched it set SIGINT to be ignored (as it does for background jobs).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        # a round's labelling batch; pair-check items (suspect pairs found at import) are not one
        progress = queue_progress(eng, kinds=("label",))
        if progress["queued"] + progress["leased"] > 0:
            typer.echo(f"[4/6] a labelling queue exists ({progress['queued']} queued): no new round needed")
        else:
            exe = str(Path(sys.executable).parent / "workbench")
            worker_log = logs / "worker.log"
            typer.echo(f"[4/6] starting a local worker on {cfg.broker.split('://')[0]} (log: {worker_log})")
            worker = _start([exe, "worker", "-Q", "gpu,cpu", "-n", "demo-worker@local"], worker_log)
            procs.append(worker)
            _wait_ready(worker_log, " ready.", worker, timeout=120)
            from workbench_workers.app import send_job

            params = {"train": {"preset": "cpu", "epochs": epochs, "seed": seed}, "batch_size": batch_size}
            try:
                job_id = submit_job(
                    eng,
                    "round",
                    params,
                    requester=DEMO_OPERATOR,
                    send=send_job,
                    stale_after=cfg.heartbeat_stale,
                )
            except ConflictError:  # a round from an interrupted run: the new worker picks it up again
                job_id = store.active_job_of_kind(eng, "round")
            typer.echo(f"      round job {job_id}: train -> infer -> calibrate -> queue")
            view = wait_for(eng, job_id)
            if view.status != "succeeded":
                raise WorkbenchError(f"the round failed: {view.error or view.message}")
            if (view.result or {}).get("did_not_learn"):  # the UI still opens, to show why
                typer.echo(f"      warning: {view.result.get('message')}", err=True)
            _stop([worker])
            procs.remove(worker)
        password = _ensure_admin(eng, cfg.home)
        typer.echo(f"[5/6] demo admin user: {DEMO_ADMIN} / password: {password}")
        if not ui:
            typer.echo("[6/6] --no-ui: done")
            return
        chosen = port or cfg.ui_port
        ui_log = logs / "ui.log"
        server = _start(streamlit_command(chosen, "127.0.0.1"), ui_log)
        procs.append(server)
        _wait_ready(ui_log, "You can now view", server, timeout=120)
        typer.echo(f"[6/6] UI: http://127.0.0.1:{chosen}  (log: {ui_log}); Ctrl-C stops it")
        while server.poll() is None:
            time.sleep(1)
        raise WorkbenchError(f"the UI stopped; see {ui_log}")
    except KeyboardInterrupt:
        typer.echo("\nstopping what the demo started ...")
    finally:
        _stop(procs)
