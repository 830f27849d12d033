"""Reading DICOM files: recognising them, the header fields the workbench keeps, decoding the pixels
to RGB, and the identifying fields that must never be stored.

Why apart: the importer and the image loader need only this; pydicom is imported lazily, once.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import ValidationError, file_read_errors

if TYPE_CHECKING:
    pass
from workbench.data.dicom.times import _TIME_SOURCES, _times

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""File suffixes read as DICOM (files without one are recognised by the 'DICM' marker)."""


KEPT_METADATA: tuple[str, ...] = ("StudyDate", "SeriesInstanceUID", "AcquisitionDateTime")
"""Header fields kept as case metadata; nothing else from the header is stored."""


_PREAMBLE = 128
_SUPPORTED_PI = {"RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3, "MONOCHROME1": 1, "MONOCHROME2": 1}
_WELL_FORMED = {
    "StudyDate": re.compile(r"\d{8}"),
    "SeriesInstanceUID": re.compile(r"[0-9]+(\.[0-9]+)*"),
    "AcquisitionDateTime": re.compile(r"\d{4,14}(\.\d{1,6})?([+-]\d{4})?"),
}
_UID_MAX = 64


# Patient-identifying header fields: never stored; a case or patient id containing one is refused.
_IDENTIFYING = ("PatientID", "PatientName", "OtherPatientIDs", "OtherPatientNames", "AccessionNumber")
_MIN_IDENTIFIER = 3
_PYDICOM_LOCK = threading.Lock()
_PYDICOM_READY = False


@dataclass(frozen=True)
class DicomHeader:
    """What the workbench reads from a DICOM header. Identifying values are for comparison only."""

    path: Path
    photometric: str
    transfer_syntax: str
    frames: int
    metadata: dict[str, str]
    """The kept fields (:data:`KEPT_METADATA`, well-formed ones only) plus PhotometricInterpretation
    and TransferSyntaxUID: safe to store."""
    times: tuple[tuple[str, datetime], ...]
    """Acquisition times found, as (source, time), in the order of the pre/post rule."""
    patient_id: str = field(default="", repr=False)
    """PatientID in clear: only ever passed to :func:`pseudonym`, never stored or shown."""
    identifiers: frozenset[str] = field(default=frozenset(), repr=False)
    """Identifying values (PatientID, PatientName and its parts, ...), case-folded, for leak checks."""


@dataclass(frozen=True)
class DecodedDicom:
    """Pixels of one DICOM image as 8-bit RGB, its photometric interpretation and a conversion note."""

    rgb: np.ndarray
    photometric: str
    note: str


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is to be read as DICOM: a DICOM suffix, or the 'DICM' marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PREAMBLE + 4)
    except OSError:
        return False  # the image reader reports missing or unreadable files
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def read_header(path: Path) -> DicomHeader:
    """Read a DICOM header (no pixel data); ValidationError naming the file when it is unusable."""
    ds = _read(Path(path))
    return _header(Path(path), ds)


