"""The oracle of a simulation: the data set's own labels, hidden from the strategies and revealed case by
case as they are queried.

A simulation needs every case labelled (the answers the oracle gives), so loading refuses unlabelled
cases and single-class sets; a synth folder's ``ground_truth.csv`` supplies the labels its manifest hides.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ValidationError

GROUND_TRUTH_NAME = "ground_truth.csv"


@dataclass(frozen=True)
class LabelledCase:
    """One fully labelled pair: absolute image paths, label 0/1 and patient (the case id when not given)."""

    case_id: str
    pre: Path
    post: Path
    label: int
    patient_id: str


def _read_ground_truth(path: Path) -> dict[str, tuple[str, str]]:
    """case_id -> (label text, patient id) from a synth ``ground_truth.csv``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read ground truth ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if "case_id" not in header or "label" not in header:
        raise ValidationError(f"{path}: ground truth needs columns case_id,label[,patient_id]")
    reader.fieldnames = header
    out: dict[str, tuple[str, str]] = {}
    for rec in reader:
        cid = (rec.get("case_id") or "").strip()
        out[cid] = ((rec.get("label") or "").strip(), (rec.get("patient_id") or "").strip())
    return out


def load_labelled(dataset: str | os.PathLike) -> tuple[list[LabelledCase], str]:
    """Read a manifest CSV or case folder (import format) in which EVERY case has a label.

    When a ``ground_truth.csv`` lies next to the manifest (a synth output), its labels are used, so a synth
    set written with unlabelled cases can still be replayed. Returns the cases and where the labels came
    from. Raises ValidationError for unreadable rows, missing images, unlabelled cases or a single class.
    """
    from workbench.data.images import resolve_inside
    from workbench.data.importer import parse_label
    from workbench.data.sources import read_source

    source = read_source(Path(dataset))
    truth_path = source.path.parent / GROUND_TRUTH_NAME if source.format == "manifest" else None
    truth = _read_ground_truth(truth_path) if truth_path is not None and truth_path.is_file() else None
    label_source = str(truth_path) if truth is not None else str(source.path)
    cases: list[LabelledCase] = []
    seen: set[str] = set()
    unlabelled: list[str] = []
    for row in source.rows:
        where = f"{source.path.name} line {row.line}" if row.line else f"case folder {row.case_id!r}"
        if row.problem:
            raise ValidationError(f"{where}: {row.problem}")
        cid = row.case_id.strip()
        if not cid:
            raise ValidationError(f"{where}: empty case_id")
        if cid in seen:
            raise ValidationError(f"{where}: duplicate case_id {cid!r}")
        seen.add(cid)
        label_text, patient = row.label, row.patient_id
        if truth is not None:
            if cid not in truth:
                raise ValidationError(f"case {cid!r} is missing from {truth_path}")
            label_text, patient = truth[cid][0], truth[cid][1] or patient
        try:
            label = parse_label(label_text)
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc}") from None
        if label is None:
            unlabelled.append(cid)
            continue
        pre, post = resolve_inside(source.root, row.pre), resolve_inside(source.root, row.post)
        for p in (pre, post):
            if not p.is_file():
                raise ValidationError(f"{where}: image file not found: {p}")
        cases.append(LabelledCase(cid, pre, post, int(label), patient.strip() or cid))
    if unlabelled:
        shown = ", ".join(unlabelled[:3]) + (
            f" and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        )
        raise ValidationError(
            f"simulation needs every case labelled, but {len(unlabelled)} case(s) in {label_source} have no "
            f"label ({shown}); give a fully labelled manifest (or a synth folder with {GROUND_TRUTH_NAME})"
        )
    if not cases:
        raise ValidationError(f"{source.path}: no cases")
    positives = sum(c.label for c in cases)
    if positives == 0 or positives == len(cases):
        only = "positive" if positives else "negative"
        raise ValidationError(
            f"{label_source}: all {len(cases)} cases are {only}; simulation needs both classes"
        )
    return cases, label_source
