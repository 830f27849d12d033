"""``workbench train``, ``infer``, ``evaluate``, ``baseline``, ``models``: the model registry from a shell."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.evaluation.baseline import evaluate_baseline
from workbench.evaluation.baseline_verdict import DESCRIPTION, NAME, baseline_lines
from workbench.evaluation.report_text import format_report
from workbench.evaluation.version import compare_versions, comparison_lines, evaluate_version
from workbench.jobs.params import TrainParams
from workbench.model.registry import list_versions, train_version
from workbench.model.scoring import infer_version
from workbench_cli.common import (
    BATCH_SIZE_OPTION,
    MC_SAMPLES_OPTION,
    SPLITS_OPTION,
    engine,
    handle_errors,
    infer_params,
    settings,
    train_params,
)

DID_NOT_LEARN_EXIT = 3  # `workbench train` exit code when the version did not learn


@handle_errors
def train(
    preset: str = typer.Option(
        TrainParams.default("preset"), help="cpu (small CNN, minutes on CPU) or card (ResNet50 224x224)."
    ),
    phases: int = typer.Option(
        TrainParams.default("phases"),
        min=1,
        max=2,
        help="1: phase 1 only; 2: then fine-tune the upper backbone.",
    ),
    epochs: int | None = typer.Option(
        TrainParams.default("epochs"), min=1, help="Phase-1 epochs (default: the preset's)."
    ),
    fine_tune_epochs: int | None = typer.Option(
        TrainParams.default("fine_tune_epochs"), min=1, help="Phase-2 epochs."
    ),
    imbalance: str = typer.Option(
        TrainParams.default("imbalance"), help="class_weight, balanced, focal or none."
    ),
    seed: int = typer.Option(TrainParams.default("seed"), help="Seed; the same seed repeats a CPU run."),
    parent: int | None = typer.Option(
        TrainParams.default("parent_version"), help="Warm-start from this ready version."
    ),
    feature_cache: bool = typer.Option(
        TrainParams.default("use_feature_cache"),
        "--feature-cache",
        help="Phase 1 on cached backbone features.",
    ),
    overrides: str | None = typer.Option(
        None, help='JSON of config overrides, e.g. \'{"model": {"dropout": 0.3}}\'.'
    ),
    evaluate_on: str = typer.Option(
        "test", "--evaluate-on", help="Split to report on after training ('' for none)."
    ),
) -> None:
    """Train a version in this process (no worker needed), then report on the test split.

    A version that fails the learning check (constant output, loss at the prior, validation AUROC not
    above chance) is kept as did_not_learn: the reasons and what to try are printed, exit code 3.
    """
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
    check = result.get("learning_check") or {}
    if result.get("did_not_learn"):
        typer.echo(
            f"model version {version} did not learn ({result.get('seconds', 0)} s); it is kept, not ready:"
        )
        for reason in check.get("reasons") or []:
            typer.echo(f"  - {reason}")
        typer.echo("what to try:")
        for tip in check.get("advice") or []:
            typer.echo(f"  - {tip}")
        raise typer.Exit(DID_NOT_LEARN_EXIT)
    typer.echo(f"model version {version} ready ({result.get('seconds', 0)} s)")
    if check.get("verdict") == "did_not_learn":  # learning_check "warn": recorded only
        typer.echo(f"warning: the learning check says it {check.get('summary')}", err=True)
    elif check:
        typer.echo(f"learning check: {check.get('summary')}")
    if evaluate_on:
        report, method = evaluate_version(eng, cfg, version, evaluate_on)
        typer.echo(format_report(report))


@handle_errors
def infer(
    version: int = typer.Argument(..., help="Model version id (a ready version)."),
    splits: str = SPLITS_OPTION,
    mc_samples: int = MC_SAMPLES_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
) -> None:
    """Score cases with a version in this process (no worker needed), as the infer job does.

    Resumable: cases the version already scored are skipped. Afterwards `workbench calibrate VERSION`
    can run straight away, so train -> infer -> calibrate needs no worker.
    """
    params = infer_params(version, splits, mc_samples, batch_size)
    shown = {"tenth": -1}

    def progress(fraction: float, message: str) -> None:
        tenth = int(fraction * 10)  # one line per 10 % (a pool of thousands would flood the terminal)
        if tenth != shown["tenth"]:
            typer.echo(f"[{fraction:4.0%}] {message}")
            shown["tenth"] = tenth

    result = infer_version(
        engine(),
        settings(),
        params.model_version,
        params.splits,
        mc_samples=params.mc_samples,
        batch_size=params.batch_size,
        progress=progress,
    )
    where = ", ".join(params.splits)
    if result.get("skipped_existing"):
        typer.echo(f"model version {version}: every case of {where} was scored already")
    else:
        typer.echo(f"model version {version}: scored {result['scored']} case(s) of {where}")


@handle_errors
def evaluate(
    version: int = typer.Argument(..., help="Model version id."),
    split: str = typer.Option("test", help="train, val or test."),
    uncalibrated: bool = typer.Option(False, "--uncalibrated", help="Raw probabilities at 0.5."),
    threshold: float | None = typer.Option(None, min=0.0, max=1.0, help="Override the operating threshold."),
    png: Path | None = typer.Option(None, help="Write ROC/PR/sweep curves to this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored report as JSON."),
    with_baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Compare with the non-learned baseline on the same cases."
    ),
    compare: int | None = typer.Option(
        None,
        "--compare",
        metavar="V",
        help="Also compare with version V on the same labelled cases (paired DeLong test of AUROC on logits).",
    ),
) -> None:
    """Evaluation report of a version on one named split (threshold sweep, CIs, confusion matrix).

    The report also shows the non-learned baseline (`workbench baseline`) on the same cases, the
    paired difference model minus baseline, and a FLAG line when the model does not clearly beat it.
    AUROC has a DeLong interval beside the bootstrap one; an interval that cannot be evidence (zero
    width, or pinned at 0/1 on a perfectly separated split) is marked `!` with a footnote. With
    `--compare V`, the paired DeLong difference in AUROC with version V on the cases both scored, its
    interval, p-value and a verdict. `--png` adds a decision curve (net benefit) panel.
    """
    eng = engine()
    report, method = evaluate_version(
        eng,
        settings(),
        version,
        split,
        calibrated=not uncalibrated,
        threshold=threshold,
        png=png,
        baseline=with_baseline,
    )
    comparison = compare_versions(eng, version, compare, split) if compare is not None else None
    if as_json:
        out = report.to_dict()
        if comparison is not None:
            out["comparison"] = comparison
        typer.echo(json.dumps(out, indent=1))
        return
    typer.echo(
        f"model version {version}, probabilities: {'raw' if method == 'none' else method + '-calibrated'}"
    )
    typer.echo(format_report(report))
    if comparison is not None:
        typer.echo("\n".join(comparison_lines(comparison)))
    if png:
        typer.echo(f"curves: {png}")


@handle_errors
def baseline(
    split: str = typer.Option("test", help="train, val or test (train is in-sample: optimistic)."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """AUROC/AUPRC of the NON-LEARNED baseline on a split, with 95% intervals (no model needed).

    Hand-designed pre/post whitening-change features (tissue mask, per-channel median normalisation,
    post whiteness minus max-filtered pre whiteness) with a logistic regression fitted on the train
    split only. Feature vectors are cached under the artifact root.
    """
    result = evaluate_baseline(engine(), settings(), split, n_boot=n_boot, seed=seed)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(f"{NAME} v{result['version']}: {DESCRIPTION}")
    for line in baseline_lines(result):
        typer.echo(line)
    typer.echo(f"({result['seconds']} s)")


@handle_errors
def models() -> None:
    """Model versions, newest first."""
    typer.echo(
        f"{'id':>4} {'status':<13} {'preset':<6} {'parent':>6} {'round':>5} {'threshold':>9}  data (train/val)"
    )
    for v in list_versions(engine()):
        counts = v.data_counts or {}
        data = " / ".join(
            f"{c.get('n', 0)} ({c.get('positive', 0)} pos)"
            for c in (counts.get("train", {}), counts.get("val", {}))
        )
        thr = f"{v.threshold:.3f}" if v.threshold is not None else "-"
        typer.echo(
            f"{v.id:>4} {v.status:<13} {v.preset:<6} {v.parent_id or '-':>6} {v.round_id or '-':>5} {thr:>9}  {data}"
        )
