"""``workbench synth``, ``workbench import``, ``workbench cases``: getting pairs into the database."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.data.dicom import generate_dicom_dataset
from workbench.data.importer import ImportResult, import_source
from workbench.data.splits import parse_proportions
from workbench.data.summary import format_split_counts, split_counts
from workbench.data.synth import generate_dataset, parse_size
from workbench_cli.common import AS_HELP, acting, engine, fail, handle_errors, settings


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
    image_format: str = typer.Option(
        "jpg",
        "--format",
        help="jpg, png or dcm (DICOM pairs: RGB, JPEG baseline and YBR_FULL files with planted synthetic "
        "identifiers, for testing de-identification).",
    ),
    difficulty: str = typer.Option(
        "realistic",
        "--difficulty",
        help="easy (generator v1: obvious lesions), realistic (faint lesions overlap look-alikes) or hard.",
    ),
    label_noise: float = typer.Option(
        0.0, "--label-noise", help="Fraction of labelled cases whose recorded label is flipped, in [0, 0.5)."
    ),
    sites: int = typer.Option(1, "--sites", help="Number of site/device profiles (1-16)."),
    swap_rate: float = typer.Option(
        0.0, "--swap-rate", help="Fraction of cases whose pre and post files are exchanged (0-0.5)."
    ),
    mismatch_rate: float = typer.Option(
        0.0,
        "--mismatch-rate",
        help="Fraction of other cases whose post is another patient's post (0-0.5); see pair_fault in "
        "ground_truth.csv.",
    ),
) -> None:
    """Write a synthetic data set of pre/post pairs in the import format."""
    dcm = image_format.strip().lower().lstrip(".") in ("dcm", "dicom")
    summary = (generate_dicom_dataset if dcm else generate_dataset)(
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
        swap_rate=swap_rate,
        mismatch_rate=mismatch_rate,
    )
    reference = "n/a" if summary.reference_auroc is None else f"{summary.reference_auroc:.3f}"
    typer.echo(
        f"{summary.n} pairs ({summary.positives} positive, {summary.labelled} labelled, "
        f"{summary.patients} patients, difficulty {summary.difficulty}, {summary.sites} site(s)) "
        f"in {summary.root}\nmanifest: {summary.manifest}\n"
        f"reference AUROC of the latent evidence: {reference}"
    )
    if summary.swapped or summary.mismatched:
        typer.echo(
            f"planted pair faults: {summary.swapped} swapped, {summary.mismatched} mismatched "
            "(pair_fault in ground_truth.csv)"
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
    note = result.report_note()
    if note:
        typer.echo(note, err=result.report_error is not None)
    if result.pair_check:
        typer.echo(result.pair_check)


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
    requester: str | None = typer.Option(None, "--as", help=f"{AS_HELP} Recorded with the import batch."),
) -> None:
    """Import pairs: every row is validated; good rows land, bad rows are reported with a reason."""
    cfg = settings()
    eng = engine()
    result = import_source(
        eng,
        path,
        requester=acting(requester),
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


cases_app = typer.Typer(
    help="Counts of cases per split and current label; pairs the pair sanity check flagged.",
    no_args_is_help=False,
)


@cases_app.callback(invoke_without_command=True)
@handle_errors
def cases(
    ctx: typer.Context,
    suspect: bool = typer.Option(
        False, "--suspect", help="List the pairs the pair sanity check flagged, with score and reason."
    ),
    status: str | None = typer.Option(
        None, "--pair-status", help="List the cases with this pair status (ok, suspect, confirmed, rejected)."
    ),
) -> None:
    """Counts of cases per split and current label; ``--suspect``: the flagged pairs."""
    if ctx.invoked_subcommand is not None:
        return
    if suspect and status is not None and status != "suspect":
        raise fail("give either --suspect or --pair-status, not both")
    if not suspect and status is None:
        typer.echo(format_split_counts(split_counts(engine())))
        return
    from workbench.data.pair_check import flagged_pairs, pair_status_counts

    eng = engine()
    wanted = status or "suspect"
    rows = flagged_pairs(eng, (wanted,))
    counts = pair_status_counts(eng)
    typer.echo(
        f"{len(rows)} case(s) with pair status {wanted} "
        f"(all cases: {', '.join(f'{n} {k}' for k, n in counts.items())})"
    )
    if wanted == "suspect" and rows:
        typer.echo(
            "suspect pairs are kept out of training until an expert answers: "
            "`workbench cases confirm-pair CASE --ok|--reject --as NAME`"
        )
    for r in rows:
        score = "-" if r.score is None else f"{r.score:.2f}"
        eval_note = " (evaluation split: its metrics include this pair)" if r.split in ("val", "test") else ""
        typer.echo(f"{r.external_id}\t{r.split}{eval_note}\tscore {score}\t{r.reason or ''}")


@cases_app.command("confirm-pair")
@handle_errors
def confirm_pair(
    case: str = typer.Argument(..., help="Case id or external id (e.g. synth-00012)."),
    sound: bool | None = typer.Option(
        None, "--ok/--reject", help="--ok: the pair is sound (back into training); --reject: it is not."
    ),
    expert: str = typer.Option(..., "--as", help="Your user name (a registered, active user)."),
    note: str | None = typer.Option(None, "--note", help="Why (kept with the case's pair-check reason)."),
) -> None:
    """An expert's decision on a pair: confirmed (sound, trained on) or rejected (never trained on)."""
    from workbench.active.labelling_queue import resolve_pair
    from workbench.data.pair_check import case_by_ref
    from workbench.users import authorize

    if sound is None:
        raise fail("say --ok (the pair is sound) or --reject (it is not)")
    eng = engine()
    authorize(eng, expert, "label")
    answer = resolve_pair(eng, case_by_ref(eng, case), expert, sound, note)
    closed = (
        f"; closed queue item(s) {', '.join(map(str, answer.closed_items))}" if answer.closed_items else ""
    )
    typer.echo(f"case {answer.external_id}: pair {answer.status} by {answer.expert}{closed}")


@cases_app.command("check-pairs")
@handle_errors
def check_pairs_cmd(
    recheck: bool = typer.Option(
        False,
        "--recheck",
        help="Also check again the cases already ok or suspect (never an expert's decision).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the reference sample, null pairs and folds."),
) -> None:
    """Run the pair sanity check now on the unchecked cases (it also runs at import and before a round)."""
    from workbench.data.pair_check import check_pairs

    summary = check_pairs(engine(), recheck=recheck, seed=seed)
    typer.echo(summary.message())
