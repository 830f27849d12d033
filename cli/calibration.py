"""``workbench calibrate`` and ``workbench reliability``: fit calibrators, compare, plot curves."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.calibration.calibrators import METHOD_NAMES
from workbench.calibration.plots import plot_reliability
from workbench.calibration.service import calibrate_version, format_summary, load_curves
from workbench.calibration.thresholds import VALID_FORMS
from workbench.defaults import DEFAULT_METHODS, DEFAULT_POLICY
from workbench_cli.common import engine, handle_errors


@handle_errors
def calibrate(
    version: int = typer.Argument(..., help="Model version id (with predictions on val/test)."),
    methods: str = typer.Option(
        ",".join(DEFAULT_METHODS), help=f"Comma-separated, of: {', '.join(METHOD_NAMES)}."
    ),
    policy: str = typer.Option(DEFAULT_POLICY, help=f"Threshold policy: {VALID_FORMS}."),
    select: str | None = typer.Option(None, help="Use this method instead of the automatic choice."),
    n_boot: int = typer.Option(1000, min=100, help="Bootstrap resamples for the intervals."),
) -> None:
    """Fit calibrators on validation, score them on data they were not fitted on, set the threshold."""
    summary = calibrate_version(
        engine(), version, [m.strip() for m in methods.split(",") if m.strip()], policy, select, n_boot=n_boot
    )
    typer.echo(format_summary(summary))


@handle_errors
def reliability(
    versions: list[int] = typer.Option(..., "--version", "-v", help="Model version id (repeat to overlay)."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    method: str | None = typer.Option(None, help="One calibration method (default: every stored method)."),
    split: str = typer.Option("test", help="Split of the curves: val or test."),
    binning: str = typer.Option("uniform", help="uniform (15 equal-width bins) or quantile (equal mass)."),
) -> None:
    """Overlay stored reliability curves of several versions/methods in one PNG."""
    curves = load_curves(engine(), versions, method, split, binning)
    plot_reliability(curves, path=out)
    typer.echo(f"wrote {out} ({len(curves)} curve(s): {'; '.join(label for label, _ in curves)})")
