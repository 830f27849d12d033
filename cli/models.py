"""``workbench train``, ``workbench evaluate``, ``workbench models``: the model registry from a shell."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.common import engine, handle_errors, settings, train_params
from workbench.evaluation.report import format_report
from workbench.model.evaluate import evaluate_version
from workbench.model.registry import list_versions, train_version


@handle_errors
def train(
    preset: str = typer.Option("cpu", help="cpu (small CNN, minutes on CPU) or card (ResNet50 224x224)."),
    phases: int = typer.Option(
        1, min=1, max=2, help="1: phase 1 only; 2: then fine-tune the upper backbone."
    ),
    epochs: int | None = typer.Option(None, min=1, help="Phase-1 epochs (default: the preset's)."),
    fine_tune_epochs: int | None = typer.Option(None, min=1, help="Phase-2 epochs."),
    imbalance: str = typer.Option("class_weight", help="class_weight, balanced, focal or none."),
    seed: int = typer.Option(0, help="Seed; the same seed repeats a CPU run."),
    parent: int | None = typer.Option(None, help="Warm-start from this ready version."),
    feature_cache: bool = typer.Option(False, "--feature-cache", help="Phase 1 on cached backbone features."),
    overrides: str | None = typer.Option(
        None, help='JSON of config overrides, e.g. \'{"model": {"dropout": 0.3}}\'.'
    ),
    evaluate_on: str = typer.Option(
        "test", "--evaluate-on", help="Split to report on after training ('' for none)."
    ),
) -> None:
    """Train a version in this process (no worker needed), then report on the test split."""
    params = train_params(
        preset, phases, epochs, fine_tune_epochs, imbalance, seed, parent, feature_cache, overrides
    )
    eng, cfg = engine(), settings()
    last = {"msg": ""}

    def progress(fraction: float, message: str, epoch_end: bool = False) -> None:
        if epoch_end and message != last["msg"]:
            typer.echo(f"[{fraction:4.0%}] {message}")
            last["msg"] = message

    result = train_version(eng, cfg, params, progress=progress)
    version = result["model_version"]
    if result.get("cancelled"):
        raise typer.Exit(1)
    typer.echo(f"model version {version} ready ({result.get('seconds', 0)} s)")
    if evaluate_on:
        report, method = evaluate_version(eng, cfg, version, evaluate_on)
        typer.echo(format_report(report))


@handle_errors
def evaluate(
    version: int = typer.Argument(..., help="Model version id."),
    split: str = typer.Option("test", help="train, val or test."),
    uncalibrated: bool = typer.Option(False, "--uncalibrated", help="Raw probabilities at 0.5."),
    threshold: float | None = typer.Option(None, min=0.0, max=1.0, help="Override the operating threshold."),
    png: Path | None = typer.Option(None, help="Write ROC/PR/sweep curves to this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored report as JSON."),
) -> None:
    """Evaluation report of a version on one named split (threshold sweep, CIs, confusion matrix)."""
    report, method = evaluate_version(
        engine(), settings(), version, split, calibrated=not uncalibrated, threshold=threshold, png=png
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
        return
    typer.echo(
        f"model version {version}, probabilities: {'raw' if method == 'none' else method + '-calibrated'}"
    )
    typer.echo(format_report(report))
    if png:
        typer.echo(f"curves: {png}")


@handle_errors
def models() -> None:
    """Model versions, newest first."""
    typer.echo(
        f"{'id':>4} {'status':<10} {'preset':<6} {'parent':>6} {'round':>5} {'threshold':>9}  data (train/val)"
    )
    for v in list_versions(engine()):
        counts = v.data_counts or {}
        data = " / ".join(
            f"{c.get('n', 0)} ({c.get('positive', 0)} pos)"
            for c in (counts.get("train", {}), counts.get("val", {}))
        )
        thr = f"{v.threshold:.3f}" if v.threshold is not None else "-"
        typer.echo(
            f"{v.id:>4} {v.status:<10} {v.preset:<6} {v.parent_id or '-':>6} {v.round_id or '-':>5} {thr:>9}  {data}"
        )
