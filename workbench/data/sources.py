"""Read an import source (manifest CSV or folder of case sub-folders) into raw rows, no validation yet.

Formats (paths are relative to the CSV or folder, never outside it):

- manifest CSV: ``case_id,pre_path,post_path[,label][,patient_id][,split]``
- folder: one sub-folder per case holding ``pre.*`` and ``post.*``, plus an optional ``labels.csv``
  (``case_id,label[,patient_id][,split]``) at the top. A folder holding ``manifest.csv`` is read as
  that manifest. A case sub-folder with no ``pre.*``/``post.*`` but exactly two DICOM files
  (``*.dcm``/``*.dicom``) is one pair whose pre and post are told apart at validation by acquisition
  time, earlier = pre (the rule is in :mod:`workbench.data.dicom`).

Images may be DICOM files (``.dcm``) in either format.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ValidationError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
MANIFEST_REQUIRED = ("case_id", "pre_path", "post_path")
MANIFEST_OPTIONAL = ("label", "patient_id", "split")
LABELS_REQUIRED = ("case_id", "label")


@dataclass
class RawRow:
    """One case as written in the source; ``line`` is the CSV line (or 0 for folder-only cases)."""

    line: int
    case_id: str
    pre: str
    post: str
    label: str = ""
    patient_id: str = ""
    split: str = ""
    problem: str | None = None  # a reading problem found before validation (e.g. missing images)
    order_by_time: bool = False  # pre/post are two DICOMs to be ordered by acquisition time


@dataclass
class Source:
    """A parsed import source: its root (paths are relative to it), format name and rows."""

    root: Path
    format: str
    path: Path
    rows: list[RawRow]


def read_source(path: Path) -> Source:
    """Parse a manifest CSV or a case folder; raises ValidationError when the source itself is unusable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValidationError(f"import source not found: {path}")
    if path.is_file():
        return _read_manifest(path)
    if (path / "manifest.csv").is_file():
        return _read_manifest(path / "manifest.csv")
    return _read_folder(path)


def _open_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ValidationError(f"{path.name}: empty CSV (no header line)")
    header = [h.strip().lower() for h in reader.fieldnames]
    if len(set(header)) != len(header):
        raise ValidationError(f"{path.name}: duplicate column names in header {reader.fieldnames}")
    reader.fieldnames = header
    rows = []
    for record in reader:
        if None in record:  # more fields than header columns
            rows.append((reader.line_num, {"__extra__": "1", **{k: v for k, v in record.items() if k}}))
            continue
        rows.append((reader.line_num, {k: (v or "").strip() for k, v in record.items()}))
    return header, rows


def _check_columns(
    path: Path, header: list[str], required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise ValidationError(
            f"{path.name}: missing column(s) {', '.join(missing)}; expected {','.join(required)}"
            f"[,{'][,'.join(optional)}]"
        )
    unknown = [c for c in header if c not in required + optional]
    if unknown:
        raise ValidationError(f"{path.name}: unknown column(s) {', '.join(unknown)}")


def _read_manifest(path: Path) -> Source:
    header, records = _open_csv(path)
    _check_columns(path, header, MANIFEST_REQUIRED, MANIFEST_OPTIONAL)
    rows = []
    for line, rec in records:
        row = RawRow(
            line=line,
            case_id=rec.get("case_id", "") or "",
            pre=rec.get("pre_path", "") or "",
            post=rec.get("post_path", "") or "",
            label=rec.get("label", "") or "",
            patient_id=rec.get("patient_id", "") or "",
            split=rec.get("split", "") or "",
        )
        if "__extra__" in rec:
            row.problem = "more fields than the header has columns"
        rows.append(row)
    return Source(root=path.parent.resolve(), format="manifest", path=path.resolve(), rows=rows)


def _find_image(folder: Path, stem: str) -> tuple[str, str | None]:
    """Relative path of ``<stem>.*`` in a case folder, or a problem text."""
    found = sorted(
        p for p in folder.iterdir() if p.stem.lower() == stem and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not found:
        return "", f"no {stem}.* image in {folder.name}/"
    if len(found) > 1:
        return "", f"several {stem}.* images in {folder.name}/: {', '.join(p.name for p in found)}"
    return f"{folder.name}/{found[0].name}", None


def _read_folder(root: Path) -> Source:
    labels: dict[str, tuple[int, dict[str, str]]] = {}
    labels_path = root / "labels.csv"
    if labels_path.is_file():
        header, records = _open_csv(labels_path)
        _check_columns(labels_path, header, LABELS_REQUIRED, ("patient_id", "split"))
        for line, rec in records:
            labels.setdefault(rec.get("case_id", "") or "", (line, rec))
    rows = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValidationError(f"{root}: no case sub-folders and no manifest.csv found")
    for folder in folders:
        pre, pre_problem = _find_image(folder, "pre")
        post, post_problem = _find_image(folder, "post")
        by_time = False
        if not pre and not post:
            dicoms = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES)
            if len(dicoms) == 2:
                pre, post = (f"{folder.name}/{p.name}" for p in dicoms)
                pre_problem = post_problem = None
                by_time = True
            elif dicoms:
                pre_problem = (
                    f"no pre.*/post.* images in {folder.name}/ and {len(dicoms)} DICOM files "
                    "(exactly two are ordered by acquisition time)"
                )
        line, rec = labels.pop(folder.name, (0, {}))
        rows.append(
            RawRow(
                line=line,
                case_id=folder.name,
                pre=pre,
                post=post,
                label=rec.get("label", "") or "",
                patient_id=rec.get("patient_id", "") or "",
                split=rec.get("split", "") or "",
                problem=pre_problem or post_problem,
                order_by_time=by_time,
            )
        )
    for case_id, (line, _rec) in sorted(labels.items(), key=lambda kv: kv[1][0]):
        rows.append(
            RawRow(
                line=line, case_id=case_id, pre="", post="", problem="labels.csv names a case with no folder"
            )
        )
    return Source(root=root.resolve(), format="folder", path=root.resolve(), rows=rows)
