"""DICOM rows of an import: staging their de-identified PNGs and choosing a patient id.

Why apart: everything that touches the pseudonym salt or the image store is here, so the row checks
never handle a PatientID in clear and a dry run (``stage=False``) writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from workbench.data import dicom
from workbench.data.sources import RawRow
from workbench.errors import SettingsError, ValidationError


@dataclass(frozen=True)
class _Derived:
    """The de-identified PNG made from a DICOM image: where it goes, its sha256, where it is staged."""

    final: Path
    sha256: str
    staged: Path | None


class _DicomStore:
    """Set up on the first DICOM row: the pseudonym salt, and staging of the de-identified PNGs.

    ``stage=False`` (dry run) computes the PNGs' hashes and writes nothing. It also knows the workbench
    home (the default report folder is under it), read from the settings only when first needed.
    """

    def __init__(self, home: Path | None, stage: bool) -> None:
        self._home = home
        self._stage = stage
        self._lock = threading.Lock()
        self._salt: bytes | None = None
        self._staging: Path | None = None

    def home_dir(self) -> Path:
        """The workbench home (read from the settings on first use only)."""
        if self._home is None:
            from workbench.config import get_settings

            self._home = get_settings().home
        return self._home

    def salt(self) -> bytes:
        with self._lock:
            if self._salt is None:
                from workbench.config import get_settings

                configured = get_settings().id_salt
                self._salt = (
                    bytes.fromhex(configured.get_secret_value().strip())
                    if configured is not None
                    else dicom.load_salt(self.home_dir())
                )
            return self._salt

    def put(self, png: bytes) -> _Derived:
        """Stage one PNG (fsynced, so a later rename never exposes a partial file)."""
        digest = hashlib.sha256(png).hexdigest()
        with self._lock:
            store = dicom.store_dir(self.home_dir())
            if self._stage and self._staging is None:
                self._staging = store / f".incoming-{secrets.token_hex(8)}"
                try:
                    self._staging.mkdir(parents=True)
                except OSError as exc:
                    raise SettingsError(f"cannot create {self._staging}: {exc.strerror or exc}") from None
            staging = self._staging
        final = store / f"{digest}.png"
        if staging is None:
            return _Derived(final, digest, None)
        staged = staging / f"{secrets.token_hex(8)}.png"
        try:
            with open(staged, "wb") as fh:
                fh.write(png)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SettingsError(
                f"cannot write a de-identified image in {staging}: {exc.strerror or exc}"
            ) from None
        return _Derived(final, digest, staged)

    def commit(self, derived: list[_Derived]) -> None:
        """Move staged PNGs into place (an existing file of the same name already has these bytes)."""
        for item in derived:
            if item.staged is None or item.final.exists():
                continue
            try:
                os.replace(item.staged, item.final)
            except OSError as exc:
                raise SettingsError(
                    f"cannot store a de-identified image at {item.final}: {exc.strerror or exc}"
                ) from None

    def cleanup(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


def _dicom_patient_id(
    row: RawRow, case_id: str, headers: dict[str, dicom.DicomHeader], store: _DicomStore
) -> tuple[str, str]:
    """(patient id, where it came from) for a row with DICOM images; never the PatientID in clear.

    The manifest's patient id is kept unless it is the PatientID (then it is pseudonymised too); without
    one, the pseudonymised PatientID, else the case id. Case or patient ids holding identifiers are refused.
    """
    identifiers: set[str] = set()
    for h in headers.values():
        identifiers |= h.identifiers
    if dicom.contains_identifier(case_id, identifiers):
        raise ValidationError(
            "case id contains the DICOM's PatientID or PatientName (withheld); give the case a "
            "pseudonymous id"
        )
    found = {h.patient_id for h in headers.values() if h.patient_id}
    if len(found) > 1:
        raise ValidationError("the pre and post DICOM files name different patients (PatientID differs)")
    dicom_pid = next(iter(found), "")
    given = row.patient_id.strip()
    if given and not (dicom_pid and given.casefold() == dicom_pid.casefold()):
        if dicom.contains_identifier(given, identifiers):
            raise ValidationError(
                "patient id contains the DICOM's PatientID or PatientName; leave it empty to use the "
                "pseudonymised PatientID"
            )
        return given, "manifest"
    if dicom_pid:
        return dicom.pseudonym(dicom_pid, store.salt()), "DICOM PatientID, pseudonymised (HMAC-SHA256)"
    return case_id, "case id (the DICOM files have no PatientID)"
