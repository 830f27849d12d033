"""``workbench promote``, ``workbench export``, ``workbench predict``: what leaves the workbench."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import typer

from workbench.export.bundle import export_bundle
from workbench.export.predict import PREDICTION_FIELDS, RUNTIMES, load_bundle
from workbench.export.promotion import best_by_rule, promote, resolve_version
from workbench_cli.common import AS_HELP, acting, engine, fail, handle_errors, settings


@handle_errors
def promote_cmd(
    version: int = typer.Argument(..., help="A ready model version."),
    reason: str = typer.Option(..., "--reason", help="Why this version is the current best (recorded)."),
    actor: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Make a version the current best (who, when and why are recorded)."""
    promote(engine(), version, acting(actor), reason)
    typer.echo(f"model version {version} promoted to current best")


@handle_errors
def export(
    out: Path = typer.Argument(..., help="Folder to write the bundle into (must not exist or be empty)."),
    version: int | None = typer.Option(
        None, "--version", "-v", help="Version to export (default: current best)."
    ),
    best: bool = typer.Option(
        False, "--best", help="Pick the calibrated version with the best validation AUPRC."
    ),
    make_zip: bool = typer.Option(False, "--zip", help="Also write OUT.zip."),
    actor: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Export a version as a bundle: .keras, .h5, SavedModel, calibration, threshold, model card."""
    eng = engine()
    if best and version is not None:
        raise fail("give either --version or --best, not both")
    if best:
        version, why = best_by_rule(eng)
        typer.echo(why)
    chosen = resolve_version(eng, version)
    info = export_bundle(eng, settings(), chosen, out, actor=acting(actor), make_zip=make_zip)
    typer.echo(f"bundle of model version {info.model_version}: {info.path}")
    if info.zip_path:
        typer.echo(f"zip: {info.zip_path}")
    for name, digest in sorted(info.files.items()):
        typer.echo(f"  {digest[:12]}  {name}")
    for note in info.notes:
        typer.echo(f"note: {note}")


@handle_errors
def predict(
    bundle: Path = typer.Argument(..., help="An exported bundle folder or .zip (no database needed)."),
    pre: Path | None = typer.Option(None, "--pre", help="Pre-stain image."),
    post: Path | None = typer.Option(None, "--post", help="Post-stain image."),
    pairs_csv: Path | None = typer.Option(None, "--csv", help="CSV of pre_path,post_path[,case_id]."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text/CSV."),
    runtime: str = typer.Option(
        "keras",
        "--runtime",
        help="keras: model.keras (reproduces the workbench's stored predictions exactly); "
        "onnx: model.onnx with onnxruntime, no TensorFlow imported (faster start, same decisions).",
    ),
) -> None:
    """Predict with a bundle only: same preprocessing, its calibrator and threshold; prints the decision."""
    if (pre is None) != (post is None):
        raise fail("give both --pre and --post")
    if (pre is None) == (pairs_csv is None):
        raise fail("give --pre and --post, or --csv")
    if runtime not in RUNTIMES:
        raise fail(f"--runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    b = load_bundle(bundle, runtime=runtime)
    if pre is not None and post is not None:
        r = b.predict_pair(pre, post)
        if as_json:
            typer.echo(json.dumps(r))
        else:
            typer.echo(
                f"raw probability {r['raw_probability']:.4f}  calibrated {r['calibrated_probability']:.4f}  "
                f"threshold {r['threshold']:.4f}  decision {r['decision']}"
            )
        return
    rows = b.predict_csv(pairs_csv)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    fields = ["case_id", "pre_path", "post_path", *PREDICTION_FIELDS]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
