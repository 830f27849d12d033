"""Validate and load the image files of a case pair.

Import calls `resolve_inside` and `inspect_image` on every path it reads from a folder or manifest, so
that a broken, truncated, oversized or hostile file is refused with a one-line reason before it reaches
the database; training and inference call `load_rgb` to get the 8-bit RGB array the model expects.

Choices made here, and why:

* Only common photographic formats are opened (`SUPPORTED_FORMATS`): this keeps Pillow from handing
  untrusted files to plugins such as EPS (which runs Ghostscript).
* Images are fully decoded, not just identified: a truncated JPEG has a valid header and would only
  fail (or, worse, silently decode half grey) later in a training job.
* The pixel limit is checked on the header size before any pixel data is decoded. Pillow's own
  `Image.MAX_IMAGE_PIXELS` global is neither read nor changed for this; when Pillow refuses an image
  first (its hard limit is twice that global) the refusal is turned into the same `ValidationError`.
* EXIF orientation is applied, so width and height are the displayed ones: the pre and post photographs
  of a pair must have the same orientation for the model and for the expert looking at them.
* Transparent pixels are composited on **black**: a transparent pixel carries no tissue, black is "no
  signal" (it is what premultiplied alpha gives) and it matches the dark periphery of a colposcopy
  photograph, whereas white would add a bright region the model may mistake for acetowhite tissue.
* 16-bit data is scaled by 1/257 over the full 16-bit range (0 -> 0, 65535 -> 255, 32896 -> 128), so
  it is neither clipped at 255 nor stretched per image (stretching would make brightness depend on
  content). 32-bit integer ("I") data is clipped to 0-65535 first. Float ("F") data in [0, 1] is
  scaled by 255; other float data is taken to be on the 0-255 scale and clipped.
* CMYK and YCbCr use Pillow's conversion to RGB (no ICC colour management).
* DICOM files (the 'DICM' marker at byte 128, or a ``.dcm``/``.dicom`` suffix) are decoded by
  :mod:`workbench.data.dicom` inside this same path, so every reader of a case image (import, training
  pipeline, inference, bundle prediction) reads a DICOM the same way; its rules are in that module.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from workbench import files
from workbench.data import dicom
from workbench.errors import ValidationError, file_read_errors

# Register every Pillow plugin now: Pillow fills Image.OPEN lazily, and a first decode from several
# threads at once (import, the training pipeline) can see it half filled and refuse a valid file.
Image.init()

MAX_PIXELS: int = 50_000_000
"""Largest accepted image (width x height, in pixels); anything larger is treated as a decompression bomb."""

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "TIFF", "BMP", "WEBP", "GIF")
"""Pillow format names that are opened; any other file is refused as 'not an image file'."""

_ORIENTATION_TAG = 0x0112
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)
_GRAY8_MODES = {"1", "L"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_PILLOW_RGB_MODES = {"RGBX", "CMYK", "YCbCr"}
_UINT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
SUPPORTED_MODES: frozenset[str] = frozenset(
    {"RGB", "P", "I", "F"} | _GRAY8_MODES | _ALPHA_MODES | _PILLOW_RGB_MODES | _UINT16_MODES
)
"""Pillow image modes that `load_rgb` converts to RGB; others (e.g. LAB) are refused."""


@dataclass(frozen=True)
class ImageInfo:
    """What import records about one image file; width and height are after EXIF orientation.

    For a DICOM file, ``format`` is "DICOM" and ``mode`` its PhotometricInterpretation.
    """

    path: Path
    sha256: str
    width: int
    height: int
    mode: str
    format: str
    converted: str | None
    """What `load_rgb` does to reach 8-bit RGB, e.g. "I;16 -> RGB (...)"; None when the file is plain RGB."""


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve `relative` (a path from a CSV) against `root` and return the absolute, resolved path.

    Refuses empty and absolute paths (POSIX or Windows style) and any path that ends up outside `root`
    after '..' and symlinks are resolved, so a manifest cannot make the workbench read arbitrary files.
    Backslashes are read as separators, since manifests are often written on Windows. The path need
    not exist; `inspect_image` reports missing files.
    """
    text = (relative or "").strip()
    if not text:
        raise ValidationError("image path is empty")
    if "\x00" in text:
        raise ValidationError(f"image path contains a NUL character: {text!r}")
    text = text.replace("\\", "/")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise ValidationError(f"absolute image path not allowed (must be relative to {root}): {relative}")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise ValidationError(f"image path escapes the data folder {base}: {relative}")
    return target


