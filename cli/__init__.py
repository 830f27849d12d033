"""The ``workbench`` command line: thin commands over the library; errors are one line, exit non-zero."""

from __future__ import annotations

import json

import typer

from workbench import __version__
from workbench_cli import active, calibration, data, db, export, jobs, models
from workbench_cli.common import handle_errors, settings
from workbench_cli.demo import demo
from workbench_cli.replay import replay_cmd
from workbench_cli.simulate import simulate
from workbench_cli.ui import ui

app = typer.Typer(
    name="workbench",
    help="Active-learning and calibration workbench for pre/post-stain cervical image pairs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.command("synth")(data.synth)
app.command("import")(data.import_)
app.add_typer(data.cases_app, name="cases")
app.command("demo")(demo)
app.command("train")(models.train)
app.command("infer")(models.infer)
app.command("evaluate")(models.evaluate)
app.command("baseline")(models.baseline)
app.command("models")(models.models)
app.command("calibrate")(calibration.calibrate)
app.command("label")(active.label)
app.command("promote")(export.promote_cmd)
app.command("export")(export.export)
app.command("predict")(export.predict)
app.command("ui")(ui)
app.command("simulate")(simulate)
app.command("replay")(replay_cmd)
app.add_typer(active.queue_app, name="queue")
app.add_typer(active.round_app, name="round")
app.add_typer(active.users_app, name="users")
app.command("reliability")(calibration.reliability)
app.command("worker")(jobs.worker)
app.add_typer(jobs.submit_app, name="submit")
app.add_typer(jobs.jobs_app, name="jobs")


@app.command("settings")
@handle_errors
def show_settings(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print every setting in effect (passwords masked)."""
    values = settings().describe()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
    else:
        for key, value in values.items():
            typer.echo(f"WORKBENCH_{key.upper():<24} {value}")


@app.command("version")
def version() -> None:
    """Print the workbench version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
