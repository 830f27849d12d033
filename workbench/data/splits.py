"""Split assignment at import: grouped by patient, stratified by label, frozen afterwards.

A patient's cases share one split so no patient is on both sides of an evaluation. Patients with
labelled cases are dealt to train/val/test to keep each split's class proportions near the target
(counting what earlier imports already placed); patients with only unlabelled cases go to the pool.
An unlabelled case of a patient already in train (or the pool) goes to the pool; one of a val/test
patient stays in that split, so it is never queued for labelling nor trained on.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from workbench.errors import ValidationError

EVAL_SPLITS = ("train", "val", "test")
DEFAULT_PROPORTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "pool": "pool",
    "unlabelled": "pool",
    "unlabeled": "pool",
}


def parse_split(text: str) -> str | None:
    """Canonical split name of a CSV value (empty -> None); ValidationError when unknown."""
    value = text.strip().lower()
    if not value:
        return None
    if value not in SPLIT_ALIASES:
        raise ValidationError(f"unknown split {text!r} (use train, val, test or pool)")
    return SPLIT_ALIASES[value]


def parse_proportions(text: str) -> dict[str, float]:
    """Parse ``70:20:10`` (or ``0.7,0.2,0.1``) into train/val/test fractions summing to 1."""
    parts = [p for p in text.replace(",", ":").split(":") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValidationError(f"split proportions {text!r}: expected three numbers like 70:20:10") from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0 or values[0] == 0:
        raise ValidationError(
            f"split proportions {text!r}: expected three non-negative numbers like 70:20:10 (train > 0)"
        )
    total = sum(values)
    return dict(zip(EVAL_SPLITS, (v / total for v in values), strict=True))


@dataclass
class PatientCases:
    """What an import brings for one patient: label values of its cases (None for unlabelled)."""

    patient_id: str
    labels: list[int | None] = field(default_factory=list)

    @property
    def labelled(self) -> list[int]:
        return [v for v in self.labels if v is not None]


def assign_patient_splits(
    patients: list[PatientCases],
    existing_counts: Mapping[tuple[str, int], int],
    proportions: Mapping[str, float] = DEFAULT_PROPORTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """Choose a split for each new patient: ``train``/``val``/``test`` if it has labels, else ``pool``.

    ``existing_counts`` maps (split, label) to the labelled cases already stored, so that repeated
    imports keep the proportions. Patients are dealt in a seeded random order, positives first, each
    to the split furthest below its target share of that class.
    """
    counts: dict[tuple[str, int], float] = {
        (s, c): float(existing_counts.get((s, c), 0)) for s in EVAL_SPLITS for c in (0, 1)
    }
    rng = random.Random(seed)
    result: dict[str, str] = {}
    labelled = [p for p in patients if p.labelled]
    for p in patients:
        if not p.labelled:
            result[p.patient_id] = "pool"
    # Positive patients first: they are rare, so their placement matters most for stratification.
    positive = sorted((p for p in labelled if any(p.labelled)), key=lambda p: p.patient_id)
    negative = sorted((p for p in labelled if not any(p.labelled)), key=lambda p: p.patient_id)
    rng.shuffle(positive)
    rng.shuffle(negative)
    for group in (positive, negative):
        for p in group:
            n_pos = sum(p.labelled)
            n_neg = len(p.labelled) - n_pos
            cls = 1 if n_pos else 0
            total_cls = sum(counts[(s, cls)] for s in EVAL_SPLITS) + (n_pos if cls else n_neg)
            split = max(
                EVAL_SPLITS,
                key=lambda s: (proportions[s] * total_cls - counts[(s, cls)], proportions[s]),
            )
            counts[(split, 1)] += n_pos
            counts[(split, 0)] += n_neg
            result[p.patient_id] = split
    return result


def split_for_case(patient_split: str, label: int | None) -> str:
    """Split of one case given its patient's split: unlabelled cases of train patients go to the pool."""
    if patient_split in ("train", "pool"):
        return "pool" if label is None else "train"
    return patient_split


def tuning_mask(patient_ids: list[str], labels: list[int], fraction: float, seed: int = 0) -> list[bool]:
    """Which training cases form the tuning slice (early stopping, epoch choice, LR schedule).

    Carved from training, grouped by patient and stratified by label with the same dealing as the
    import split, so validation stays data the model never selected on. ``fraction`` in (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValidationError(f"tuning fraction must be in (0, 1), got {fraction}")
    if len(patient_ids) != len(labels):
        raise ValidationError(f"{len(patient_ids)} patient ids for {len(labels)} labels")
    by_patient: dict[str, PatientCases] = {}
    for pid, value in zip(patient_ids, labels, strict=True):
        by_patient.setdefault(pid, PatientCases(pid)).labels.append(int(value))
    placed = assign_patient_splits(
        list(by_patient.values()), {}, {"train": 1.0 - fraction, "val": fraction, "test": 0.0}, seed
    )
    return [placed[pid] == "val" for pid in patient_ids]
