"""``workbench queue``, ``workbench label``, ``workbench round``, ``workbench users``: the labelling loop."""

from __future__ import annotations

import json
import sys

import typer
from sqlalchemy import Engine

from workbench.active.building import build_queue
from workbench.active.cold_start import queue_cold_start
from workbench.active.guided import queue_guided
from workbench.active.labelling_queue import claim_next, queue_progress, skip, submit_label, undo_last
from workbench.actors import CLI_OPERATOR
from workbench.calibration.thresholds import VALID_FORMS
from workbench.errors import WorkbenchError
from workbench.jobs.params import QueueParams, RoundParams, TrainParams
from workbench.rounds import ensure_no_active_round, round_summary, trigger_round_if_due
from workbench.users import add_user, approve_user, authorize, list_users, set_active
from workbench_cli.common import (
    AS_HELP,
    RANKER_HELP,
    acting,
    engine,
    fail,
    handle_errors,
    parse_json_option,
    settings,
)
from workbench_cli.jobs import _submit

queue_app = typer.Typer(help="Build and inspect the labelling queue.", no_args_is_help=True)
round_app = typer.Typer(help="Active-learning rounds: start one, see what it bought.", no_args_is_help=True)
users_app = typer.Typer(help="Users and roles (labeller, admin).", no_args_is_help=True)

KEYS = {"n": 0, "p": 1, "u": None}


@queue_app.command("build")
@handle_errors
def queue_build(
    version: int = typer.Argument(..., help="A calibrated model version with pool predictions."),
    batch_size: int = typer.Option(QueueParams.default("batch_size"), min=1, help="Cases to queue."),
    mix: str | None = typer.Option(
        None,
        help='Strategy mix as JSON, e.g. \'{"near_threshold": 0.35, "likely_positive": 0.5, "random": 0.15}\'.',
    ),
    second_reads: int = typer.Option(
        QueueParams.default("second_reads"),
        min=0,
        help="Also queue this many second reads near the threshold.",
    ),
    relabel: int = typer.Option(
        QueueParams.default("relabel"), min=0, help="Also queue this many possible label errors for review."
    ),
    seed: int = typer.Option(QueueParams.default("seed")),
    ranker: str = typer.Option(
        QueueParams.default("ranker"),
        help=RANKER_HELP,
    ),
) -> None:
    """Queue the most informative unlabelled pool cases (each with why it was chosen)."""
    p = QueueParams.parse(
        dict(
            model_version=version,
            batch_size=batch_size,
            mix=parse_json_option(mix, "--mix") or None,
            second_reads=second_reads,
            relabel=relabel,
            seed=seed,
            ranker=ranker,
        )
    )
    result = build_queue(
        engine(),
        settings(),
        p.model_version,
        p.batch_size,
        mix=p.mix,
        second_reads=p.second_reads,
        relabel=p.relabel,
        seed=p.seed,
        ranker=p.ranker,
    )
    typer.echo(json.dumps(result, indent=1))


@queue_app.command("cold-start")
@handle_errors
def queue_cold_start_command(
    n: int = typer.Option(..., "--n", help="Cases to queue (one per k-means cluster of the pool)."),
    seed: int = typer.Option(0, help="Seed of the k-means clustering."),
) -> None:
    """Round 0, no model yet: queue N typical, diverse pool cases (TypiClust).

    k-means of the unlabelled pool's label-free pair features into N clusters; the most typical case
    of each is queued for labelling, with a reason naming its cluster and typicality."""
    typer.echo(json.dumps(queue_cold_start(engine(), settings(), n, seed), indent=1))


@queue_app.command("guided")
@handle_errors
def queue_guided_command(
    n: int = typer.Option(..., "--n", help="Cases to queue."),
    mix: str | None = typer.Option(None, help="Strategy mix as JSON (default: the production mix)."),
    policy: str = typer.Option(RoundParams.default("policy"), help="Threshold policy, chosen on val."),
    seed: int = typer.Option(0, help="Seed of the mix's random draws."),
) -> None:
    """No model has learned yet, but labels exist: queue N pool cases chosen by the non-learned baseline.

    The hand-written pair score is fitted on the labelled train/pool cases; the mix picks near the
    policy's threshold (chosen on validation), likely positives and a random audit slice. A round whose
    version did not learn queues this batch itself; with fewer than 2 labels of a class it is the cold
    start."""
    shares = parse_json_option(mix, "--mix") or None
    typer.echo(
        json.dumps(queue_guided(engine(), settings(), n, mix=shares, policy=policy, seed=seed), indent=1)
    )


@queue_app.command("status")
@handle_errors
def queue_status(
    round_number: int | None = typer.Option(None, "--round", help="Round id (default: all)."),
) -> None:
    """Counts of queued, leased and done items, and positives found."""
    typer.echo(json.dumps(queue_progress(engine(), round_number), indent=1))


