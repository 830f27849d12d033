"""The model card of an exported version: Hugging Face format (YAML front matter, then Markdown).

Sections mirror the reference card (``seed/model-card.txt``) but every number is honest about where
it comes from: the Evaluation section reports every metric on ONE named split (test when it has an
evaluation, else validation, said so), and every line that holds a metric value also names that
split with its size and positives, e.g. ``test (n=49, 4 positive)``. A split without a stored
evaluation is reported as such instead of printing numbers.
:func:`render_card` turns the facts from :func:`workbench.export.facts.collect_facts` into the README
text without touching the database, so the card can be re-rendered from a bundle's stored facts.
The Markdown itself lives in the template ``templates/model_card.md.j2``; this module only prepares
what the template shows. Facts about the architecture and the preprocessing come from the model
config (:func:`workbench.model.description.describe`), not restated here.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jinja2

from workbench.calibration.thresholds import guarantee_text
from workbench.evaluation.baseline_verdict import FLAG_MARGIN, NAME, baseline_lines
from workbench.evaluation.report import split_context
from workbench.model.config import ModelConfig
from workbench.model.description import RESIZE_METHOD, describe

# ------------------------------------------------------------------------------------------------
# Rendering: the template writes the Markdown; these helpers format numbers and pick what it shows.

TEMPLATE = "model_card.md.j2"


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


@cache
def _template() -> jinja2.Template:
    """The card template, shipped as package data next to this module."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("workbench.export", "templates"),
        autoescape=False,  # Markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=_num, est=_est)
    env.globals.update(split_context=split_context, guarantee_text=guarantee_text)
    return env.get_template(TEMPLATE)


def _eval_split(facts: dict[str, Any]) -> str | None:
    evaluations = facts.get("evaluations") or {}
    for split in ("test", "val"):
        if split in evaluations:
            return split
    return None


def _calibration_rows(facts: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """One row per calibration method on ``split`` (the raw model first, once, where stored)."""
    rows: list[dict[str, Any]] = []
    raw_done = False
    for cal in facts.get("calibrations") or []:
        entries = ((cal.get("metrics") or {}).get("splits")) or []
        entry = next((e for e in entries if str(e.get("split", "")).split(" ")[0] == split), None)
        name = cal["method"] + (" (selected)" if cal.get("selected") else "")
        if entry is None:
            rows.append({"name": name, "missing": True})
            continue
        ctx = split_context(entry["split"], entry["n"], entry["positives"])
        if not raw_done and entry.get("uncalibrated"):
            raw_ctx = split_context(split, entry["n"], entry["positives"])
            measures = entry["uncalibrated"].get("measures") or {}
            rows.append({"name": "uncalibrated (raw)", "context": raw_ctx, "measures": measures})
            raw_done = True
        if not entry.get("calibrated"):
            rows.append({"name": name, "context": ctx, "measures": None, "reason": entry.get("reason")})
            continue
        rows.append({"name": name, "context": ctx, "measures": entry["calibrated"].get("measures") or {}})
    return rows


def _evaluation(facts: dict[str, Any]) -> dict[str, Any] | None:
    """The one split the Evaluation section reports (test, else validation), None when neither."""
    split = _eval_split(facts)
    if split is None:
        return None
    ev = facts["evaluations"][split]
    rep = ev["report"]
    baseline = rep.get("baseline")
    return {
        "split": split,
        "n": ev["n"],
        "positives": ev["positives"],
        "context": split_context(split, ev["n"], ev["positives"]),
        "report": rep,
        "percent": int(round(float(rep.get("level", 0.95)) * 100)),
        "comparison": (baseline or {}).get("comparison") or {},
        "baseline_lines": baseline_lines(baseline, bullet="- ") if baseline else [],
        "calibration_rows": _calibration_rows(facts, split),
    }


def render_card(
    facts: dict[str, Any],
    *,
    h5: dict[str, Any] | None = None,
    onnx: dict[str, Any] | None = None,
    license_id: str = "mit",
    files: list[str] | None = None,
) -> str:
    """The README.md (model card) text for ``facts`` from :func:`workbench.export.facts.collect_facts`.

    ``h5`` and ``onnx`` are ``{"written": bool, "reason": str | None, ...}`` from the export; ``files``
    lists the bundle's files for the card's inventory.
    """
    config = facts.get("config") or {}
    counts = facts.get("data_counts") or {}
    tags = ["keras", "tensorflow", "medical-imaging", "cervical-screening", "dual-input", "calibrated"]
    if facts.get("synthetic_data"):
        tags.append("synthetic-data")
    text = _template().render(
        facts=facts,
        vid=facts["model_version"],
        # Facts without a stored model config (older rows): describe the backbone alone, claiming no weights.
        model=describe(
            ModelConfig.from_dict(config.get("model") or {"backbone": facts["backbone"], "weights": None})
        ),
        train=config.get("train") or {},
        result=facts.get("training") or {},
        cal=facts["calibration"],
        threshold=facts["threshold"],
        evaluations=facts.get("evaluations") or {},
        ev=_evaluation(facts),
        train_counts=counts.get("train") or {},
        count_rows=[("Training", counts.get("train")), ("Validation", counts.get("val"))],
        lineage=facts.get("lineage") or [],
        by_source=(facts.get("label_counts") or {}).get("by_source") or {},
        tags=tags,
        files=files or [],
        h5=h5,
        onnx=onnx,
        license_id=license_id,
        resize_method=RESIZE_METHOD,
        baseline_name=NAME,
        flag_margin=FLAG_MARGIN,
    )
    return re.sub(r"\n{3,}", "\n\n", text)
