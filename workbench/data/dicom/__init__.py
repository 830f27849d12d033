"""DICOM case images: decoding to 8-bit RGB, de-identification, pre/post order, and a synthetic writer.

Rules, and why:

* **One loader.** :mod:`workbench.data.images` sends every file that has the DICOM Part 10 marker
  ('DICM' at byte 128) or a ``.dcm``/``.dicom`` suffix to :func:`decode`, so import validation, the
  training pipeline, inference, bundle prediction and the baseline all read a DICOM the same way.
* **What import stores.** Import converts each DICOM image to a de-identified PNG (pixels only, no
  metadata) at ``$WORKBENCH_HOME/images/dicom/<sha256 of the PNG>.png`` and the case row points to
  that PNG (its ``pre_sha256``/``post_sha256`` are the PNG's). So the UI, an export or any tool that
  opens a case image reads a file without a DICOM header, and training does not re-decode JPEG-in-DICOM.
  The original DICOM files are only read, never modified, and are not needed after import.
* **Decoding.** One frame only: a multi-frame file is refused naming NumberOfFrames. Photometric
  interpretations RGB, YBR_FULL and YBR_FULL_422 give RGB (pydicom converts YCbCr, compressed or not);
  MONOCHROME2 gives grey RGB and MONOCHROME1 inverted grey RGB; others are refused. JPEG transfer
  syntaxes are decoded by pylibjpeg (libjpeg), others by whatever pydicom has installed; a syntax with
  no decoder is refused naming it. BitsStored other than 8 is scaled linearly over its full range
  (``v * 255 / (2**BitsStored - 1)``; signed data shifted by ``2**(BitsStored - 1)`` first), the same
  fixed rule as 16-bit PNGs, so brightness never depends on the image content; modality and VOI LUTs
  (windowing) are not applied: they are for radiology grey levels, not photographs.
* **De-identification.** Kept as case metadata (``cases.source_metadata``): StudyDate,
  SeriesInstanceUID and AcquisitionDateTime (each only when well formed), plus the photometric
  interpretation and transfer syntax. PatientID becomes the case's patient id only as a pseudonym,
  ``pt-`` + the first 32 hex digits of HMAC-SHA256(salt, PatientID); PatientName, PatientBirthDate,
  InstitutionName, AccessionNumber and every other header field are never stored, logged or reported.
  pydicom's own warnings and log records can quote header values, so they are silenced (reading
  validation off, its log records dropped).
* **Salt.** 32 random bytes, generated once per installation into ``$WORKBENCH_HOME/id_salt``
  (hex, mode 0600; a file readable by others is refused). Losing it changes every future pseudonym, so
  back it up with the database.
* **Pre/post order.** From the manifest columns or the ``pre.*``/``post.*`` file names. A case folder
  holding exactly two DICOM files and no ``pre.*``/``post.*`` is ordered by acquisition time, earlier =
  pre, using the first of AcquisitionDateTime, AcquisitionDate+AcquisitionTime, ContentDate+ContentTime
  that both files have (a missing date is taken from SeriesDate, then StudyDate); missing or equal
  times are refused.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import SettingsError, ValidationError, file_read_errors

if TYPE_CHECKING:
    from workbench.data.synth import SynthSummary

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""File suffixes read as DICOM (files without one are recognised by the 'DICM' marker)."""

SALT_FILE = "id_salt"
STORE_DIR = ("images", "dicom")
PSEUDONYM_PREFIX = "pt-"
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
_TIME_SOURCES = (
    ("AcquisitionDateTime", None, None),
    ("AcquisitionDate+AcquisitionTime", "AcquisitionDate", "AcquisitionTime"),
    ("ContentDate+ContentTime", "ContentDate", "ContentTime"),
)
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


# ------------------------------------------------------------------------------------------- reading


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


