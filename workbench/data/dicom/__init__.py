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

Modules: ``reading`` (recognise, read the header, decode, order by time), ``times`` (acquisition time
from the header), ``deid`` (salt, pseudonyms, identifier checks, stored PNG copies) and ``synthetic``
(synthetic DICOM pairs).
"""

from workbench.data.dicom.deid import (
    PSEUDONYM_PREFIX,
    SALT_FILE,
    STORE_DIR,
    contains_identifier,
    load_salt,
    png_bytes,
    pseudonym,
    redact,
    store_dir,
)
from workbench.data.dicom.reading import (
    DICOM_SUFFIXES,
    KEPT_METADATA,
    DecodedDicom,
    DicomHeader,
    decode,
    is_dicom,
    order_by_time,
    read_header,
)
from workbench.data.dicom.synthetic import ENCODINGS, generate_dicom_dataset, write_dicom

__all__ = [
    "DICOM_SUFFIXES",
    "ENCODINGS",
    "KEPT_METADATA",
    "PSEUDONYM_PREFIX",
    "SALT_FILE",
    "STORE_DIR",
    "DecodedDicom",
    "DicomHeader",
    "contains_identifier",
    "decode",
    "generate_dicom_dataset",
    "is_dicom",
    "load_salt",
    "order_by_time",
    "png_bytes",
    "pseudonym",
    "read_header",
    "redact",
    "store_dir",
    "write_dicom",
]
