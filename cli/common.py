"""Shared plumbing of the CLI: settings, a checked database engine, one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from workbench.actors import CLI_OPERATOR, Actor
from workbench.config import Settings, load_settings
from workbench.db.engine import engine_from_settings
from workbench.db.schema import ensure_current
from workbench.errors import WorkbenchError
from workbench.jobs.params import InferParams, TrainParams
from workbench.redaction import redact

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line to stderr and return the exit to raise."""
    typer.echo(f"error: {redact(message)}", err=True)
    return typer.Exit(code)


AS_HELP = (
    "Act as this registered user, with that user's role (default: the local operator, who may do "
    "anything: whoever runs this shell can read the settings and the database anyway)."
)

RANKER_HELP = (
    "Who ranks the pool: auto (the version, or the non-learned baseline when it ranks validation "
    "better by AUPRC), version, or baseline."
)


def acting(name: str | None) -> Actor:
    """Who a command acts as: the local operator, or with ``--as NAME`` the user NAME (role-checked)."""
    return CLI_OPERATOR if name is None else name


def settings() -> Settings:
    """Settings in effect (fresh read: the CLI is one process per command)."""
    return load_settings()


def engine(check_schema: bool = True) -> Engine:
    """Engine of the configured database; refuses a schema that is behind the code."""
    eng = engine_from_settings(settings())
    if check_schema:
        try:
            ensure_current(eng)
        except OperationalError as exc:
            raise WorkbenchError(f"cannot reach the database {eng.url!r}: {exc.orig}") from None
    return eng


def handle_errors(fn: F) -> F:
    """Turn expected failures into one line on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WorkbenchError as exc:
            raise fail(str(exc)) from None
        except OperationalError as exc:
            raise fail(f"database error: {str(exc.orig).strip().splitlines()[0]}") from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def parse_json_option(text: str | None, option: str) -> dict[str, Any]:
    """A JSON-object option value ({} when absent); one clear error naming the option otherwise."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{option}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise fail(f"{option}: expected a JSON object")
    return value


#: Options of scoring, shared by `workbench infer` (in process) and `workbench submit infer`.
SPLITS_OPTION = typer.Option(",".join(InferParams.default("splits")), help="Comma-separated splits to score.")
MC_SAMPLES_OPTION = typer.Option(
    InferParams.default("mc_samples"), min=0, help="MC-dropout passes for the uncertainty (0: none)."
)
BATCH_SIZE_OPTION = typer.Option(InferParams.default("batch_size"), min=1)


def infer_params(version: int, splits: str, mc_samples: int, batch_size: int) -> InferParams:
    """Validated parameters of scoring, the same for `workbench infer` and `submit infer`."""
    return InferParams.parse(
        dict(model_version=version, splits=splits.split(","), mc_samples=mc_samples, batch_size=batch_size)
    )


def train_params(
    preset: str,
    phases: int,
    epochs: int | None,
    fine_tune_epochs: int | None,
    imbalance: str,
    seed: int,
    parent: int | None,
    feature_cache: bool,
    overrides: str | None,
) -> TrainParams:
    """Validated parameters of a training run, the same for `workbench train` and `submit train`."""
    return TrainParams.parse(
        dict(
            preset=preset,
            phases=phases,
            epochs=epochs,
            fine_tune_epochs=fine_tune_epochs,
            imbalance=imbalance,
            seed=seed,
            parent_version=parent,
            use_feature_cache=feature_cache,
            overrides=parse_json_option(overrides, "--overrides"),
        )
    )
