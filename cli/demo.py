"""``workbench demo``: the main job on the embedded default, from nothing to a populated workbench.

Each step reuses what a previous run left (schema, data set, imported cases), so running the demo
again is quick and changes nothing that exists.
"""

from __future__ import annotations

import typer

from cli.common import engine, handle_errors, settings
from cli.data import print_import_result
from workbench.data.importer import import_source
from workbench.data.summary import format_split_counts, split_counts
from workbench.data.synth import generate_dataset
from workbench.db import schema


@handle_errors
def demo(
    n: int = typer.Option(300, "--n", help="Synthetic pairs to generate."),
    unlabelled: float = typer.Option(
        0.6, "--unlabelled", help="Fraction of pairs without a label (the pool)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
) -> None:
    """Set up, generate synthetic pairs, import them and print a summary."""
    cfg = settings()
    cfg.ensure_home()
    typer.echo(f"workbench home: {cfg.home}")
    eng = engine(check_schema=False)
    before, after = schema.upgrade(eng)
    typer.echo(
        f"[1/3] database {eng.url.render_as_string(hide_password=True)}: schema {after}"
        + ("" if before == after else f" (was {before or 'empty'})")
    )
    data_dir = cfg.home / "demo-data"
    summary = generate_dataset(data_dir, n=n, positive_rate=0.1, seed=seed, unlabelled_fraction=unlabelled)
    typer.echo(
        f"[2/3] synthetic data: {summary.n} pairs, {summary.positives} positive, "
        f"{summary.labelled} labelled, in {summary.root}"
    )
    result = import_source(eng, summary.manifest, requester="demo", report_dir=cfg.home / "reports")
    typer.echo("[3/3] ", nl=False)
    print_import_result(result, verbose=False)
    typer.echo(format_split_counts(split_counts(eng)))