def sha256_file(path: Path) -> str:
    """Hex sha256 of an image file's bytes; a file that cannot be read is a ValidationError naming it."""
    with file_read_errors(path):
        return files.sha256_file(path)


def inspect_image(path: Path, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Fully decode the image at `path` and describe it; ValidationError with the reason if it is unusable.

    Decoding all the way (including the conversion `load_rgb` will do) is what catches truncated files
    and unsupported modes at import time instead of in the middle of a training run.
    """
    return decode_image(path, max_pixels)[0]


def decode_image(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[ImageInfo, np.ndarray]:
    """`inspect_image` plus the full-size 8-bit RGB pixels it decoded (import stores DICOMs from them)."""
    path = Path(path)
    _check_file(path)
    digest = sha256_file(path)
    rgb, mode, fmt, notes, (width, height) = _decode(path, max_pixels, None)
    info = ImageInfo(
        path=path,
        sha256=digest,
        width=width,
        height=height,
        mode=mode,
        format=fmt,
        converted="; ".join(notes) or None,
    )
    return info, rgb


def load_rgb(path: Path, size: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `path` to an 8-bit RGB array of shape (height, width, 3), EXIF orientation applied.

    `size` is (width, height); when given, the image is resized with Pillow's bilinear filter, which
    is antialiased when shrinking (its support widens with the scale factor, like an area filter).
    Large JPEGs are first decoded at a reduced DCT scale that is still at least `size`, which is much
    faster and loses nothing visible after the antialiased resize. The conversion rules are in the
    module docstring. Raises the same ValidationErrors as `inspect_image`.
    """
    path = Path(path)
    if size is not None:
        if (
            len(size) != 2
            or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
            or min(size) < 1
        ):
            raise ValueError(f"size must be (width, height) with two positive integers, got {size!r}")
        size = (int(size[0]), int(size[1]))
    _check_file(path)
    rgb, _, _, _, _ = _decode(path, max_pixels, size)
    return rgb


def _check_file(path: Path) -> None:
    """Reasons a path cannot be an image, found without opening it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ValidationError(f"file not found: {path}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read file: {path} ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ValidationError(f"not a regular file (is a directory): {path}")
    if not path.is_file():
        raise ValidationError(f"not a regular file: {path}")
    if stat.st_size == 0:
        raise ValidationError(f"file is empty (0 bytes): {path}")


def _decode(
    path: Path, max_pixels: int, size: tuple[int, int] | None
) -> tuple[np.ndarray, str, str, list[str], tuple[int, int]]:
    """Open, check, fully decode, orient and convert; returns (rgb, original mode, format, notes, (w, h)).

    (w, h) is the full decoded size, before any resize to `size`.
    """
    if dicom.is_dicom(path):
        decoded = dicom.decode(path, max_pixels)
        rgb = decoded.rgb
        full = (rgb.shape[1], rgb.shape[0])
        if size is not None and full != size:
            resized = Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.BILINEAR)
            rgb = np.array(resized, dtype=np.uint8)
        return np.ascontiguousarray(rgb), decoded.photometric, "DICOM", [decoded.note], full
    formats = [f for f in SUPPORTED_FORMATS if f in Image.OPEN] or None
    try:
        handle = Image.open(path, formats=formats)
    except UnidentifiedImageError:
        raise ValidationError(
            f"not an image file (cannot identify format): {path} (supported: {', '.join(SUPPORTED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        # Pillow refused on the header size alone (its hard limit is 2 x Image.MAX_IMAGE_PIXELS).
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ValidationError(
            _too_large(path, None, int(found.group(1)) if found else None, max_pixels)
        ) from None
    except FileNotFoundError:
        raise ValidationError(f"file not found: {path}") from None
    except _PILLOW_ERRORS as exc:
        raise ValidationError(f"truncated or corrupt image data: {path} ({_short(exc)})") from None

    with handle as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ValidationError(_too_large(path, (width, height), width * height, max_pixels))
        mode, fmt = img.mode, img.format or "unknown"
        if mode not in SUPPORTED_MODES:
            raise ValidationError(f"unsupported image mode {mode}: {path}")
        notes: list[str] = []
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            notes.append(f"first of {frames} frames used")
        if size is not None and fmt == "JPEG":
            # Reduced-scale JPEG decoding (EXIF is in the JPEG header, so reading it here decodes
            # nothing); the requested size is in the stored, unrotated frame.
            swap = _orientation(img, path) in (5, 6, 7, 8)
            img.draft(None, (size[1], size[0]) if swap else size)
        try:
            img.load()
        except _PILLOW_ERRORS as exc:
            raise ValidationError(f"truncated or corrupt image data: {path} ({_short(exc)})") from None
        orientation = _orientation(img, path)  # after load: PNG may keep EXIF after the pixel data
        if fmt in ("JPEG", "MPO") and ImageFile.LOAD_TRUNCATED_IMAGES and not _jpeg_has_end(path):
            # Someone turned on Pillow's LOAD_TRUNCATED_IMAGES globally; do not accept half an image.
            raise ValidationError(f"truncated or corrupt image data: {path} (JPEG end marker missing)")
        try:
            oriented = ImageOps.exif_transpose(img)
        except _PILLOW_ERRORS as exc:
            raise ValidationError(f"unreadable EXIF metadata: {path} ({_short(exc)})") from None
        if oriented is None:  # pragma: no cover - only returned when in_place=True
            oriented = img
        if isinstance(orientation, int) and 2 <= orientation <= 8:
            notes.append(f"EXIF orientation {orientation} applied")
        rgb, how = _to_rgb8(oriented)
        if how:
            notes.append(how)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
        resized = Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.BILINEAR)
        rgb = np.array(resized, dtype=np.uint8)
    return np.ascontiguousarray(rgb), mode, fmt, notes, (oriented.width, oriented.height)


def _to_rgb8(img: Image.Image) -> tuple[np.ndarray, str | None]:
    """Convert a loaded image of any supported mode to a writable uint8 (H, W, 3) array plus a note."""
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8), None
    if mode in _GRAY8_MODES:
        gray = np.array(img.convert("L"), dtype=np.uint8)
        return _gray_to_rgb(gray), f"{mode} -> RGB"
    if mode in _PILLOW_RGB_MODES:
        return np.array(img.convert("RGB"), dtype=np.uint8), f"{mode} -> RGB"
    if mode in _ALPHA_MODES or mode == "P":
        rgba = np.array(img.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:4]
        if mode == "P" and bool((alpha == 255).all()):
            return rgba[..., :3].astype(np.uint8), "P -> RGB"
        rgb = (rgba[..., :3] * alpha + 127) // 255
        return rgb.astype(np.uint8), f"{mode} -> RGB (alpha composited on black)"
    if mode in _UINT16_MODES:
        values = np.asarray(img).astype(np.float64)
        return _gray_to_rgb(_round_u8(values / 257.0)), f"{mode} -> RGB (16-bit scaled by 1/257)"
    if mode == "I":
        values = np.clip(np.asarray(img).astype(np.float64), 0, 65535)
        return _gray_to_rgb(_round_u8(values / 257.0)), "I -> RGB (clipped to 0-65535, scaled by 1/257)"
    if mode == "F":
        values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            return _gray_to_rgb(_round_u8(values * 255.0)), "F -> RGB (0-1 scaled by 255)"
        return _gray_to_rgb(_round_u8(values)), "F -> RGB (clipped to 0-255)"
    raise ValidationError(f"unsupported image mode {mode}")  # pragma: no cover - guarded by SUPPORTED_MODES


def _orientation(img: Image.Image, path: Path) -> object:
    try:
        return img.getexif().get(_ORIENTATION_TAG)
    except _PILLOW_ERRORS as exc:
        raise ValidationError(f"unreadable EXIF metadata: {path} ({_short(exc)})") from None


def _round_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _jpeg_has_end(path: Path) -> bool:
    """Whether a JPEG's EOI marker (FFD9) is in its last 4 KiB (cameras may pad after it)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 4096))
        return b"\xff\xd9" in handle.read()


def _too_large(path: Path, dims: tuple[int, int] | None, pixels: int | None, max_pixels: int) -> str:
    if pixels is None or pixels <= max_pixels:
        # Only reachable when Pillow's own hard limit is below `max_pixels` and refused first.
        found = f"{pixels} pixels" if pixels else "the image"
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return f"image too large: {found} exceeds Pillow's limit of {limit} (decompression bomb?): {path}"
    shape = f"{dims[0]}x{dims[1]} = " if dims else ""
    return (
        f"image too large: {shape}{pixels} pixels exceeds the limit of {max_pixels} "
        f"(decompression bomb?): {path}"
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
