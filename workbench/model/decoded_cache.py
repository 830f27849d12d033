"""Decoded, resized uint8 images on disk: inference feeds the model instead of waiting on the decoder.

Decoding and resizing a JPEG (``workbench.data.images.load_rgb``) costs about as much as the CPU
preset's whole model, and every inference run over a pool decoded every image again. Entries live
under::

    <root>/<width>x<height>-<RESIZE_METHOD>/<sha256[:2]>/<sha256>.u8

Keys, and why:

* The image is keyed by the sha256 of its file bytes, so a file whose content changes gets a new
  entry and a copied or renamed file shares one. Each process hashes a file once: the digest is
  remembered under (path, inode, size, modification time in ns), which any rewrite changes.
* The input size and ``RESIZE_METHOD`` (the decoder and filter ``load_rgb`` applies) name the
  folder, so another size or a changed resize never reads stale pixels.

An entry is ``MAGIC | height, width (uint32 LE) | blake2b-128 of the pixels | pixels``. A read checks
all four; a truncated, bit-flipped or wrongly sized entry counts as ``repaired`` and is decoded and
written again (never an error, never wrong pixels). Writes go to a temporary name and are renamed
(``files.atomic_replace``): processes filling the same entry write identical bytes, the last rename
wins, and no reader sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import ValidationError
from workbench.files import atomic_replace

RESIZE_METHOD = "pil-bilinear-draft-v1"
"""What ``load_rgb(path, size)`` does (Pillow decode with JPEG draft, bilinear resize); change it
when that changes, so old entries are left behind instead of read."""

MAGIC = b"WBDEC01\n"
_HEADER = len(MAGIC) + 8 + 16
_MEMO_LIMIT = 500_000


@dataclass
class CacheStats:
    """Counts since the cache object was made: entries read, decoded (absent) and repaired (bad)."""

    hits: int = 0
    misses: int = 0
    repaired: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)


_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of an image file, hashed once per process per (path, inode, size, mtime_ns)."""
    from workbench.data.images import sha256_file

    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ValidationError(f"cannot read image file: {p} ({exc.strerror or exc})") from None
    key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns)
    with _digests_lock:
        known = _digests.get(key)
    if known is not None:
        return known
    digest = sha256_file(p)
    with _digests_lock:
        if len(_digests) >= _MEMO_LIMIT:
            _digests.clear()
        _digests[key] = digest
    return digest


def encode_entry(rgb: np.ndarray) -> bytes:
    """The stored bytes of one (H, W, 3) uint8 image."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    h, w = rgb.shape[:2]
    shape = np.asarray([h, w], dtype="<u4").tobytes()
    return MAGIC + shape + hashlib.blake2b(pixels, digest_size=16).digest() + pixels


def decode_entry(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """The (H, W, 3) image in ``data`` when it is an intact entry of ``size`` (width, height), else None."""
    w, h = size
    if len(data) != _HEADER + h * w * 3 or not data.startswith(MAGIC):
        return None
    stored = np.frombuffer(data, dtype="<u4", count=2, offset=len(MAGIC))
    if (int(stored[0]), int(stored[1])) != (h, w):
        return None
    pixels = memoryview(data)[_HEADER:]
    if hashlib.blake2b(pixels, digest_size=16).digest() != data[len(MAGIC) + 8 : _HEADER]:
        return None
    return np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, 3)


class DecodedCache:
    """Decoded, resized uint8 images on disk, keyed by (file sha256, input size, resize method).

    :meth:`load` has ``load_rgb``'s signature for one image; it is safe to call from many threads
    and processes at once (see the module docstring). ``stats`` counts hits, misses and repairs.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = str(root)
        if not text or "://" in text:
            raise ValidationError(f"decoded cache: needs a local folder, got {text!r}")
        self.root = Path(root)
        self.stats = CacheStats()

    def entry_path(self, digest: str, size: tuple[int, int]) -> Path:
        """Where the entry of an image with this sha256 at ``size`` (width, height) lives."""
        w, h = size
        return self.root / f"{w}x{h}-{RESIZE_METHOD}" / digest[:2] / f"{digest}.u8"

    def load(self, path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
        """The image at ``path`` as ``load_rgb(path, size)`` returns it, from the cache when stored."""
        from workbench.data.images import load_rgb

        size = (int(size[0]), int(size[1]))
        entry = self.entry_path(file_digest(path), size)
        try:
            data = entry.read_bytes()
        except FileNotFoundError:
            data = None
        rgb = decode_entry(data, size) if data is not None else None
        if rgb is not None:
            self.stats.add("hits")
            return rgb
        self.stats.add("misses" if data is None else "repaired")
        rgb = load_rgb(Path(path), size=size)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_replace(entry) as tmp:
            tmp.write_bytes(encode_entry(rgb))
        return rgb


def settings_cache(artifacts: str | os.PathLike[str]) -> DecodedCache | None:
    """The cache under ``<artifacts>/decoded``; None when the artifact root is not a local folder."""
    text = str(artifacts)
    return None if "://" in text else DecodedCache(Path(text) / "decoded")