@handle_errors
def label(
    labeller: str = typer.Option(..., "--as", help="Your user name (a registered, active user)."),
    lease_seconds: int | None = typer.Option(None, min=10, help="Lease length (default: the setting)."),
) -> None:
    """Terminal labelling loop for headless servers: n=negative p=positive u=unsure s=skip z=undo q=quit."""
    eng = engine()
    authorize(eng, labeller, "label")
    lease = lease_seconds or settings().lease_seconds
    while True:
        item = claim_next(eng, labeller, lease_seconds=lease)
        if item is None:
            typer.echo("the queue is empty: an admin can start a round (`workbench submit round`)")
            return
        score = f"{item.score:.3f}" if item.score is not None else "-"
        typer.echo(
            f"\ncase {item.external_id} [{item.kind}, {item.strategy}: {item.reason or ''}] score {score}\n"
            f"  pre:  {item.pre_path}\n  post: {item.post_path}"
        )
        while True:
            key = typer.prompt("[n]egative [p]ositive [u]nsure [s]kip [z] undo [q]uit").strip().lower()[:1]
            if key in KEYS:
                result = submit_label(eng, item.item_id, labeller, KEYS[key])
                typer.echo(
                    f"recorded {['negative', 'positive'][result.value] if result.value is not None else 'unsure'}"
                )
                if result.value is not None and not result.duplicate:
                    _trigger_round(eng)
                break
            if key == "s":
                skip(eng, item.item_id, labeller)
                typer.echo("skipped: the case goes to someone else")
                break
            if key == "z":
                undone = undo_last(eng, labeller)
                typer.echo("undid your last label" if undone else "nothing to undo")
                break
            if key == "q":
                typer.echo(f"bye; your lease on {item.external_id} lapses in {lease} s unless you come back")
                return
            typer.echo("keys: n p u s z q")


def _trigger_round(eng: Engine) -> None:
    """After an expert label: start the automatic round when it is due (WORKBENCH_RETRAIN_AFTER_LABELS);
    a broker that cannot take it is reported, the label stays saved."""
    cfg = settings()
    if cfg.retrain_after_labels <= 0:
        return
    from workbench_workers.app import send_job

    try:
        job_id = trigger_round_if_due(eng, cfg, send_job)
    except WorkbenchError as exc:
        typer.echo(f"warning: the label is saved, but the automatic round could not start: {exc}", err=True)
        return
    if job_id is not None:
        typer.echo(
            f"round job {job_id} started automatically after {cfg.retrain_after_labels} new expert labels"
        )


@round_app.command("start")
@handle_errors
def round_start(
    preset: str = typer.Option(TrainParams.default("preset")),
    epochs: int | None = typer.Option(TrainParams.default("epochs"), min=1),
    batch_size: int = typer.Option(RoundParams.default("batch_size"), min=1),
    policy: str = typer.Option(RoundParams.default("policy"), help=f"Threshold policy: {VALID_FORMS}."),
    seed: int = typer.Option(TrainParams.default("seed")),
    cold: bool = typer.Option(False, "--cold", help="Train from scratch instead of warm-starting."),
    ranker: str = typer.Option(
        RoundParams.default("ranker"),
        help=RANKER_HELP,
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait"),
    requester: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Start a round (train -> infer -> calibrate -> queue) through the workers; refused if one runs."""
    ensure_no_active_round(engine())
    params = RoundParams.parse(
        dict(
            train=dict(preset=preset, epochs=epochs, seed=seed),
            batch_size=batch_size,
            policy=policy,
            warm_start=not cold,
            ranker=ranker,
        )
    )
    _submit("round", params, acting(requester), wait)


@round_app.command("status")
@handle_errors
def round_status(
    round_id: int | None = typer.Argument(None, help="Round id (default: the latest)."),
    stopping: bool = typer.Option(
        True, "--stopping/--no-stopping", help="Include the stopping signal (reads predictions, bootstraps)."
    ),
) -> None:
    """What a round bought: labels, positive yield vs the pool's base rate and the random audit slice,
    and whether labels are still paying (JSON on stdout; the stopping verdict and its reasons also on
    stderr, for reading)."""
    summary = round_summary(engine(), round_id, stopping=stopping)
    typer.echo(json.dumps(summary, indent=1, default=str))
    block = summary.get("stopping")
    if block:
        lines = [f"when to stop labelling (round {summary['round']}): {block['verdict']}"]
        lines += [f"  - {reason}" for reason in block["reasons"]]
        typer.echo("\n".join(lines), err=True)


PASSWORD_IN_ARGV = (
    "--password is not accepted: a password on the command line is visible to every user of this "
    "machine (process list) and kept in shell history; type it at the prompt, or pipe it with "
    "--password-stdin"
)


def read_password(from_stdin: bool) -> str:
    """The new user's password: the first line of standard input, or typed twice at a hidden prompt."""
    if not from_stdin:
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise fail("--password-stdin: standard input held no password (expected it on the first line)")
    return password


@users_app.command("add")
@handle_errors
def users_add(
    username: str,
    role: str = typer.Option("labeller", help="labeller or admin."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of standard input (scripts)."
    ),
    password_argv: str | None = typer.Option(None, "--password", hidden=True, help=PASSWORD_IN_ARGV),
) -> None:
    """Add a user: password typed twice at a hidden prompt or piped (--password-stdin), never in argv."""
    if password_argv is not None:
        raise fail(PASSWORD_IN_ARGV)
    user = add_user(engine(), username, read_password(password_stdin), role, actor=CLI_OPERATOR)
    typer.echo(f"added {user.role} {user.username}")


@users_app.command("list")
@handle_errors
def users_list() -> None:
    """Users, roles and whether they are active."""
    for u in list_users(engine()):
        state = "pending approval" if u.pending else "active" if u.active else "disabled"
        typer.echo(f"{u.username:<24} {u.role:<9} {state}")


@users_app.command("disable")
@handle_errors
def users_disable(username: str) -> None:
    """Disable a user: no login, no actions (history kept)."""
    set_active(engine(), username, False, actor=CLI_OPERATOR)
    typer.echo(f"disabled {username}")


@users_app.command("enable")
@handle_errors
def users_enable(username: str) -> None:
    """Re-enable a disabled user."""
    set_active(engine(), username, True, actor=CLI_OPERATOR)
    typer.echo(f"enabled {username}")


@users_app.command("approve")
@handle_errors
def users_approve(username: str) -> None:
    """Approve an account created by a first OIDC login: it becomes an active labeller."""
    user = approve_user(engine(), username, actor=CLI_OPERATOR)
    typer.echo(f"approved {user.username} ({user.role})")
