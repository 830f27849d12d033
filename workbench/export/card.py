"""The model card of an exported version: Hugging Face format (YAML front matter, then Markdown).

Sections mirror the reference card (``seed/model-card.txt``) but every number is honest about where
it comes from: the Evaluation section reports every metric on ONE named split (test when it has an
evaluation, else validation, said so), and every line that holds a metric value also names that
split with its size and positives, e.g. ``test (n=49, 4 positive)``. A split without a stored
evaluation is reported as such instead of printing numbers.

:func:`collect_facts` reads everything the card (and the bundle's JSON files) need from the database
into one JSON-safe dict; :func:`render_card` turns such a dict into the README text without touching
the database, so the card can be re-rendered from a bundle's stored facts.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from workbench import __version__
from workbench.calibration.thresholds import guarantee_text
from workbench.config import Settings, get_settings
from workbench.db.engine import session_scope
from workbench.db.models import Calibration, Case, Evaluation, Label, ModelVersion, Round
from workbench.errors import NotFoundError, WorkbenchError
from workbench.evaluation.baseline import FLAG_MARGIN, NAME, baseline_lines
from workbench.evaluation.report import split_context
from workbench.model.learning_check import not_ready_message

#: What the backbone expects after decoding (RGB uint8 resized to input_size, cast to float32).
PREPROCESSING: dict[str, dict[str, str]] = {
    "resnet50": {
        "function": "keras.applications.resnet50.preprocess_input",
        "mode": "caffe: RGB -> BGR, ImageNet channel means subtracted, no scaling",
        "channel_order": "RGB in, BGR out (done by the function)",
    },
    "mobilenet_v2": {
        "function": "keras.applications.mobilenet_v2.preprocess_input",
        "mode": "tf: x / 127.5 - 1 (range [-1, 1])",
        "channel_order": "RGB",
    },
    "efficientnetb0": {
        "function": "keras.applications.efficientnet.preprocess_input",
        "mode": "identity (the network rescales internally)",
        "channel_order": "RGB",
    },
    "small_cnn": {
        "function": "x / 127.5 - 1 (the workbench's small_cnn scaling)",
        "mode": "RGB scaled to [-1, 1]",
        "channel_order": "RGB",
    },
}

RESIZE_METHOD = (
    "workbench.data.images.load_rgb: EXIF orientation applied, converted to 8-bit RGB, resized to "
    "(width, height) with Pillow's bilinear filter (antialiased when shrinking)"
)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def preprocessing_spec(backbone: str, input_size: list[int] | tuple[int, int]) -> dict[str, Any]:
    """The content of ``preprocessing.json``: what to do to a pair before the model sees it."""
    if backbone not in PREPROCESSING:
        raise WorkbenchError(f"no preprocessing description for backbone {backbone!r}")
    width, height = (int(v) for v in input_size)
    return {
        "backbone": backbone,
        "input_size": {"width": width, "height": height},
        "inputs": {
            "pre": f"pre-stain image, float32 ({height}, {width}, 3) after preprocessing",
            "post": f"post-stain image, float32 ({height}, {width}, 3) after preprocessing",
        },
        "decode_and_resize": RESIZE_METHOD,
        "dtype": "uint8 RGB cast to float32 (values 0-255) before the function",
        **PREPROCESSING[backbone],
        "implementation": f"workbench.model.builder.preprocess_fn({backbone!r})",
        "outputs": {"logit": "(batch, 1) float32", "probability": "(batch, 1) float32, sigmoid(logit)"},
        "reference_implementation": "workbench.model.inference.predict_pairs (used by workbench predict)",
    }


def _lineage(s: Any, version: ModelVersion) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: ModelVersion | None = version
    while current is not None and current.id not in seen:
        seen.add(current.id)
        rnd = s.get(Round, current.round_id) if current.round_id else None
        chain.append(
            {
                "model_version": current.id,
                "parent": current.parent_id,
                "round_id": current.round_id,
                "round": rnd.number if rnd else None,
                "status": current.status,
                "preset": current.preset,
                "backbone": current.backbone,
                "created_at": _iso(current.created_at),
                "data_counts": current.data_counts,
            }
        )
        current = s.get(ModelVersion, current.parent_id) if current.parent_id else None
    return chain


def _label_counts(s: Any, as_of: datetime | None) -> dict[str, Any]:
    """Label events by source and value recorded up to ``as_of`` (the training data's snapshot)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    names = {0: "negative", 1: "positive", None: "unsure"}
    for source, value, created in s.execute(select(Label.source, Label.value, Label.created_at)):
        if as_of is not None and created is not None and _aware(created) > _aware(as_of):
            continue
        counts[source][names.get(value, str(value))] += 1
    return {
        "as_of": _iso(as_of),
        "note": "label events (append-only; a relabelled case counts once per event) up to the training start",
        "by_source": {src: dict(sorted(c.items())) for src, c in sorted(counts.items())},
    }


def collect_facts(engine: Engine, version_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """Everything the card and the bundle's JSON files need about a version, as a JSON-safe dict.

    Requires a ready version with a selected calibration and an operating threshold (WorkbenchError
    otherwise, naming the command that fixes it). Each stored evaluation gets the non-learned
    baseline comparison (``report["baseline"]``), computed and stored when missing; ``settings``
    (default: the settings in effect) locates the baseline's feature cache.
    """
    facts = _collect(engine, version_id)
    _add_baselines(engine, settings, facts)
    return facts


def _add_baselines(engine: Engine, settings: Settings | None, facts: dict[str, Any]) -> None:
    """Put the baseline comparison into every evaluation's report (a reason when it cannot be had)."""
    from workbench.model.evaluate import attach_baseline

    for split, ev in (facts.get("evaluations") or {}).items():
        report = ev.get("report")
        if not isinstance(report, dict):
            continue
        current = report.get("baseline")
        if current and current.get("available"):
            continue
        try:
            section = attach_baseline(
                engine, settings or get_settings(), facts["model_version"], split, ev["method"]
            )
        except WorkbenchError as exc:
            section = {"available": False, "reason": str(exc), "split": split, "n": ev["n"]}
            section["positives"] = ev["positives"]
        if section is not None:
            ev["report"] = {**report, "baseline": section}


def _collect(engine: Engine, version_id: int) -> dict[str, Any]:
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            raise NotFoundError(f"no model version {version_id}")
        if version.status != "ready":
            raise WorkbenchError(
                not_ready_message(version_id, version.status, version.error) + ": nothing to export"
            )
        if not version.artifact_uri:
            raise WorkbenchError(f"model version {version_id} has no recorded artifact: nothing to export")
        if version.calibration_id is None or version.threshold is None:
            raise WorkbenchError(
                f"model version {version_id} has no calibration and threshold yet: run "
                f"`workbench calibrate {version_id}` before exporting it"
            )
        selected = s.get(Calibration, version.calibration_id)
        if selected is None:
            raise WorkbenchError(f"model version {version_id}: its selected calibration row is missing")
        calibrations = s.scalars(
            select(Calibration).where(Calibration.model_version_id == version_id).order_by(Calibration.id)
        ).all()
        evaluations = s.scalars(
            select(Evaluation).where(
                Evaluation.model_version_id == version_id, Evaluation.method == selected.method
            )
        ).all()
        n_cases = s.scalar(select(func.count(Case.id))) or 0
        n_not_synthetic = s.scalar(select(func.count(Case.id)).where(~Case.external_id.like("synth-%"))) or 0
        report = version.threshold_report or {}
        return {
            "workbench_version": __version__,
            "model_version": version.id,
            "parent": version.parent_id,
            "round_id": version.round_id,
            "preset": version.preset,
            "backbone": version.backbone,
            "config": version.config or {},
            "created_at": _iso(version.created_at),
            "created_by": version.created_by,
            "finished_at": _iso(version.finished_at),
            "artifact_sha256": version.artifact_sha256,
            "artifact_uri": version.artifact_uri,
            "data_counts": version.data_counts,
            "training": (version.metrics or {}).get("training"),
            "calibration": {
                "id": selected.id,
                "method": selected.method,
                "parameters": selected.params,
                "fitted_on": {
                    "split": selected.fitted_on,
                    "n": selected.n_fit,
                    "positives": selected.positives_fit,
                },
                "selection_rule": report.get("selection_rule"),
            },
            "calibrations": [
                {"id": c.id, "method": c.method, "selected": c.id == selected.id, "metrics": c.metrics}
                for c in calibrations
            ],
            "threshold": {
                "value": float(version.threshold),
                "policy": version.threshold_policy,
                "applies_to": f"calibrated probability ({selected.method})",
                "decision": "positive when calibrated_probability >= value",
                "chosen_on": report.get("chosen_on"),
                "reported_on": report.get("test"),
            },
            "evaluations": {
                ev.split: {"method": ev.method, "n": ev.n, "positives": ev.positives, "report": ev.report}
                for ev in evaluations
            },
            "lineage": _lineage(s, version),
            "label_counts": _label_counts(s, version.created_at),
            "synthetic_data": n_cases > 0 and n_not_synthetic == 0,
        }


# ------------------------------------------------------------------------------------------------
# Rendering


def _size(size: Any) -> str:
    return f"{size[0]}x{size[1]}" if isinstance(size, list | tuple) and len(size) == 2 else "unknown size"


def _num(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _est(e: dict[str, Any] | None, digits: int = 2) -> str:
    """An estimate with its bootstrap interval and, for proportions, its Wilson interval."""
    if not e or e.get("value") is None:
        reason = (e or {}).get("reason")
        return f"undefined ({reason})" if reason else "undefined"
    out = _num(e["value"], digits)
    if e.get("low") is not None and e.get("high") is not None:
        out += f" [{_num(e['low'], digits)}, {_num(e['high'], digits)}]"
    if e.get("wilson_low") is not None and e.get("wilson_high") is not None:
        out += f" (Wilson [{_num(e['wilson_low'], digits)}, {_num(e['wilson_high'], digits)}])"
    return out


def _front_matter(facts: dict[str, Any], license_id: str) -> list[str]:
    tags = ["keras", "tensorflow", "medical-imaging", "cervical-screening", "dual-input", "calibrated"]
    if facts.get("synthetic_data"):
        tags.append("synthetic-data")
    return [
        "---",
        f"license: {license_id}",
        "library_name: keras",
        "pipeline_tag: image-classification",
        "tags:",
        *(f"- {t}" for t in tags),
        "---",
    ]


def _counts_table(facts: dict[str, Any]) -> list[str]:
    counts = facts.get("data_counts") or {}
    rows = ["| Split | Total | Negative | Positive |", "| --- | ---: | ---: | ---: |"]
    for split, name in (("train", "Training"), ("val", "Validation")):
        c = counts.get(split)
        if c:
            rows.append(f"| {name} | {c['n']} | {c['negative']} | {c['positive']} |")
        else:
            rows.append(f"| {name} | not recorded | | |")
    test = (facts.get("evaluations") or {}).get("test")
    if test:
        rows.append(f"| Test | {test['n']} | {test['n'] - test['positives']} | {test['positives']} |")
    else:
        rows.append("| Test | no labelled test predictions | | |")
    return rows


def _eval_split(facts: dict[str, Any]) -> str | None:
    evaluations = facts.get("evaluations") or {}
    for split in ("test", "val"):
        if split in evaluations:
            return split
    return None


def _point_context(point: dict[str, Any] | None) -> str:
    if not point:
        return "a split that was not recorded"
    return split_context(point["split"], point["n"], point["positives"])


def _operating_point_lines(point: dict[str, Any] | None, label: str) -> list[str]:
    if not point:
        return [f"- {label}: no labelled cases on this split, so nothing is reported."]
    ctx = split_context(point["split"], point["n"], point["positives"])
    line = (
        f"- {label} {ctx}: Sensitivity {_est(point.get('sensitivity'))}, "
        f"Specificity {_est(point.get('specificity'))}, Precision {_est(point.get('precision'))}"
    )
    if point.get("met") is not None:
        line += f"; policy {'met' if point['met'] else 'NOT met'} on {ctx}"
    out = [line]
    status = guarantee_text(point)
    if status:
        out.append(f"  - {status} ({ctx})")
    if point.get("note"):
        out.append(f"  - note on {ctx}: {point['note']}")
    if point.get("in_sample"):
        out.append(f"  - **{point['in_sample']}** ({ctx}): optimistic; the test line is the honest one")
    return out


def _calibration_rows(facts: dict[str, Any], split: str) -> list[str]:
    header = [
        "| Method | Split | ECE (uniform bins) | ECE (equal-mass bins) | Brier | NLL |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows: list[str] = []
    raw_done = False
    for cal in facts.get("calibrations") or []:
        entries = ((cal.get("metrics") or {}).get("splits")) or []
        entry = next((e for e in entries if str(e.get("split", "")).split(" ")[0] == split), None)
        name = cal["method"] + (" (selected)" if cal.get("selected") else "")
        if entry is None:
            rows.append(f"| {name} | {split}: no calibration assessment stored | | | | |")
            continue
        ctx = split_context(entry["split"], entry["n"], entry["positives"])
        if not raw_done and entry.get("uncalibrated"):
            m = entry["uncalibrated"].get("measures") or {}
            raw_ctx = split_context(split, entry["n"], entry["positives"])
            rows.append(
                f"| uncalibrated (raw) | {raw_ctx} | {_est(m.get('ece'), 4)} | {_est(m.get('ece_quantile'), 4)} "
                f"| {_est(m.get('brier'), 4)} | {_est(m.get('nll'), 4)} |"
            )
            raw_done = True
        if not entry.get("calibrated"):
            rows.append(f"| {name} | {ctx} | not available: {entry.get('reason') or 'not computed'} | | | |")
            continue
        m = entry["calibrated"].get("measures") or {}
        rows.append(
            f"| {name} | {ctx} | {_est(m.get('ece'), 4)} | {_est(m.get('ece_quantile'), 4)} "
            f"| {_est(m.get('brier'), 4)} | {_est(m.get('nll'), 4)} |"
        )
    if not rows:
        return [f"No calibration assessment is stored for split {split}."]
    return header + rows


def _threshold_section(facts: dict[str, Any]) -> list[str]:
    cal = facts["calibration"]
    thr = facts["threshold"]
    lines = [
        "## Operating Threshold",
        "",
        f"- Threshold {thr['value']:.4f} on the {cal['method']}-calibrated probability, policy "
        f"`{thr['policy']}`, chosen on {_point_context(thr.get('chosen_on'))}; a case is positive when its "
        "calibrated probability is at least the threshold (`threshold.json`).",
    ]
    lines += _operating_point_lines(thr.get("chosen_on"), "Chosen on")
    lines += _operating_point_lines(thr.get("reported_on"), "Reported on")
    return lines


def _evaluation_section(facts: dict[str, Any]) -> list[str]:
    split = _eval_split(facts)
    cal = facts["calibration"]
    lines = ["## Evaluation", ""]
    evaluations = facts.get("evaluations") or {}
    for name in ("test", "val"):
        if name not in evaluations:
            lines.append(
                f"- Split `{name}`: no evaluation stored (no labelled predictions), so no numbers are shown."
            )
    if split is None:
        lines += [
            "",
            "No split has a stored evaluation: run inference on the labelled splits, then calibrate.",
        ]
        return lines
    ev = evaluations[split]
    rep = ev["report"]
    ctx = split_context(split, ev["n"], ev["positives"])
    t = f"{float(rep['threshold']):.2f}"
    baseline = rep.get("baseline")
    cmp = (baseline or {}).get("comparison") or {}
    if cmp.get("flagged"):
        lines += [
            "",
            f"> **FLAG ({ctx}): this model does NOT clearly beat the {NAME}** "
            f"({cmp.get('reason')}). See *Baseline to beat* below.",
        ]
    lines += ["", "### Testing Data", ""]
    if split == "test":
        lines.append(f"- Every metric below is on ONE split: {ctx}, {ev['n'] - ev['positives']} negative.")
    else:
        lines.append(
            f"- Every metric below is on ONE split: {ctx}. There is no test evaluation, and validation also "
            "chose the calibrator and the threshold, so these numbers are optimistic."
        )
    pct = int(round(float(rep.get("level", 0.95)) * 100))
    lines += [
        f"- Probabilities: raw model outputs passed through the `{cal['method']}` calibrator fitted on "
        f"the {cal['fitted_on']['split']} split.",
        f"- Intervals: {pct}% stratified bootstrap percentile ({rep.get('n_boot')} resamples); "
        "Wilson score intervals for proportions.",
        "",
        "### Results",
        "",
        f"- {ctx}: AUROC {_est(rep.get('auroc'))}",
        f"- {ctx}: AUPRC (average precision) {_est(rep.get('auprc'))}",
        f"- {ctx}: Sensitivity at threshold {t}: {_est(rep.get('sensitivity'))}",
        f"- {ctx}: Specificity at threshold {t}: {_est(rep.get('specificity'))}",
        f"- {ctx}: Accuracy at threshold {t}: {_est(rep.get('accuracy'))}",
        f"- {ctx}: Precision at threshold {t}: {_est(rep.get('precision'))}",
        f"- {ctx}: Recall at threshold {t}: {_est(rep.get('recall'))}",
        f"- {ctx}: F1 at threshold {t}: {_est(rep.get('f1'))}",
        "",
        "### Baseline to beat",
        "",
    ]
    if baseline:
        lines += [
            f"A NON-LEARNED score on the same cases, {ctx}: hand-designed pre/post whitening-change features "
            "(no learned image features) with a logistic regression fitted on the train split only "
            "(`workbench baseline`). The model is flagged when its AUROC is less than "
            f"{FLAG_MARGIN:.2f} above the baseline's or the paired 95% interval of the difference includes 0.",
            "",
            *baseline_lines(baseline, bullet="- "),
        ]
    else:
        lines.append(f"- {ctx}: no baseline comparison stored (run `workbench evaluate` on this split).")
    cm = rep["confusion"]
    lines += [
        "",
        f"### Confusion matrix, {ctx}, threshold {t}",
        "",
        "| Split | True class | Predicted Negative | Predicted Positive |",
        "| --- | --- | ---: | ---: |",
        f"| {ctx} | Negative | {cm['tn']} | {cm['fp']} |",
        f"| {ctx} | Positive | {cm['fn']} | {cm['tp']} |",
        "",
        f"### Threshold sweep, {ctx}",
        "",
        "| Split | Threshold | Accuracy | Precision | Recall | F1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rep.get("sweep") or []:
        lines.append(
            f"| {ctx} | {row['threshold']:.2f} | {_num(row.get('accuracy'), 4)} | {_num(row.get('precision'), 4)} "
            f"| {_num(row.get('recall'), 4)} | {_num(row.get('f1'), 4)} |"
        )
    lines += [
        "",
        f"### Calibration, {ctx}",
        "",
        f"Calibrators were fitted on {split_context(cal['fitted_on']['split'], cal['fitted_on']['n'], cal['fitted_on']['positives'])}; "
        f"selection rule: {cal.get('selection_rule') or 'not recorded'}.",
        "",
    ]
    lines += _calibration_rows(facts, split)
    notes = rep.get("notes") or []
    if notes:
        lines += ["", "### Notes", ""]
        lines += [f"- {n}" for n in notes]
    return lines


def _training_section(facts: dict[str, Any]) -> list[str]:
    model = (facts.get("config") or {}).get("model") or {}
    train = (facts.get("config") or {}).get("train") or {}
    result = facts.get("training") or {}
    lines = ["## Training Details", "", "### Training Data", ""]
    if facts.get("synthetic_data"):
        lines.append("- Synthetic pre/post-stain pairs from `workbench.data.synth` (no real patients).")
    else:
        lines.append("- Pre- and post-stain RGB photographs of the cervix, one pair per case.")
    lines += [
        "- Splits are frozen at import and grouped by patient; validation and test are never trained on.",
        "",
        *_counts_table(facts),
        "",
        "### Preprocessing",
        "",
        f"- Resize to {_size(model.get('input_size'))} (width x height): {RESIZE_METHOD}.",
        f"- Normalise with `{PREPROCESSING.get(facts['backbone'], {}).get('function', 'unknown')}`; see `preprocessing.json`.",
        f"- Augmentation: {'the same geometric transform on both images of a pair' if train.get('augment') else 'none'}.",
        "",
        "### Training Procedure",
        "",
        f"- Backbone: {model.get('backbone')} ({'shared' if model.get('shared_backbone') else 'separate'} "
        f"for pre and post), initial weights: {model.get('weights') or 'random (from scratch)'}.",
        f"- Fusion: token dimension {model.get('token_dim')}, attention heads {model.get('heads')}, "
        f"key dimension {model.get('key_dim')}, dropout {model.get('dropout')}.",
        "- Optimizer: Adam; loss: binary cross-entropy on the logit"
        + (" (focal)" if train.get("imbalance") == "focal" else "")
        + f"; class imbalance: {train.get('imbalance')}.",
        f"- Phase 1: up to {train.get('phase1_epochs')} epochs, batch {train.get('phase1_batch')}, "
        f"learning rate {train.get('phase1_lr')}.",
    ]
    if train.get("phases") == 2:
        lines.append(
            f"- Phase 2 (fine-tuning): up to {train.get('phase2_epochs')} epochs, batch "
            f"{train.get('phase2_batch')}, learning rate {train.get('phase2_lr')}."
        )
    lines.append(
        f"- Callbacks: EarlyStopping and ReduceLROnPlateau on `{train.get('monitor')}` (patience "
        f"{train.get('patience')}), best-epoch checkpoint restored; seed {train.get('seed')}."
    )
    if result:
        lines.append(
            f"- This run: {result.get('epochs_run')} epoch(s) run, best epoch {result.get('best_epoch')} "
            f"(phase {result.get('best_phase')})."
        )
    lineage = facts.get("lineage") or []
    if len(lineage) > 1:
        chain = " <- ".join(
            f"v{v['model_version']}" + (f" (round {v['round']})" if v.get("round") is not None else "")
            for v in lineage
        )
        lines.append(f"- Lineage (warm-started from its parent): {chain}.")
    by_source = (facts.get("label_counts") or {}).get("by_source") or {}
    if by_source:
        parts = ", ".join(
            f"{src}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for src, c in by_source.items()
        )
        lines.append(f"- Label events by source up to training: {parts}.")
    return lines


def render_card(
    facts: dict[str, Any],
    *,
    h5: dict[str, Any] | None = None,
    onnx: dict[str, Any] | None = None,
    license_id: str = "mit",
    files: list[str] | None = None,
) -> str:
    """The README.md (model card) text for ``facts`` from :func:`collect_facts`.

    ``h5`` and ``onnx`` are ``{"written": bool, "reason": str | None, ...}`` from the export; ``files``
    lists the bundle's files for the card's inventory.
    """
    vid = facts["model_version"]
    model = (facts.get("config") or {}).get("model") or {}
    counts = facts.get("data_counts") or {}
    train_counts = counts.get("train") or {}
    backbone = facts["backbone"]
    lines = _front_matter(facts, license_id)
    lines += [
        "",
        f"# Dual-input {backbone} attention model for pre/post-stain cervical image pairs (version {vid})",
        "",
        "Binary classifier (Negative vs Positive) of a PAIR of photographs of the same cervix, one before "
        "and one after the staining agent. Two backbones turn each image into tokens; multi-head attention "
        "lets each image attend to the other; the model outputs a logit and its sigmoid probability, which "
        "this bundle calibrates and thresholds.",
        "",
        "## Model Details",
        "",
        f"- Exported by: cervical pair workbench {facts.get('workbench_version')}; model version {vid}, "
        f"trained by {facts.get('created_by')} at {facts.get('created_at')}.",
        "- Model type: convolutional backbones with attention fusion (Keras 3 functional model, stock layers only).",
        f"- Input: two RGB images resized to {_size(model.get('input_size'))} (width x height); see "
        "`preprocessing.json`.",
        "- Output: logit and probability of the Positive class; calibrated probability and decision via "
        "`calibration.json` and `threshold.json`.",
        f"- Preset: {facts.get('preset')}; backbone: {backbone}; parent version: {facts.get('parent') or 'none'}.",
        f"- License: {license_id}.",
        "",
        "### Files",
        "",
    ]
    for name in files or []:
        lines.append(f"- `{name}`")
    if h5 is not None and not h5.get("written"):
        lines.append(f"- `model.h5` (legacy format) was NOT written: {h5.get('reason')}")
    if onnx is not None and not onnx.get("written"):
        lines.append(f"- `model.onnx` (portable format) was NOT written: {onnx.get('reason')}")
    lines += [
        "",
        "## Uses",
        "",
        "### Direct Use",
        "",
        "- Research on classifying pre/post-stain cervical image pairs into Negative vs Positive, with "
        "calibrated probabilities and a documented operating threshold.",
        "",
        "### Downstream Use",
        "",
        "- A component of a diagnostic-support research pipeline, after validation on the target population "
        "and devices.",
        "- A starting point for fine-tuning on related pair-wise medical imaging tasks.",
        "",
        "### Out-of-Scope Use",
        "",
        "- Not a replacement for professional medical diagnosis.",
        "- No clinical use without regulatory approval.",
        "- Not for non-cervical images, single images, or pairs not taken as pre- and post-stain of one cervix.",
        "",
        "## Bias, Risks, and Limitations",
        "",
    ]
    if facts.get("synthetic_data"):
        lines.append(
            "- Trained and evaluated on SYNTHETIC images: the results say nothing about performance on real "
            "patients."
        )
    if train_counts:
        lines.append(
            f"- Small, imbalanced data: {train_counts.get('positive')} positive of {train_counts.get('n')} "
            "training pairs; evaluation splits hold few positives, so intervals are wide."
        )
    else:
        lines.append("- Small, imbalanced data: positives are rare; evaluation splits hold few positives.")
    lines += [
        "- Performance depends on the threshold; probabilities are only as well calibrated as the validation "
        "split they were calibrated on is representative.",
        "- Labels come from a small number of experts; disagreement between them is not modelled.",
        "",
        "## Recommendations",
        "",
        "- Validate on larger, more diverse, independent data before any use beyond research.",
        "- Choose the threshold policy for the application (screening favours sensitivity, confirmation "
        "favours precision) and re-check it on local data.",
        "- Use alongside clinical expertise, never as a standalone tool.",
        "",
        "## How to Get Started",
        "",
        "```python",
        "import keras",
        "",
        'model = keras.models.load_model("model.keras", compile=False)',
        '# inputs: {"pre": x_pre, "post": x_post}, float32 batches preprocessed as in preprocessing.json',
        "",
        "from workbench.export.predict import load_bundle",
        "",
        'bundle = load_bundle(".")  # verifies every file against manifest.json first',
        'print(bundle.predict_pair("pre.jpg", "post.jpg"))',
        "```",
        "",
        "From the command line (checksums verified, same preprocessing, calibration and threshold):",
        "",
        "```bash",
        "workbench predict path/to/bundle --pre pre.jpg --post post.jpg",
        "workbench predict path/to/bundle --csv pairs.csv   # columns pre_path,post_path[,case_id]",
        "workbench predict path/to/bundle --csv pairs.csv --runtime onnx   # model.onnx, no TensorFlow",
        "```",
        "",
        "Portable model: `model.onnx` (when listed above) runs with onnxruntime alone; it takes the same "
        "preprocessed `pre` and `post` batches and returns `logit` and `probability`. `--runtime onnx` "
        "decodes with Pillow, preprocesses and calibrates with NumPy, and never imports TensorFlow.",
        "",
        "Serving: `saved_model/` has a `serve` signature taking the preprocessed `pre` and `post` batches "
        "and returning `logit` and `probability` (uncalibrated; apply `calibration.json`), and a "
        "`serve_images` signature taking the encoded JPEG/PNG bytes of each image (1-D string batches "
        "`pre` and `post`) and returning `logit`, `calibrated_probability` and `decision`, with decoding, "
        "resizing, preprocessing, the calibrator and the threshold inside the graph (no client code).",
        "",
    ]
    lines += _training_section(facts)
    lines.append("")
    lines += _threshold_section(facts)
    lines.append("")
    lines += _evaluation_section(facts)
    lines += [
        "",
        "## Technical Specifications",
        "",
        "- Architecture: pre and post backbones -> feature tokens -> cross-attention (each image attends to the "
        "other) plus a post-minus-pre change path -> pooling -> dense embedding -> dropout -> logit -> sigmoid.",
        "- Software: TensorFlow/Keras 3; calibration fitted with netcal, applied with NumPy.",
        "",
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"
