"""``workbench synth``, ``workbench import``, ``workbench cases``: getting pairs into the database."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import engine, fail, handle_errors, settings
from workbench.data.importer import ImportResult, import_source
from workbench.data.splits import parse_proportions
from workbench.data.summary import format_split_counts, split_counts
from workbench.data.synth import generate_dataset, parse_size


@handle_errors
def synth(
    out: Path = typer.Argument(
        ..., help="Folder to write the data set into (empty or a previous synth output)."
    ),
    n: int = typer.Option(400, "--n", help="Number of pairs."),
    positive_rate: float = typer.Option(0.1, "--positive-rate", help="Fraction of positive pairs."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    size: str = typer.Option("128x128", "--size", help="Image size WxH."),
    unlabelled: float = typer.Option(0.0, "--unlabelled", help="Fraction of cases written without a label."),
    image_format: str = typer.Option("jpg", "--format", help="jpg or png."),
    difficulty: str = typer.Option(
        "realistic",
        "--difficulty",
        help="easy (generator v1: obvious lesions), realistic (faint lesions overlap look-alikes) or hard.",
    ),
    label_noise: float = typer.Option(
        0.0, "--label-noise", help="Fraction of labelled cases whose recorded label is flipped, in [0, 0.5)."
    ),
    sites: int = typer.Option(1, "--sites", help="Number of site/device profiles (1-16)."),
) -> None:
    """Write a synthetic data set of pre/post pairs in the import format."""
    summary = generate_dataset(
        out,
        n=n,
        positive_rate=positive_rate,
        seed=seed,
        size=parse_size(size),
        unlabelled_fraction=unlabelled,
        image_format=image_format,
        difficulty=difficulty,
        label_noise=label_noise,
        sites=sites,
    )
    reference = "n/a" if summary.reference_auroc is None else f"{summary.reference_auroc:.3f}"
    typer.echo(
        f"{summary.n} pairs ({summary.positives} positive, {summary.labelled} labelled, "
        f"{summary.patients} patients, difficulty {summary.difficulty}, {summary.sites} site(s)) "
        f"in {summary.root}\nmanifest: {summary.manifest}\n"
        f"reference AUROC of the latent evidence: {reference}"
    )


def print_import_result(result: ImportResult, verbose: bool = True) -> None:
    """Print what an import did, one rejected row per line."""
    verb = "would import" if result.dry_run else "imported"
    typer.echo(
        f"{verb} {result.imported} new case(s) from {result.source} ({result.format}); "
        f"{result.unchanged} already present, {len(result.rejected)} rejected"
    )
    if result.split_counts:
        typer.echo(
            "new cases per split: "
            + "; ".join(
                f"{split}: " + ", ".join(f"{n} {label}" for label, n in labels.items())
                for split, labels in result.split_counts.items()
            )
        )
    if verbose:
        for note in result.converted:
            typer.echo(f"converted {note}")
    for r in result.rejected:
        typer.echo(f"rejected line {r.line} case {r.case_id or '<empty>'!s}: {r.reason}", err=True)
    if result.report_path:
        typer.echo(f"report of rejected rows: {result.report_path}")


@handle_errors
def import_(
    path: Path = typer.Argument(
        ..., help="Manifest CSV, or a folder of case sub-folders (or holding manifest.csv)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Import nothing and exit 1 if any row is rejected."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and report only; write nothing."),
    splits: str = typer.Option(
        "70:20:10", "--splits", help="train:val:test proportions for labelled patients."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split assignment."),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="Where to write the rejected-rows CSV."
    ),
    requester: str = typer.Option("cli", "--as", help="Who is importing (recorded with the batch)."),
) -> None:
    """Import pairs: every row is validated; good rows land, bad rows are reported with a reason."""
    cfg = settings()
    eng = engine()
    result = import_source(
        eng,
        path,
        requester=requester,
        proportions=parse_proportions(splits),
        seed=seed,
        strict=strict,
        dry_run=dry_run,
        report_dir=report_dir or cfg.home / "reports",
    )
    print_import_result(result)
    if strict and result.rejected:
        raise fail(f"{len(result.rejected)} row(s) rejected; --strict: nothing was imported")
    if not dry_run:
        typer.echo(format_split_counts(split_counts(eng)))


@handle_errors
def cases() -> None:
    """Counts of cases per split and current label."""
    typer.echo(format_split_counts(split_counts(engine())))
