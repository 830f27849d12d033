"""What ``generate_dataset`` accepts: limits, the summary it returns, and the checks on every argument.

Why here: each bad option gets a specific error before a single file is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import ValidationError

#: Bumped whenever the generated pixels change, so stale outputs are regenerated rather than reused.
GENERATOR_VERSION = 2
DIFFICULTIES = ("easy", "realistic", "hard")
MAX_SITES = 16
MAX_FAULT_RATE = 0.5
JPEG_QUALITY = 92
MIN_SIDE, MAX_SIDE = 32, 4096
MAX_N = 1_000_000
IMAGE_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class SynthSummary:
    """Where a generated data set lives and what it holds."""

    root: Path
    manifest: Path
    ground_truth: Path
    n: int
    positives: int
    labelled: int
    patients: int
    difficulty: str = "realistic"
    label_noise: float = 0.0
    sites: int = 1
    #: AUROC of the latent ``evidence`` column against the true labels, and against the recorded labels of
    #: the labelled cases (None when only one class is present).
    reference_auroc: float | None = None
    reference_auroc_recorded: float | None = None
    #: Planted pair faults (``pair_fault`` in ground_truth.csv): pre/post exchanged, post of another patient.
    swapped: int = 0
    mismatched: int = 0


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WIDTHxHEIGHT"`` (e.g. ``"128x96"`` -> ``(128, 96)``) or a single side ``"128"``."""
    if not isinstance(text, str):
        raise ValidationError(f"image size must be text like '128x96', got {text!r}")
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX\u00d7]\s*(\d+)\s*)?", text)
    if match is None:
        raise ValidationError(f"image size must look like '128x96' (width x height), got {text!r}")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) is not None else width
    return _check_size((width, height))


def _check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    ):
        raise ValidationError(f"size must be a (width, height) pair of integers, got {size!r}")
    width, height = int(size[0]), int(size[1])
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValidationError(
                f"image {name} must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {value}"
            )
    return width, height


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _validate(
    n: object,
    positive_rate: object,
    seed: object,
    size: object,
    unlabelled_fraction: object,
    cases_per_patient: object,
    image_format: object,
) -> tuple[int, float, int, tuple[int, int], float, float, str]:
    if not isinstance(n, int | np.integer) or isinstance(n, bool):
        raise ValidationError(f"n (number of cases) must be an integer, got {n!r}")
    if not 1 <= int(n) <= MAX_N:
        raise ValidationError(f"n (number of cases) must be between 1 and {MAX_N:,}, got {n}")
    if not _is_number(positive_rate) or not 0.0 <= float(positive_rate) <= 1.0:
        raise ValidationError(f"positive_rate must be a number between 0 and 1, got {positive_rate!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or int(seed) < 0:
        raise ValidationError(f"seed must be a non-negative integer, got {seed!r}")
    if not _is_number(unlabelled_fraction) or not 0.0 <= float(unlabelled_fraction) < 1.0:
        raise ValidationError(
            f"unlabelled_fraction must be a number in [0, 1) (some cases must stay labelled), "
            f"got {unlabelled_fraction!r}"
        )
    if (
        not _is_number(cases_per_patient)
        or not math.isfinite(float(cases_per_patient))
        or not 1.0 <= float(cases_per_patient) <= 100.0
    ):
        raise ValidationError(
            f"cases_per_patient must be a number between 1 and 100, got {cases_per_patient!r}"
        )
    fmt = image_format.lower().lstrip(".") if isinstance(image_format, str) else None
    if fmt not in IMAGE_FORMATS:
        raise ValidationError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    return (
        int(n),
        float(positive_rate),
        int(seed),
        _check_size(tuple(size) if isinstance(size, list) else size),
        float(unlabelled_fraction),
        float(cases_per_patient),
        fmt,
    )


def _validate_levels(difficulty: object, label_noise: object, sites: object) -> tuple[str, float, int]:
    level = difficulty.strip().lower() if isinstance(difficulty, str) else None
    if level not in DIFFICULTIES:
        raise ValidationError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if not _is_number(label_noise) or not 0.0 <= float(label_noise) < 0.5:
        raise ValidationError(f"label_noise must be a number in [0, 0.5), got {label_noise!r}")
    if not isinstance(sites, int | np.integer) or isinstance(sites, bool) or not 1 <= int(sites) <= MAX_SITES:
        raise ValidationError(f"sites must be an integer between 1 and {MAX_SITES}, got {sites!r}")
    return level, float(label_noise), int(sites)


def _validate_faults(swap_rate: object, mismatch_rate: object, n: int) -> tuple[float, float, int, int]:
    """(swap_rate, mismatch_rate, swapped count, mismatched count); ValidationError on bad rates."""
    rates = []
    for name, value in (("swap_rate", swap_rate), ("mismatch_rate", mismatch_rate)):
        if not _is_number(value) or not 0.0 <= float(value) <= MAX_FAULT_RATE:
            raise ValidationError(f"{name} must be a number between 0 and {MAX_FAULT_RATE}, got {value!r}")
        rates.append(float(value))
    k_swap, k_mismatch = round(n * rates[0]), round(n * rates[1])
    if k_swap + k_mismatch > n - 1 and k_mismatch:
        raise ValidationError(
            f"swap_rate + mismatch_rate plant {k_swap + k_mismatch} faults in {n} cases; a mismatched post "
            "is taken from an unfaulted case, so leave at least one case unfaulted"
        )
    return rates[0], rates[1], k_swap, k_mismatch
