"""Shared plumbing of the CLI: settings, a checked database engine, one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from workbench.config import Settings, load_settings
from workbench.db.engine import engine_from_settings
from workbench.db.schema import ensure_current
from workbench.errors import WorkbenchError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


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
