"""``workbench worker``, ``workbench submit ...`` and ``workbench jobs ...``: the job system from a shell."""

from __future__ import annotations

import json
import socket
import sys
import time
from datetime import timedelta

import typer
from sqlalchemy import Engine
from tqdm import tqdm

from workbench.actors import Actor
from workbench.calibration.thresholds import VALID_FORMS
from workbench.jobs import store
from workbench.jobs.kinds import QUEUES
from workbench.jobs.params import JobParams, RoundParams, SleepParams, TrainParams
from workbench.jobs.submit import submit_job
from workbench_cli.common import (
    AS_HELP,
    BATCH_SIZE_OPTION,
    MC_SAMPLES_OPTION,
    RANKER_HELP,
    SPLITS_OPTION,
    acting,
    engine,
    fail,
    handle_errors,
    infer_params,
    parse_json_option,
    settings,
    train_params,
)

jobs_app = typer.Typer(help="List, inspect, cancel and recover jobs.", no_args_is_help=True)
submit_app = typer.Typer(help="Submit a job to the workers (prints the job id).", no_args_is_help=True)


@handle_errors
def worker(
    queues: str = typer.Option("gpu,cpu", "--queues", "-Q", help="Comma-separated queues: gpu, cpu."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, max=64, help="Child processes."),
    name: str | None = typer.Option(None, "--name", "-n", help="Worker node name (stable across restarts)."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
) -> None:
    """Start a Celery worker on the configured broker (one task per child process)."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in wanted if q not in QUEUES]
    if bad or not wanted:
        raise fail(f"--queues: unknown queue(s) {', '.join(bad) or queues!r} (use gpu, cpu)")
    engine()  # refuse an old schema before starting
    from workbench_workers.app import get_app

    node = name or f"workbench-{'-'.join(wanted)}@{socket.gethostname()}"
    get_app().worker_main(
        [
            "worker",
            "-Q",
            ",".join(wanted),
            "-c",
            str(concurrency),
            "-n",
            node,
            "-l",
            loglevel,
            "--pool",
            "prefork",
        ]
    )


def _submit(kind: str, params: JobParams, requester: Actor, wait: bool) -> None:
    from workbench_workers.app import send_job

    eng = engine()
    job_id = submit_job(
        eng, kind, params, requester=requester, send=send_job, stale_after=settings().heartbeat_stale
    )
    typer.echo(f"submitted {kind} job {job_id}")
    if wait:
        view = wait_for(eng, job_id)
        if view.status != "succeeded":
            raise fail(f"job {job_id} {view.status}: {view.error or view.message or ''}".strip())
        if (view.result or {}).get("did_not_learn"):  # the version is kept but not ready (exit 3)
            raise fail(f"job {job_id}: {view.result.get('message') or view.message}", code=3)


def wait_for(eng: Engine, job_id: int, poll_s: float = 1.0) -> store.JobView:
    """Show progress from the job row until the job ends (Ctrl-C stops waiting, not the job).

    On a terminal: a tqdm bar; otherwise (logs, CI) one line each time the message changes.
    """
    view = store.get_job(eng, job_id)
    tty = sys.stderr.isatty()
    try:
        bar = (
            tqdm(total=100, desc=f"{view.kind} #{job_id}", unit="%", bar_format="{l_bar}{bar}| {postfix}")
            if tty
            else None
        )
        last = None
        while True:
            view = store.get_job(eng, job_id)
            text = f"{view.status} {view.message or ''}".strip()
            if bar is not None:
                bar.n = round(view.progress * 100, 1)
                bar.set_postfix_str(text[:80])
                bar.refresh()
            elif text != last:
                typer.echo(f"[{view.progress:4.0%}] {view.kind} #{job_id} {text}", err=True)
                last = text
            if view.done:
                break
            time.sleep(poll_s)
        if bar is not None:
            bar.close()
    except KeyboardInterrupt:
        typer.echo(
            f"\nstopped waiting; job {job_id} goes on (workbench jobs cancel {job_id} stops it)", err=True
        )
        raise typer.Exit(130) from None
    typer.echo(f"job {job_id} {view.status}" + (f": {json.dumps(view.result)}" if view.result else ""))
    return view


@submit_app.command("train")
@handle_errors
def submit_train(
    preset: str = typer.Option(TrainParams.default("preset"), help="Model preset: cpu or card."),
    phases: int = typer.Option(
        TrainParams.default("phases"), min=1, max=2, help="1: head (and scratch backbone); 2: then fine-tune."
    ),
    epochs: int | None = typer.Option(
        TrainParams.default("epochs"), min=1, help="Phase-1 epochs (default: the preset's)."
    ),
    fine_tune_epochs: int | None = typer.Option(
        TrainParams.default("fine_tune_epochs"), min=1, help="Phase-2 epochs."
    ),
    imbalance: str = typer.Option(
        TrainParams.default("imbalance"), help="class_weight, balanced, focal or none."
    ),
    seed: int = typer.Option(TrainParams.default("seed")),
    parent: int | None = typer.Option(
        TrainParams.default("parent_version"), help="Warm-start from this model version."
    ),
    feature_cache: bool = typer.Option(
        TrainParams.default("use_feature_cache"),
        "--feature-cache",
        help="Train the head on cached backbone features.",
    ),
    overrides: str | None = typer.Option(
        None, help='JSON of config overrides, e.g. \'{"model": {"dropout": 0.3}}\'.'
    ),
    wait: bool = typer.Option(False, "--wait", help="Show progress until the job ends."),
    requester: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Train a model version."""
    params = train_params(
        preset, phases, epochs, fine_tune_epochs, imbalance, seed, parent, feature_cache, overrides
    )
    _submit("train", params, acting(requester), wait)


@submit_app.command("infer")
@handle_errors
def submit_infer(
    version: int = typer.Argument(..., help="Model version id."),
    splits: str = SPLITS_OPTION,
    mc_samples: int = MC_SAMPLES_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    wait: bool = typer.Option(False, "--wait"),
    requester: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Score cases with a model version (resumable)."""
    _submit("infer", infer_params(version, splits, mc_samples, batch_size), acting(requester), wait)


@submit_app.command("round")
@handle_errors
def submit_round(
    preset: str = typer.Option(TrainParams.default("preset")),
    epochs: int | None = typer.Option(TrainParams.default("epochs"), min=1),
    batch_size: int = typer.Option(
        RoundParams.default("batch_size"), min=1, help="Cases to queue for labelling."
    ),
    policy: str = typer.Option(RoundParams.default("policy"), help=f"Threshold policy: {VALID_FORMS}."),
    seed: int = typer.Option(TrainParams.default("seed")),
    overrides: str | None = typer.Option(None, help="JSON of model/train config overrides."),
    ranker: str = typer.Option(
        RoundParams.default("ranker"),
        help=RANKER_HELP,
    ),
    wait: bool = typer.Option(False, "--wait"),
    requester: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """One active-learning round: train -> infer -> calibrate -> queue."""
    train = dict(
        preset=preset, epochs=epochs, seed=seed, overrides=parse_json_option(overrides, "--overrides")
    )
    params = RoundParams.parse(dict(train=train, batch_size=batch_size, policy=policy, ranker=ranker))
    _submit("round", params, acting(requester), wait)


@submit_app.command("sleep", hidden=True)
@handle_errors
def submit_sleep(
    seconds: float = typer.Option(SleepParams.default("seconds")),
    steps: int = typer.Option(SleepParams.default("steps")),
    fail_at_end: bool = typer.Option(False, "--fail"),
    crash: bool = typer.Option(False, "--crash"),
    wait: bool = typer.Option(False, "--wait"),
    requester: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Diagnostic job that sleeps in steps (admins and the local operator only)."""
    params = SleepParams.parse(dict(seconds=seconds, steps=steps, fail=fail_at_end, crash=crash))
    _submit("sleep", params, acting(requester), wait)


@jobs_app.command("list")
@handle_errors
def jobs_list(
    status: str | None = typer.Option(None, help="Only jobs with this status."),
    limit: int = typer.Option(30, min=1),
) -> None:
    """Recent jobs, newest first."""
    rows = store.list_jobs(engine(), status=status, limit=limit)
    typer.echo(f"{'id':>5} {'kind':<10} {'status':<10} {'progress':>8}  {'requester':<12} message")
    for j in rows:
        text = j.error.splitlines()[0] if j.error else (j.message or "")
        typer.echo(f"{j.id:>5} {j.kind:<10} {j.status:<10} {j.progress:>7.0%}  {j.requester:<12} {text[:70]}")


@jobs_app.command("show")
@handle_errors
def jobs_show(job_id: int) -> None:
    """Everything stored about one job."""
    j = store.get_job(engine(), job_id)
    for key, value in j.__dict__.items():
        typer.echo(f"{key:<17} {json.dumps(value, default=str) if isinstance(value, dict) else value}")


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: int, actor: str | None = typer.Option(None, "--as", help=AS_HELP)) -> None:
    """Ask a job to stop (a running job stops at its next batch)."""
    j = store.request_cancel(engine(), job_id, actor=acting(actor))
    typer.echo(
        f"job {job_id}: {'cancelled' if j.status == 'cancelled' else 'cancel requested (stops at the next batch)'}"
    )


@jobs_app.command("recover")
@handle_errors
def jobs_recover(
    stale_minutes: float | None = typer.Option(
        None, min=0.1, help="Running jobs silent this long are lost (default: WORKBENCH_HEARTBEAT_STALE_S)."
    ),
) -> None:
    """Re-send running jobs whose worker stopped reporting (attempts stay capped)."""
    from workbench_workers.app import send_job

    eng = engine()
    stale = (
        timedelta(minutes=stale_minutes) if isinstance(stale_minutes, float) else settings().heartbeat_stale
    )
    lost = store.requeue_lost(eng, stale_after=stale)
    for job_id in lost:
        j = store.get_job(eng, job_id)
        store.set_task_id(eng, job_id, send_job(job_id, j.kind, j.queue or "cpu"))
    typer.echo(f"re-sent {len(lost)} job(s): {lost}" if lost else "no lost jobs")
