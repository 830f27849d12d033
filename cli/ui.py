"""``workbench ui``: start the Streamlit UI (``streamlit run ui/app.py``) on the configured port."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from cli.common import engine, handle_errors, settings

APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


def streamlit_command(port: int, host: str) -> list[str]:
    """The command line that serves the UI (headless, no usage statistics)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.runOnSave",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


@handle_errors
def ui(
    port: int | None = typer.Option(
        None, "--port", "-p", min=1, max=65_535, help="Port (default: WORKBENCH_UI_PORT)."
    ),
    host: str = typer.Option(
        "0.0.0.0", "--host", help="Address to listen on (127.0.0.1: this machine only)."
    ),
) -> None:
    """Serve the web UI (Label, Jobs, Calibration, Models, Data); refuses an out-of-date database schema."""
    cfg = settings()
    engine().dispose()  # one clear line now if the database is unreachable or behind, not in the browser
    chosen = port if isinstance(port, int) else cfg.ui_port  # called directly: typer defaults are not values
    host = host if isinstance(host, str) else "0.0.0.0"
    typer.echo(f"workbench UI on http://{'localhost' if host in ('0.0.0.0', '::') else host}:{chosen}")
    sys.stdout.flush()
    cmd = streamlit_command(chosen, host)
    os.execv(cmd[0], cmd)  # the UI process replaces this one, so signals reach Streamlit directly
