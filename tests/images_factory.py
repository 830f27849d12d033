"""Real image files of every awkward kind, written with Pillow, for import tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(path: Path, seed: int, size: tuple[int, int] = (40, 32), fmt: str | None = None) -> Path:
    """A random RGB image (distinct bytes per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def mode_image(path: Path, mode: str, seed: int) -> Path:
    """An image stored in a non-RGB mode: L, I;16, RGBA, P, CMYK."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (32, 40), dtype=np.uint16)
        Image.fromarray(arr).save(path)  # uint16 -> mode I;16
    elif mode == "L":
        Image.fromarray(rng.integers(0, 256, (32, 40), dtype=np.uint8)).save(path)
    elif mode == "RGBA":
        Image.fromarray(rng.integers(0, 256, (32, 40, 4), dtype=np.uint8)).save(path)
    elif mode == "P":
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).convert("P").save(path)
    elif mode == "CMYK":
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).convert("CMYK").save(path, "JPEG")
    else:
        raise ValueError(mode)
    return path


def exif_rotated(path: Path, seed: int) -> Path:
    """A 40x20 JPEG tagged with EXIF orientation 6 (displayed rotated to 20x40)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes())
    return path


def truncated_jpeg(path: Path, seed: int) -> Path:
    rgb(path, seed, size=(64, 64), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def huge_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (a decompression bomb), tiny on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
