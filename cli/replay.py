"""``workbench replay``: the production round replayed with an oracle, to measure label efficiency."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.errors import ValidationError
from workbench.experiments.replay import ReplayConfig, replay
from workbench_cli.common import handle_errors


@handle_errors
def replay_cmd(
    dataset: Path = typer.Argument(
        ...,
        help="Fully labelled manifest CSV or case folder (import format); a synth folder's ground_truth.csv "
        "gives the truth the metrics are scored against, its recorded labels are what the oracle answers.",
    ),
    out: Path = typer.Option(
        Path("replay"), "--out", "-o", help="Folder for the workbenches, curves and summary."
    ),
    strategy: list[str] = typer.Option(
        ["default", "random"],
        "--strategy",
        "-s",
        help="Repeatable (or comma-separated): default (the production mix), random, a strategy name, or a "
        "mix like near_threshold=0.6+likely_positive=0.4. Include random for the x-random figures.",
    ),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of seeds (0..S-1): splits and initial set."),
    initial: int = typer.Option(40, "--initial", min=2, help="Initial expert labels (stratified)."),
    rounds: int = typer.Option(8, "--rounds", min=1, help="Production rounds per strategy and seed."),
    batch: int = typer.Option(20, "--batch", min=1, help="Cases queued per round."),
    reader_noise: float = typer.Option(0.0, "--reader-noise", help="Share of the oracle's answers flipped."),
    preset: str = typer.Option("cpu", "--preset", help="Model preset of the rounds."),
    overrides: str | None = typer.Option(
        None, "--overrides", help='Training overrides as JSON, e.g. {"train": {"patience": 5}}.'
    ),
) -> None:
    """Replay DATASET through the production round job and labelling queue (one workbench per seed and
    strategy) and print yields against the pool's expected rate and random, AUPRC against labels used,
    with 95% t-intervals over seeds; curves.csv, summary.csv and summary.md go to --out."""
    try:
        extra = json.loads(overrides) if overrides else {}
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--overrides is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise ValidationError("--overrides must be a JSON object")
    cfg = ReplayConfig(
        dataset=dataset,
        out=out,
        seeds=list(range(seeds)),
        strategies=[p.strip() for item in strategy for p in item.split(",") if p.strip()],
        initial=initial,
        rounds=rounds,
        batch=batch,
        reader_noise=reader_noise,
        preset=preset,
        overrides=extra,
    )
    result = replay(cfg, report=lambda message: typer.echo(message, err=True))
    typer.echo(result["text"])
    typer.echo(f"curves: {out / 'curves.csv'}\nsummary: {out / 'summary.csv'}")
