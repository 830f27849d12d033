"""``workbench simulate``: replay a fully labelled data set to compare acquisition strategies with random."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from workbench.data.synth import parse_size
from workbench.errors import ValidationError
from workbench.experiments import (
    DEFAULT_FEATURE_EPOCHS,
    DEFAULT_HEAD_BATCH,
    DEFAULT_HEAD_EPOCHS,
    DEFAULT_STRATEGIES,
)
from workbench.experiments import simulate as run_simulation
from workbench_cli.common import handle_errors


def _overrides(items: list[str], input_size: str | None) -> dict[str, Any]:
    """ModelConfig overrides from ``KEY=VALUE`` items (VALUE read as JSON when it parses, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--model-override {item!r}: write KEY=VALUE, e.g. token_dim=32")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    if input_size:
        out["input_size"] = list(parse_size(input_size))
    return out


@handle_errors
def simulate(
    dataset: Path = typer.Argument(
        ...,
        help="Fully labelled manifest CSV or case folder (import format); a synth folder's ground_truth.csv "
        "supplies the labels when present.",
    ),
    out: Path = typer.Option(Path("simulation"), "--out", "-o", help="Folder for curves, summary and plot."),
    strategy: list[str] = typer.Option(
        list(DEFAULT_STRATEGIES),
        "--strategy",
        "-s",
        help="Repeatable (or comma-separated): mixed (the default mix), near_threshold, entropy, bald, "
        "likely_positive, diversity, random, or a mix like near_threshold=0.6+likely_positive=0.4. "
        "random is always added as the baseline.",
    ),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Query rounds per strategy and seed."),
    batch: int = typer.Option(20, "--batch", min=1, help="Cases queried per round."),
    initial: int = typer.Option(
        40, "--initial", min=2, help="Initial labelled cases (stratified, >= 2 positive)."
    ),
    seeds: int = typer.Option(
        3, "--seeds", min=1, help="Number of seeds (0..S-1): split and initial set per seed."
    ),
    preset: str = typer.Option("cpu", "--preset", help="Model preset: cpu or card."),
    input_size: str | None = typer.Option(
        None, "--input-size", help="Model input WxH (default: the preset's)."
    ),
    model_override: list[str] = typer.Option(
        [], "--model-override", help="Repeatable KEY=VALUE over the preset's model config, e.g. token_dim=32."
    ),
    feature_epochs: int = typer.Option(
        DEFAULT_FEATURE_EPOCHS,
        "--feature-epochs",
        min=1,
        help="End-to-end epochs of each seed's feature extractor.",
    ),
    head_epochs: int = typer.Option(
        DEFAULT_HEAD_EPOCHS, "--head-epochs", min=1, help="Head epochs per round on cached features."
    ),
    head_batch: int = typer.Option(DEFAULT_HEAD_BATCH, "--head-batch", min=1, help="Head batch size."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="Held-out test share (by patient)."),
    mc_samples: int = typer.Option(10, "--mc-samples", min=0, help="MC-dropout passes (0: none)."),
    no_embeddings: bool = typer.Option(
        False, "--no-embeddings", help="Do not thin batches by k-center on the head's embeddings."
    ),
) -> None:
    """Replay DATASET with the pool labels hidden; print positives found per 100 queries vs random and
    test AUPRC vs labels used; write curves.csv, summary.csv, queries.csv and curves.png to --out."""
    names = [part.strip() for item in strategy for part in item.split(",") if part.strip()]

    def progress(fraction: float, message: str) -> None:
        typer.echo(f"[{fraction:4.0%}] {message}", err=True)

    result = run_simulation(
        dataset,
        out,
        names,
        rounds=rounds,
        batch=batch,
        initial=initial,
        seeds=seeds,
        preset=preset,
        model_overrides=_overrides(model_override, input_size) or None,
        feature_epochs=feature_epochs,
        head_epochs=head_epochs,
        head_batch=head_batch,
        test_fraction=test_fraction,
        mc_samples=mc_samples,
        use_embeddings=not no_embeddings,
        progress=progress,
    )
    typer.echo(result.summary_table())
    typer.echo(
        f"curves: {result.files['curves']}\nsummary: {result.files['summary']}\nplot: {result.files['plot']}"
    )
