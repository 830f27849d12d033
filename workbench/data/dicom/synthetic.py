"""Synthetic DICOM pairs for tests and demos: ``write_dicom`` and ``generate_dicom_dataset`` (the
synthetic data set of :mod:`workbench.data.synth` as DICOM files with planted identifiers).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import ValidationError
from workbench.files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from workbench.data.synth import SynthSummary
from workbench.data.dicom.reading import _pydicom

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
    atomic_write_bytes(path, out.getvalue())


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
        atomic_write_text(root / "synth.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
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
            atomic_write_text(target, buf.getvalue())
        else:
            shutil.copyfile(path, target)
        written.append(rel)
    return written