def decode(path: Path, max_pixels: int) -> DecodedDicom:
    """Decode the single frame of a DICOM file to a uint8 (H, W, 3) RGB array (rules: module docstring).

    Refuses, with the file and the reason, multi-frame files, unsupported photometric interpretations,
    transfer syntaxes without a decoder, and images over ``max_pixels`` (checked before decoding).
    """
    path = Path(path)
    ds = _read(path)
    header = _header(path, ds)
    pi = header.photometric
    rows, cols = _int(ds, "Rows", path), _int(ds, "Columns", path)
    if rows < 1 or cols < 1:
        raise ValidationError(f"DICOM image has no pixels (Rows {rows}, Columns {cols}): {path}")
    if rows * cols > max_pixels:
        raise ValidationError(
            f"image too large: {cols}x{rows} = {rows * cols} pixels exceeds the limit of {max_pixels} "
            f"(decompression bomb?): {path}"
        )
    bits = _int(ds, "BitsStored", path)
    if not 1 <= bits <= 16:
        raise ValidationError(f"unsupported DICOM BitsStored {bits} (1-16 supported): {path}")
    signed = _int(ds, "PixelRepresentation", path, default=0) == 1
    arr = _pixel_array(ds, path, header.transfer_syntax)
    expected = (rows, cols) if _SUPPORTED_PI[pi] == 1 else (rows, cols, 3)
    if arr.shape != expected or arr.dtype.kind not in "iu":
        raise ValidationError(
            f"DICOM pixel data does not match its header (got {arr.dtype} {arr.shape}, "
            f"expected integer {expected}): {path}"
        )
    values = arr.astype(np.int64)
    if signed:
        values = values + (1 << (bits - 1))
    top = (1 << bits) - 1
    if bits == 8:
        u8 = np.clip(values, 0, 255).astype(np.uint8)
    else:
        u8 = np.clip(np.rint(np.clip(values, 0, top) * (255.0 / top)), 0, 255).astype(np.uint8)
    notes = [f"DICOM {pi}" + ("" if pi == "RGB" else " -> RGB")]
    if pi == "MONOCHROME1":
        u8 = 255 - u8
        notes.append("inverted")
    if bits != 8 or signed:
        notes.append(f"{'signed ' if signed else ''}{bits}-bit scaled to 8 bits")
    rgb = np.repeat(u8[..., None], 3, axis=2) if u8.ndim == 2 else u8
    note = notes[0] + (f" ({', '.join(notes[1:])})" if len(notes) > 1 else "")
    return DecodedDicom(rgb=np.ascontiguousarray(rgb), photometric=pi, note=note)


def _pydicom() -> Any:
    """pydicom, configured once so it never quotes header values in warnings or log records."""
    global _PYDICOM_READY
    import pydicom
    from pydicom import config

    with _PYDICOM_LOCK:
        if not _PYDICOM_READY:
            config.settings.reading_validation_mode = config.IGNORE
            logging.getLogger("pydicom").addFilter(lambda _record: False)
            warnings.filterwarnings("ignore", module=r"(pydicom|pylibjpeg|libjpeg)(\.|$)")
            _PYDICOM_READY = True
    return pydicom


def _read(path: Path) -> Any:
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    with file_read_errors(path), open(path, "rb") as handle:
        head = handle.read(_PREAMBLE + 4)
    if len(head) < _PREAMBLE + 4 or head[_PREAMBLE:] != b"DICM":
        raise ValidationError(f"not a DICOM file (no 'DICM' marker at byte 128): {path}")
    try:
        # Large values (the pixel data) are read only when used, after the header checks (size, frames).
        return pydicom.dcmread(path, defer_size="64 KB")
    except InvalidDicomError:
        raise ValidationError(f"not a readable DICOM file (invalid header): {path}") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, AttributeError) as exc:
        # Message text is left out on purpose: a parser error may quote header values.
        raise ValidationError(f"truncated or corrupt DICOM file ({type(exc).__name__}): {path}") from None


def _header(path: Path, ds: Any) -> DicomHeader:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is None:
        raise ValidationError(f"DICOM file has no TransferSyntaxUID in its file meta header: {path}")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise ValidationError(f"DICOM float pixel data is not supported: {path}")
    if "PixelData" not in ds:
        raise ValidationError(
            f"DICOM file has no pixel data (PixelData missing, or the file is truncated): {path}"
        )
    frames = _int(ds, "NumberOfFrames", path, default=1)
    if frames > 1:
        raise ValidationError(
            f"multi-frame DICOM refused: {path} has NumberOfFrames {frames}; "
            "export the frame to use as a single-frame file"
        )
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if pi not in _SUPPORTED_PI:
        shown = pi if re.fullmatch(r"[A-Z0-9_ ]{1,32}", pi) else "missing or malformed"
        raise ValidationError(
            f"unsupported DICOM PhotometricInterpretation {shown} "
            f"(supported: {', '.join(_SUPPORTED_PI)}): {path}"
        )
    samples = _int(ds, "SamplesPerPixel", path, default=1)
    if samples != _SUPPORTED_PI[pi]:
        raise ValidationError(
            f"DICOM SamplesPerPixel {samples} does not fit PhotometricInterpretation {pi}: {path}"
        )
    metadata: dict[str, str] = {}
    for name in KEPT_METADATA:
        value = str(ds.get(name, "") or "").strip()
        if value and len(value) <= _UID_MAX and _WELL_FORMED[name].fullmatch(value):
            metadata[name] = value
    metadata["PhotometricInterpretation"] = pi
    metadata["TransferSyntaxUID"] = str(ts)
    return DicomHeader(
        path=path,
        photometric=pi,
        transfer_syntax=str(ts),
        frames=frames,
        metadata=metadata,
        times=_times(ds),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        identifiers=_identifiers(ds),
    )


