"""De-identification: the per-installation salt, pseudonymised patient ids, the leak check for
identifiers, redaction of messages, and the PNG copies stored instead of the DICOM files.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.errors import SettingsError

if TYPE_CHECKING:
    pass


SALT_FILE = "id_salt"
STORE_DIR = ("images", "dicom")
PSEUDONYM_PREFIX = "pt-"


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
