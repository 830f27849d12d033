"""``workbench ui``: start the Streamlit UI (``streamlit run ui/app.py``) on the configured address and port.

It listens on 127.0.0.1 (this machine only) unless ``WORKBENCH_UI_HOST`` or ``--host`` says otherwise:
the UI shows patient images, so exposing it on every interface is a decision, not a default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

import workbench_ui
from workbench.config import check_listen_host
from workbench_cli.common import engine, fail, handle_errors, settings

APP = Path(workbench_ui.__file__).resolve().parent / "app.py"  # the installed package, wherever it lies


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
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address to listen on (default: WORKBENCH_UI_HOST, 127.0.0.1: this machine only; 0.0.0.0: "
        "every interface).",
    ),
) -> None:
    """Serve the web UI (Label, Jobs, Calibration, Models, Data); refuses an out-of-date database schema."""
    cfg = settings()
    try:
        chosen_host = check_listen_host(host) if isinstance(host, str) else cfg.ui_host
    except ValueError as exc:
        raise fail(f"--host: {exc}") from None
    engine().dispose()  # one clear line now if the database is unreachable or behind, not in the browser
    chosen = port if isinstance(port, int) else cfg.ui_port  # called directly: typer defaults are not values
    shown = "localhost" if chosen_host in ("0.0.0.0", "::") else chosen_host
    typer.echo(f"workbench UI on http://{shown}:{chosen} (listening on {chosen_host})")
    sys.stdout.flush()
    cmd = streamlit_command(chosen, chosen_host)
    os.execv(cmd[0], cmd)  # the UI process replaces this one, so signals reach Streamlit directly