def _int(ds: Any, name: str, path: Path, default: int | None = None) -> int:
    value = ds.get(name, None)
    if value is None or value == "":
        if default is None:
            raise ValidationError(f"DICOM header lacks {name}: {path}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"DICOM {name} is not an integer: {path}") from None


def _pixel_array(ds: Any, path: Path, transfer_syntax: str) -> np.ndarray:
    from pydicom.pixels import pixel_array
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    # The JPEG family goes through pylibjpeg (libjpeg); other syntaxes use what pydicom has installed.
    plugin = "pylibjpeg" if uid.is_compressed and _is_libjpeg_syntax(uid) else ""
    try:
        return np.asarray(pixel_array(ds, decoding_plugin=plugin, as_rgb=True))
    except (NotImplementedError, RuntimeError) as exc:
        raise ValidationError(
            f"cannot decode DICOM pixel data in transfer syntax {uid.name or uid} "
            f"(no working decoder: {_short(exc)}): {path}"
        ) from None
    except (ValueError, OSError, EOFError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValidationError(
            f"truncated or corrupt DICOM pixel data ({uid.name or uid}; {type(exc).__name__}): {path}"
        ) from None


def _is_libjpeg_syntax(uid: Any) -> bool:
    from pydicom import uid as uids

    return uid in {
        uids.JPEGBaseline8Bit,
        uids.JPEGExtended12Bit,
        uids.JPEGLossless,
        uids.JPEGLosslessSV1,
        uids.JPEGLSLossless,
        uids.JPEGLSNearLossless,
    }


def _identifiers(ds: Any) -> frozenset[str]:
    """Identifying values of the header, case-folded; names also split into their components."""
    found: set[str] = set()
    for name in _IDENTIFYING:
        value = ds.get(name, None)
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, list | tuple) else [value]  # MultiValue is a list
        for item in values:
            text = str(item).strip()
            parts = [text, *re.split(r"[\^=\s]+", text)]
            found.update(p.casefold() for p in parts if len(p) >= _MIN_IDENTIFIER)
    return frozenset(found)


def order_by_time(a: DicomHeader, b: DicomHeader) -> tuple[DicomHeader, DicomHeader, str]:
    """(pre, post, source): the earlier acquisition is pre (rule: module docstring).

    ValidationError naming both files when they share no acquisition time field or the times are equal.
    """
    times_a, times_b = dict(a.times), dict(b.times)
    for source, _, _ in _TIME_SOURCES:
        if source in times_a and source in times_b:
            ta, tb = times_a[source], times_b[source]
            if (ta.tzinfo is None) != (tb.tzinfo is None):  # one has an offset: compare as local times
                ta, tb = ta.replace(tzinfo=None), tb.replace(tzinfo=None)
            if ta == tb:
                raise ValidationError(
                    f"cannot tell pre from post: {a.path.name} and {b.path.name} have the same {source}; "
                    "name them pre.dcm and post.dcm or list them in a manifest"
                )
            return (a, b, source) if ta < tb else (b, a, source)
    raise ValidationError(
        f"cannot tell pre from post: {a.path.name} and {b.path.name} do not both have "
        "AcquisitionDateTime, AcquisitionTime or ContentTime; name them pre.dcm and post.dcm "
        "or list them in a manifest"
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
