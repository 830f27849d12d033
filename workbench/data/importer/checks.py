"""Checking one row of an import completely (ids, label, split, both images) before anything is written.

Why apart: a row check reads files only, never the database, so rows are checked in parallel and a bad
row becomes a :class:`Rejected` with a specific reason (DICOM identifiers redacted) instead of an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from workbench.data import dicom
from workbench.data.images import ImageInfo, decode_image, inspect_image, resolve_inside
from workbench.data.importer.dicom_store import _Derived, _dicom_patient_id, _DicomStore
from workbench.data.sources import RawRow
from workbench.data.splits import parse_split
from workbench.errors import SettingsError, ValidationError

LABEL_VALUES = {"0": 0, "1": 1, "negative": 0, "positive": 1, "neg": 0, "pos": 1}
MAX_ID_LENGTH = 256
WITHHELD_CASE_ID = "(withheld)"


def parse_label(text: str) -> int | None:
    """0/1 from ``0``, ``1``, ``negative``, ``positive`` (any case); None when empty."""
    value = text.strip().lower()
    if not value:
        return None
    if value not in LABEL_VALUES:
        raise ValidationError(f"bad label {text!r} (use 0, 1, negative, positive, or leave empty)")
    return LABEL_VALUES[value]


@dataclass
class Rejected:
    """A row that was not imported and why."""

    line: int
    case_id: str
    reason: str


@dataclass
class _Checked:
    row: RawRow
    label: int | None
    split: str | None
    patient_id: str
    pre: ImageInfo
    post: ImageInfo
    derived: dict[str, _Derived] = field(default_factory=dict)  # "pre"/"post" when that image is DICOM
    source_metadata: dict[str, object] | None = None

    def stored_path(self, which: str) -> str:
        """Path the case row records: the de-identified PNG for a DICOM image, else the file itself."""
        derived = self.derived.get(which)
        return str(derived.final) if derived else _stored_path(getattr(self, which))

    def stored_sha256(self, which: str) -> str:
        derived = self.derived.get(which)
        return derived.sha256 if derived else getattr(self, which).sha256

    @property
    def pair_sha256(self) -> str:
        pre, post = self.stored_sha256("pre"), self.stored_sha256("post")
        return hashlib.sha256(f"{pre}:{post}".encode()).hexdigest()


def _check_row(
    root: Path, row: RawRow, max_pixels: int, store: _DicomStore, fmt: str = "manifest"
) -> _Checked | Rejected:
    """Validate one row completely (ids, label, split, both images decoded).

    Never raises for a bad row; only a SettingsError (salt or image store unusable) stops the import.
    """
    identifiers: set[str] = set()
    try:
        if row.problem:
            raise ValidationError(row.problem)
        case_id = row.case_id.strip()
        if not case_id:
            raise ValidationError("empty case id")
        if len(case_id) > MAX_ID_LENGTH:
            raise ValidationError(f"case id longer than {MAX_ID_LENGTH} characters")
        label = parse_label(row.label)
        split = parse_split(row.split)
        if split == "pool" and label is not None:
            raise ValidationError("split 'pool' is for unlabelled cases, but a label is given")
        patient_id = row.patient_id.strip() or case_id
        if len(patient_id) > MAX_ID_LENGTH:
            raise ValidationError(f"patient id longer than {MAX_ID_LENGTH} characters")
        paths: dict[str, Path] = {}
        headers: dict[str, dicom.DicomHeader] = {}
        for which, rel in (("pre", row.pre), ("post", row.post)):
            try:
                paths[which] = resolve_inside(root, rel)
                if dicom.is_dicom(paths[which]):
                    headers[which] = dicom.read_header(paths[which])
                    identifiers |= headers[which].identifiers
            except ValidationError as exc:
                raise ValidationError(f"{which} image: {exc}") from None
        metadata: dict[str, object] | None = None
        if headers:
            order = "pre_path/post_path columns" if fmt == "manifest" else "pre.*/post.* file names"
            if row.order_by_time:
                first, second, order = dicom.order_by_time(headers["pre"], headers["post"])
                headers = {"pre": first, "post": second}
                paths = {"pre": first.path, "post": second.path}
            patient_id, how = _dicom_patient_id(row, case_id, headers, store)
            metadata = {"patient_id": how, "pre_post_order": order}
            metadata.update({which: dict(h.metadata) for which, h in headers.items()})
        infos: dict[str, ImageInfo] = {}
        derived: dict[str, _Derived] = {}
        for which, path in paths.items():
            try:
                if which in headers:
                    info, rgb = decode_image(path, max_pixels=max_pixels)
                    derived[which] = store.put(dicom.png_bytes(rgb))
                    del rgb
                    info = replace(info, converted=f"{info.converted}; stored as a de-identified PNG")
                else:
                    info = inspect_image(path, max_pixels=max_pixels)
            except ValidationError as exc:
                raise ValidationError(f"{which} image: {exc}") from None
            infos[which] = info
        checked = _Checked(row, label, split, patient_id, infos["pre"], infos["post"], derived, metadata)
        if checked.stored_sha256("pre") == checked.stored_sha256("post"):
            raise ValidationError(
                "pre and post DICOM images have the same pixels"
                if derived
                else "pre and post images are the same file content"
            )
        return checked
    except ValidationError as exc:
        return _rejected(row, str(exc), identifiers)
    except SettingsError:
        raise
    except Exception as exc:  # an unexpected failure on one row must not stop the import
        return _rejected(row, f"unexpected error: {type(exc).__name__}: {exc}", identifiers)


def _rejected(row: RawRow, reason: str, identifiers: set[str]) -> Rejected:
    """A Rejected row with any DICOM identifying value taken out of its case id and reason."""
    if not identifiers:
        return Rejected(row.line, row.case_id, reason)
    case_id = WITHHELD_CASE_ID if dicom.contains_identifier(row.case_id, identifiers) else row.case_id
    return Rejected(row.line, case_id, dicom.redact(reason, identifiers))


def _stored_path(info: ImageInfo) -> str:
    return str(info.path)


def _label_name(value: int | None) -> str:
    return {0: "negative", 1: "positive", None: "unlabelled"}[value]
