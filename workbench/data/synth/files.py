"""Files of a synthetic data set: names, encoding, atomic writes, what belongs to the generator, and
reading back a complete earlier output.

Why apart: reuse and refusal of an existing folder depend only on the layout, not on the pixels.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from PIL import Image

from workbench.data.synth.options import IMAGE_FORMATS, JPEG_QUALITY, SynthSummary

TRUTH_COLUMNS = (
    "case_id",
    "label",
    "recorded_label",
    "patient_id",
    "site",
    "lesion_strength",
    "lesion_area",
    "lookalike_strength",
    "evidence",
)
#: Written after TRUTH_COLUMNS only when pair faults are planted (so a fault-free output is unchanged).
PAIR_FAULT_COLUMN = "pair_fault"
PAIR_FAULTS = ("swapped", "mismatched")
MANIFEST_NAME = "manifest.csv"
GROUND_TRUTH_NAME = "ground_truth.csv"
README_NAME = "README.txt"
PARAMS_NAME = "synth.json"
CASES_DIR = "cases"
_TMP_SUFFIX = ".synth-tmp"
_CASE_ID_RE = re.compile(r"^synth-\d{5,}$")


def _encode(img: Image.Image, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    else:
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _is_our_file(root: Path, path: Path) -> bool:
    """True for files this generator writes (or leaves behind when interrupted)."""
    rel = path.relative_to(root).parts
    name = rel[-1].removesuffix(_TMP_SUFFIX)
    if len(rel) == 1:
        return name in (MANIFEST_NAME, GROUND_TRUTH_NAME, README_NAME, PARAMS_NAME)
    if len(rel) == 3 and rel[0] == CASES_DIR and _CASE_ID_RE.match(rel[1]):
        return name in {f"{stem}.{fmt}" for stem in ("pre", "post") for fmt in IMAGE_FORMATS}
    return False


def _foreign_entries(root: Path, limit: int = 4) -> list[Path]:
    """Up to ``limit`` entries under ``root`` that this generator did not write.

    Foreign folders are reported, not entered, so pointing ``out`` at a large unrelated tree stays fast.
    """
    foreign: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).parts
        keep = []
        for name in sorted(dirnames):
            sub = rel + (name,)
            ours = sub == (CASES_DIR,) or (len(sub) == 2 and sub[0] == CASES_DIR and _CASE_ID_RE.match(name))
            if ours and not (here / name).is_symlink():
                keep.append(name)
            else:
                foreign.append(here / name)
        dirnames[:] = keep
        foreign.extend(
            here / name
            for name in sorted(filenames)
            if (here / name).is_symlink() or not _is_our_file(root, here / name)
        )
        if len(foreign) >= limit:
            break
    return sorted(foreign)[:limit]


def _case_ids(n: int) -> list[str]:
    width = max(5, len(str(n)))
    return [f"synth-{i:0{width}d}" for i in range(1, n + 1)]


def _patient_ids(n_patients: int) -> list[str]:
    width = max(4, len(str(n_patients)))
    return [f"patient-{i:0{width}d}" for i in range(1, n_patients + 1)]


def _complete(root: Path, n: int, fmt: str) -> bool:
    if not all((root / name).is_file() for name in (MANIFEST_NAME, GROUND_TRUTH_NAME, README_NAME)):
        return False
    cases = root / CASES_DIR
    return all(
        (cases / cid / f"pre.{fmt}").is_file() and (cases / cid / f"post.{fmt}").is_file()
        for cid in _case_ids(n)
    )


def _summary_from_files(root: Path, n: int, params: dict) -> SynthSummary | None:
    """Summary of an existing output read from its CSVs and parameters; None when they are inconsistent."""
    try:
        with (root / GROUND_TRUTH_NAME).open(newline="", encoding="utf-8") as fh:
            truth = list(csv.DictReader(fh))
        with (root / MANIFEST_NAME).open(newline="", encoding="utf-8") as fh:
            manifest = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if len(truth) != n or len(manifest) != n:
        return None
    try:
        positives = sum(int(row["label"]) for row in truth)
        labelled = sum(1 for row in manifest if (row.get("label") or "").strip() != "")
        patients = len({row["patient_id"] for row in truth})
    except (KeyError, ValueError, TypeError):
        return None
    faults = [row.get(PAIR_FAULT_COLUMN) or "" for row in truth]
    reference = params.get("reference_auroc")
    reference = reference if isinstance(reference, dict) else {}
    return SynthSummary(
        root,
        root / MANIFEST_NAME,
        root / GROUND_TRUTH_NAME,
        n,
        positives,
        labelled,
        patients,
        difficulty=params["difficulty"],
        label_noise=params["label_noise"],
        sites=params["sites"],
        reference_auroc=reference.get("truth"),
        reference_auroc_recorded=reference.get("recorded"),
        swapped=faults.count("swapped"),
        mismatched=faults.count("mismatched"),
    )


def _apply_faults(case_dirs: list[Path], fmt: str, faults: list[str], donors: dict[int, int]) -> None:
    """Rewrite the image files of the faulted cases (donors are unfaulted, so read them untouched)."""
    for i, donor in sorted(donors.items()):
        _write_atomic(case_dirs[i] / f"post.{fmt}", (case_dirs[donor] / f"post.{fmt}").read_bytes())
    for i, fault in enumerate(faults):
        if fault == "swapped":
            pre, post = (
                (case_dirs[i] / f"pre.{fmt}").read_bytes(),
                (case_dirs[i] / f"post.{fmt}").read_bytes(),
            )
            _write_atomic(case_dirs[i] / f"pre.{fmt}", post)
            _write_atomic(case_dirs[i] / f"post.{fmt}", pre)
