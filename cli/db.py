"""``workbench db``: create, upgrade, downgrade and inspect the schema."""

from __future__ import annotations

import typer

from workbench.db import schema
from workbench_cli.common import engine, handle_errors

app = typer.Typer(help="Database schema: upgrade, downgrade, current revision.", no_args_is_help=True)


@app.command()
@handle_errors
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create the schema or upgrade it to the newest revision."""
    eng = engine(check_schema=False)
    before, after = schema.upgrade(eng, revision)
    where = eng.url.render_as_string(hide_password=True)
    if before == after:
        typer.echo(f"database {where} already at revision {after}")
    else:
        typer.echo(f"database {where} upgraded from {before or 'empty'} to {after}")


@app.command()
@handle_errors
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, or 'base' to drop all tables."),
) -> None:
    """Downgrade the schema (``base`` removes every workbench table and its data)."""
    eng = engine(check_schema=False)
    before, after = schema.downgrade(eng, revision)
    typer.echo(f"database downgraded from {before} to {after or 'base'}")


@app.command()
@handle_errors
def current() -> None:
    """Print the database's revision and the code's head revision."""
    eng = engine(check_schema=False)
    typer.echo(f"database: {schema.current_revision(eng) or 'empty'}  code head: {schema.head_revision(eng)}")