def _times(ds: Any) -> tuple[tuple[str, datetime], ...]:
    fallback_date = _parse_date(ds.get("SeriesDate", "")) or _parse_date(ds.get("StudyDate", ""))
    out: list[tuple[str, datetime]] = []
    for source, date_tag, time_tag in _TIME_SOURCES:
        if date_tag is None:
            value = _parse_datetime(ds.get(source, ""))
        else:
            day = _parse_date(ds.get(date_tag, "")) or fallback_date or date(1900, 1, 1)
            clock = _parse_time(ds.get(time_tag, ""))
            value = datetime.combine(day, clock) if clock is not None else None
        if value is not None:
            out.append((source, value))
    return tuple(out)


def _parse_date(value: object) -> date | None:
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _parse_time(value: object) -> time | None:
    text = str(value or "").strip().replace(":", "")
    found = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text)
    if not found:
        return None
    hh, mm, ss, frac = found.groups()
    try:
        return time(int(hh), int(mm or 0), min(int(ss or 0), 59), int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


def _parse_datetime(value: object) -> datetime | None:
    text = str(value or "").strip()
    found = re.fullmatch(r"(\d{8})(\d{2,6}(?:\.\d{1,6})?)?([+-]\d{4})?", text)
    if not found:
        return None
    day = _parse_date(found.group(1))
    clock = _parse_time(found.group(2) or "00")
    if day is None or clock is None:
        return None
    out = datetime.combine(day, clock)
    if found.group(3):
        sign = 1 if found.group(3)[0] == "+" else -1
        hours, minutes = int(found.group(3)[1:3]), int(found.group(3)[3:])
        out = out.replace(tzinfo=UTC) - sign * timedelta(hours=hours, minutes=minutes)
    return out


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


# -------------------------------------------------------------------------------- de-identification


def load_salt(home: Path) -> bytes:
    """The installation's pseudonym salt from ``home/id_salt``, created (mode 0600) on first use.

    SettingsError when the file is readable by other users or not 64 hex digits; creation is atomic,
    so two imports starting together agree on one salt.
    """
    home = Path(home)
    path = home / SALT_FILE
    if not path.exists():
        try:
            home.mkdir(parents=True, exist_ok=True)
            tmp = home / f".{SALT_FILE}.{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # fails if another process created it first: theirs is used
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise SettingsError(f"cannot create the ID salt file {path}: {exc.strerror or exc}") from None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the ID salt file {path}: {exc}") from None
    if os.name == "posix" and mode & 0o077:
        raise SettingsError(
            f"the ID salt file {path} is readable by other users (mode {mode & 0o777:o}); "
            f"run: chmod 600 {path}"
        )
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise SettingsError(
            f"the ID salt file {path} is corrupt (expected 64 hex digits); restore it from a backup "
            "(a new salt would give every patient a new pseudonym)"
        )
    return bytes.fromhex(text)


def pseudonym(patient_id: str, salt: bytes) -> str:
    """``pt-`` + 32 hex digits of HMAC-SHA256(salt, PatientID): stable per installation, not reversible."""
    digest = hmac.new(salt, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


def contains_identifier(text: str, identifiers: frozenset[str] | set[str]) -> bool:
    """Whether ``text`` contains any of the (case-folded) identifying values."""
    folded = text.casefold()
    return any(value in folded for value in identifiers)


def redact(text: str, identifiers: frozenset[str] | set[str]) -> str:
    """``text`` with every identifying value replaced by ``<redacted>`` (case-insensitive)."""
    for value in sorted(identifiers, key=len, reverse=True):
        text = re.sub(re.escape(value), "<redacted>", text, flags=re.IGNORECASE)
    return text


def png_bytes(rgb: np.ndarray) -> bytes:
    """The de-identified PNG stored at import: the RGB pixels and nothing else (deterministic bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def store_dir(home: Path) -> Path:
    """Folder of the de-identified PNGs made from DICOM images."""
    return Path(home).joinpath(*STORE_DIR)


# --------------------------------------------------------------------------------- synthetic writer

ENCODINGS: tuple[str, ...] = ("rgb", "jpeg_baseline", "ybr_full")
"""What :func:`write_dicom` can write: uncompressed RGB, JPEG baseline (YBR_FULL_422, 4:2:2) and
uncompressed YBR_FULL."""

_VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


def write_dicom(
    path: Path,
    rgb: np.ndarray,
    *,
    encoding: str = "rgb",
    patient_id: str = "",
    patient_name: str = "",
    acquired: datetime | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    uid_seed: str = "",
    extra: dict[str, str] | None = None,
    jpeg_quality: int = 95,
) -> None:
    """Write ``rgb`` (uint8 H x W x 3) as a single-frame VL Photographic DICOM file, atomically.

    ``acquired`` sets AcquisitionDateTime, ContentDate/Time and StudyDate; UIDs not given are derived
    from ``uid_seed`` and the path name, so the same arguments give the same bytes. ``extra`` sets more
    header keywords (e.g. InstitutionName) as given.
    """
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValidationError(f"write_dicom: expected a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if encoding not in ENCODINGS:
        raise ValidationError(f"write_dicom: unknown encoding {encoding!r} (use {', '.join(ENCODINGS)})")
    path = Path(path)
    seed = f"{uid_seed}:{path.name}"
    uid = _uid(seed, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _VL_PHOTOGRAPHIC
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit if encoding == "jpeg_baseline" else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = _VL_PHOTOGRAPHIC, uid
    ds.Modality = "XC"
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.StudyInstanceUID = study_uid or _uid(uid_seed, "study")
    ds.SeriesInstanceUID = series_uid or _uid(seed, "series")
    if acquired is not None:
        ds.StudyDate = ds.ContentDate = acquired.strftime("%Y%m%d")
        ds.ContentTime = acquired.strftime("%H%M%S")
        ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.SamplesPerPixel = 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PlanarConfiguration = 0
    if encoding == "rgb":
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = rgb.tobytes()
    elif encoding == "ybr_full":
        ds.PhotometricInterpretation = "YBR_FULL"
        ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    else:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=jpeg_quality, subsampling=1)  # 4:2:2
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(out.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_SYNTH_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SYNTH_MARKER = "dicom"
_BASE_TIME = datetime(2024, 1, 1, 8, 0, 0)


def generate_dicom_dataset(out: Path, *, image_format: str = "dcm", **options: Any) -> SynthSummary:
    """Write the synthetic data set of :func:`workbench.data.synth.generate_dataset` as DICOM pairs.

    The synthetic pairs are generated as PNG in a temporary folder, then each image becomes
    ``cases/<case_id>/pre.dcm``/``post.dcm``, cycling per case through uncompressed RGB, JPEG baseline
    (YBR_FULL_422) and uncompressed YBR_FULL. Each file carries planted synthetic identifiers
    (PatientID ``ZZSYN-<n>``, PatientName ``ZZSYNTH^PATIENT<n>``, InstitutionName, AccessionNumber,
    PatientBirthDate) and acquisition times (post 2 minutes after pre). The manifest has no
    ``patient_id`` column, so import takes the pseudonymised PatientID. ``out`` must be empty or an
    earlier output of this function (which is replaced). Other keyword options go to ``generate_dataset``.
    """
    from PIL import Image

    from workbench.data.synth import generate_dataset

    if image_format.strip().lower().lstrip(".") not in ("dcm", "dicom"):
        raise ValidationError(f"generate_dicom_dataset: image_format must be dcm, got {image_format!r}")
    root = Path(out)
    _prepare_dicom_output(root)
    with tempfile.TemporaryDirectory(prefix="workbench-synth-dcm-") as tmp:
        source = Path(tmp) / "synth"
        summary = generate_dataset(source, image_format="png", **options)
        params = json.loads((source / "synth.json").read_text(encoding="utf-8"))
        uid_seed = f"workbench-synth:{params.get('seed')}:{params.get('n')}:{params.get('size')}"
        renamed: dict[str, str] = {}
        manifest = source / "manifest.csv"
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        root.mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(rows):
            encoding = ENCODINGS[i % len(ENCODINGS)]
            number = re.sub(r"\D", "", row.get("patient_id", "")) or str(i + 1)
            acquired = _BASE_TIME + timedelta(minutes=10 * i)
            for offset, column in enumerate(("pre_path", "post_path")):
                rel = row[column]
                target_rel = str(Path(rel).with_suffix(".dcm").as_posix())
                target = root / target_rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(source / rel) as img:
                    rgb = np.array(img.convert("RGB"), dtype=np.uint8)
                write_dicom(
                    target,
                    rgb,
                    encoding=encoding,
                    patient_id=f"ZZSYN-{number}",
                    patient_name=f"ZZSYNTH^PATIENT{number}",
                    acquired=acquired + timedelta(minutes=2 * offset),
                    study_uid=_uid(uid_seed, row["case_id"], "study"),
                    series_uid=_uid(uid_seed, row["case_id"], "series"),
                    uid_seed=f"{uid_seed}:{row['case_id']}",
                    extra={
                        "PatientBirthDate": "19010101",
                        "InstitutionName": "ZZSYNTH CLINIC",
                        "AccessionNumber": f"ZZACC{i + 1:06d}",
                    },
                )
                renamed[rel] = target_rel
        written = _copy_synth_files(source, root, renamed)
        note = (
            "\nDICOM variant\n  The images were converted to DICOM (VL Photographic, one frame per file), "
            "cycling per case\n  through uncompressed RGB, JPEG baseline (YBR_FULL_422) and uncompressed "
            "YBR_FULL.\n  Every file carries PLANTED SYNTHETIC identifiers (PatientID ZZSYN-<n>, "
            "PatientName\n  ZZSYNTH^PATIENT<n>, ...) for de-identification tests; manifest.csv has no "
            "patient_id\n  column, so import uses the pseudonymised PatientID.\n"
        )
        with (root / "README.txt").open("a", encoding="utf-8") as fh:
            fh.write(note)
        params.update(image_format="dcm", **{_SYNTH_MARKER: {"encodings": list(ENCODINGS), "files": written}})
        _write_text_atomic(root / "synth.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
    return replace(
        summary, root=root, manifest=root / "manifest.csv", ground_truth=root / summary.ground_truth.name
    )


def _uid(*parts: str) -> str:
    """A deterministic UID under the 2.25 root: 128 bits of sha256 over ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def _prepare_dicom_output(root: Path) -> None:
    """Refuse a non-empty ``root`` unless it is an earlier DICOM synth output, which is cleared."""
    if root.exists() and not root.is_dir():
        raise ValidationError(f"output path {root} exists and is not a folder; choose an empty folder")
    if not root.is_dir() or not any(root.iterdir()):
        return
    try:
        previous = json.loads((root / "synth.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        previous = None
    if not isinstance(previous, dict) or not isinstance(previous.get(_SYNTH_MARKER), dict):
        raise ValidationError(
            f"{root} is not empty and is not a DICOM synthetic data folder; choose an empty folder"
        )
    (root / "synth.json").unlink(missing_ok=True)  # first: an interrupted clear is never taken as complete
    for rel in previous[_SYNTH_MARKER].get("files", []):
        target = (root / str(rel)).resolve()
        if target.is_relative_to(root.resolve()) and target.is_file():
            target.unlink()
    shutil.rmtree(root / "cases", ignore_errors=True)


def _copy_synth_files(source: Path, root: Path, renamed: dict[str, str]) -> list[str]:
    """Copy the non-image files of the synthetic output, with image paths in CSVs renamed to ``.dcm``.

    The manifest loses its ``patient_id`` column (the DICOM files carry the patient). Returns the
    relative names written (synth.json excluded: it is written last by the caller).
    """
    written = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if not path.is_file() or rel == "synth.json" or path.suffix.lower() in _SYNTH_IMAGE_SUFFIXES:
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                records = list(csv.reader(fh))
            if rel == "manifest.csv" and records and "patient_id" in records[0]:
                drop = records[0].index("patient_id")
                records = [r[:drop] + r[drop + 1 :] for r in records]
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(
                [[renamed.get(cell, cell) for cell in record] for record in records]
            )
            _write_text_atomic(target, buf.getvalue())
        else:
            shutil.copyfile(path, target)
        written.append(rel)
    return written


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
