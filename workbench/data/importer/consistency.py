"""Rows checked against each other and against the database: repeated case ids, stored cases, splits.

Why apart: these rules need the whole source or the stored cases, unlike the per-row checks; a case id
with disagreeing labels imports neither, and a stored case never changes its images, split or label.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from workbench.data.importer.checks import Rejected, _Checked, _label_name, parse_label
from workbench.data.labels import current_labels, latest_label_subquery
from workbench.data.sources import Source, _open_csv
from workbench.data.splits import PatientCases, assign_patient_splits, split_for_case
from workbench.db.models import Case
from workbench.errors import ValidationError


def _repeated_case_ids(source: Source) -> tuple[dict[str, str], list[Rejected]]:
    """Case ids given more than once: ({case id: why all its rows are refused}, repeats to report).

    A case id whose rows disagree on the label is refused entirely (no label is imported silently).
    Repeated ``labels.csv`` lines that agree are reported; the folder reader keeps only the first, so
    the file is read again here. (Agreeing manifest rows are reported later as duplicate case ids.)
    """
    name = "labels.csv" if source.format == "folder" else source.path.name
    entries: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if source.format == "folder":
        labels_path = source.root / "labels.csv"
        if labels_path.is_file():
            for line, rec in _open_csv(labels_path)[1]:
                entries[(rec.get("case_id") or "").strip()].append((line, rec.get("label") or ""))
    else:
        for row in source.rows:
            entries[row.case_id.strip()].append((row.line, row.label))
    conflicts: dict[str, str] = {}
    repeats: list[Rejected] = []
    for case_id, lines in entries.items():
        if len(lines) < 2 or not case_id:
            continue
        if len({_label_key(label) for _, label in lines}) > 1:
            given = ", ".join(f"line {line}: {label.strip() or '(empty)'}" for line, label in lines)
            conflicts[case_id] = (
                f"case id given different labels in {name} ({given}); none is imported: keep one row"
            )
            if source.format == "folder":  # the folder row carries the first line; report the others
                repeats.extend(Rejected(line, case_id, conflicts[case_id]) for line, _ in lines[1:])
        elif source.format == "folder":
            first = lines[0][0]
            repeats.extend(
                Rejected(
                    line, case_id, f"duplicate of {name} line {first} with the same label; imported once"
                )
                for line, _ in lines[1:]
            )
    return conflicts, repeats


def _label_key(text: str) -> int | str | None:
    """What a label cell means, for comparing repeats (a bad label compares as its text)."""
    try:
        return parse_label(text)
    except ValidationError:
        return text.strip().lower()


def _compare_stored(session, stored: Case, item: _Checked) -> str | None:  # type: ignore[no-untyped-def]
    """Why a row naming an already imported case is refused (None: it is the same case, unchanged)."""
    if stored.pair_sha256 != item.pair_sha256:
        return "case id already imported with different image content"
    if item.split and item.split != stored.split:
        return f"case already imported in split {stored.split!r}; splits never change after import"
    if item.label is not None:
        current = current_labels(session, [stored.id]).get(stored.id)
        if current != item.label:
            return (
                f"case already imported with label {_label_name(current)}; an import never changes labels "
                "(relabel it in the labelling queue)"
            )
    return None


def _assign_splits(session, good: list[_Checked], proportions, seed: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Split of each new case: given split, else its patient's stored split, else a new patient split."""
    patient_ids = sorted({c.patient_id for c in good})
    stored: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(patient_ids, 500):
        for pid, split in session.execute(
            select(Case.patient_id, Case.split).where(Case.patient_id.in_(chunk)).distinct()
        ):
            stored[pid].add(split)
    new_patients: dict[str, PatientCases] = {}
    for c in good:
        if c.split is None and c.patient_id not in stored:
            new_patients.setdefault(c.patient_id, PatientCases(c.patient_id)).labels.append(c.label)
    cur = latest_label_subquery()
    existing_counts = {
        (split, value): n
        for split, value, n in session.execute(
            select(Case.split, cur.c.value, func.count())
            .join(cur, cur.c.case_id == Case.id)
            .where(cur.c.value.is_not(None))
            .group_by(Case.split, cur.c.value)
        )
    }
    patient_split = assign_patient_splits(list(new_patients.values()), existing_counts, proportions, seed)
    for pid, splits in stored.items():
        evaluation = splits & {"val", "test"}
        patient_split[pid] = sorted(evaluation)[0] if evaluation else "train"
    # A patient given an explicit split on one row keeps its other new rows with it.
    for c in good:
        if c.split is not None and c.patient_id not in stored:
            patient_split.setdefault(c.patient_id, c.split)
    out = {}
    for c in good:
        cid = c.row.case_id.strip()
        out[cid] = c.split if c.split is not None else split_for_case(patient_split[c.patient_id], c.label)
    return out


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
