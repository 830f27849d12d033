"""Tests for workbench.data.images with real files written by Pillow (or raw bytes for broken ones)."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from workbench.data.images import MAX_PIXELS, ImageInfo, inspect_image, load_rgb, resolve_inside, sha256_file
from workbench.errors import ValidationError


def _noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose valid IHDR claims width x height but whose pixel data is tiny (a bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    body = (
        _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# --------------------------------------------------------------------------- resolve_inside


def test_resolve_inside_accepts_relative_paths_and_normalises(tmp_path: Path) -> None:
    (tmp_path / "cases" / "a").mkdir(parents=True)
    assert resolve_inside(tmp_path, "cases/a/pre.jpg") == (tmp_path / "cases/a/pre.jpg").resolve()
    assert resolve_inside(tmp_path, "cases/b/../a/pre.jpg") == (tmp_path / "cases/a/pre.jpg").resolve()
    assert resolve_inside(tmp_path, " cases\\a\\post.png ") == (tmp_path / "cases/a/post.png").resolve()


@pytest.mark.parametrize("relative", ["", "   "])
def test_resolve_inside_refuses_empty(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValidationError, match="empty"):
        resolve_inside(tmp_path, relative)


@pytest.mark.parametrize(
    "relative", ["/etc/passwd", "C:\\data\\pre.jpg", "c:/data/pre.jpg", "\\\\server\\share\\x.jpg"]
)
def test_resolve_inside_refuses_absolute(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValidationError, match="absolute image path not allowed"):
        resolve_inside(tmp_path, relative)


@pytest.mark.parametrize("relative", ["../outside.jpg", "cases/../../outside.jpg", "..\\outside.jpg", ".."])
def test_resolve_inside_refuses_dotdot_escape(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValidationError, match="escapes the data folder"):
        resolve_inside(root, relative)


def test_resolve_inside_refuses_symlink_escaping_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "secret"
    (root / "cases").mkdir(parents=True)
    outside.mkdir()
    _noise_rgb(8, 8).save(outside / "x.png")
    (root / "cases" / "link").symlink_to(outside, target_is_directory=True)
    (root / "inner.png").symlink_to(outside / "x.png")
    with pytest.raises(ValidationError, match="escapes the data folder"):
        resolve_inside(root, "cases/link/x.png")
    with pytest.raises(ValidationError, match="escapes the data folder"):
        resolve_inside(root, "inner.png")
    # A symlink that stays inside the root is fine and resolves to its target.
    _noise_rgb(8, 8).save(root / "real.png")
    (root / "alias.png").symlink_to(root / "real.png")
    assert resolve_inside(root, "alias.png") == (root / "real.png").resolve()


def test_resolve_inside_works_when_root_itself_is_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert resolve_inside(link, "a/pre.jpg") == real.resolve() / "a" / "pre.jpg"


# --------------------------------------------------------------------------- sha256 and basic info


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    _noise_rgb(64, 48).save(path, quality=90)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == expected
    assert inspect_image(path).sha256 == expected


def test_sha256_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="file not found"):
        sha256_file(tmp_path / "nope.jpg")


def test_inspect_plain_rgb_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "pre.jpg"
    _noise_rgb(64, 48).save(path, quality=90)
    info = inspect_image(path)
    assert isinstance(info, ImageInfo)
    assert (info.path, info.width, info.height, info.mode, info.format) == (path, 64, 48, "RGB", "JPEG")
    assert info.converted is None
    with pytest.raises(AttributeError):
        info.width = 3  # type: ignore[misc]  # frozen
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3) and rgb.flags.writeable


def test_load_rgb_png_is_lossless(tmp_path: Path) -> None:
    src = _noise_rgb(20, 10, seed=3)
    path = tmp_path / "pre.png"
    src.save(path)
    np.testing.assert_array_equal(load_rgb(path), np.asarray(src))


# --------------------------------------------------------------------------- broken files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cases" / "x" / "pre.jpg"
    for call in (inspect_image, load_rgb):
        with pytest.raises(ValidationError, match="file not found: .*pre.jpg"):
            call(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "pre.jpg"
    path.mkdir()
    for call in (inspect_image, load_rgb):
        with pytest.raises(ValidationError, match="not a regular file"):
            call(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "pre.jpg"
    path.write_bytes(b"")
    for call in (inspect_image, load_rgb):
        with pytest.raises(ValidationError, match=r"file is empty \(0 bytes\)"):
            call(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "pre.jpg"
    path.write_text("case_id,label\nA,1\n")
    for call in (inspect_image, load_rgb):
        with pytest.raises(ValidationError, match=r"not an image file \(cannot identify format\)"):
            call(path)


def test_formats_outside_allowlist_are_refused(tmp_path: Path) -> None:
    # Pillow itself would open this as EPS (and run Ghostscript to decode it); we refuse to.
    path = tmp_path / "pre.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n")
    with Image.open(path) as img:
        assert img.format == "EPS"
    with pytest.raises(ValidationError, match="not an image file"):
        inspect_image(path)


def _truncated_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "pre.jpg"
    _noise_rgb(128, 96).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = _truncated_jpeg(tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ValidationError, match="truncated or corrupt image data: .*pre.jpg"):
        inspect_image(path)
    with pytest.raises(ValidationError, match="truncated or corrupt image data"):
        load_rgb(path)
    with pytest.raises(ValidationError, match="truncated or corrupt image data"):
        load_rgb(path, size=(16, 12))  # reduced-scale JPEG decoding must still notice


def test_truncated_jpeg_refused_even_if_pillow_allows_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _truncated_jpeg(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with Image.open(path) as img:
        img.load()  # Pillow now decodes half an image without complaint
    with pytest.raises(ValidationError, match="truncated or corrupt image data"):
        inspect_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "post.png"
    _noise_rgb(64, 64).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValidationError, match="truncated or corrupt image data"):
        inspect_image(path)


# --------------------------------------------------------------------------- decompression bombs


def test_20000_square_image_refused_before_decoding(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    limit = Image.MAX_IMAGE_PIXELS
    for call in (inspect_image, load_rgb):
        with pytest.raises(ValidationError) as err:
            call(path)
        assert "400000000 pixels exceeds the limit of 50000000 (decompression bomb?)" in str(err.value)
    assert limit == Image.MAX_IMAGE_PIXELS  # Pillow's global is left alone


def test_bomb_refused_when_pillow_limit_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(
        ValidationError, match=r"20000x20000 = 400000000 pixels exceeds the limit of 50000000"
    ):
        inspect_image(path)


def test_image_below_pillow_limit_but_above_ours(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "big.png", 8000, 8000)
    assert MAX_PIXELS < 8000 * 8000
    with pytest.raises(ValidationError, match="64000000 pixels exceeds the limit of 50000000"):
        inspect_image(path)


def test_max_pixels_argument(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _noise_rgb(100, 60).save(path)
    with pytest.raises(ValidationError, match="6000 pixels exceeds the limit of 5999"):
        load_rgb(path, max_pixels=5999)
    assert inspect_image(path, max_pixels=6000).width == 100


# --------------------------------------------------------------------------- modes


def test_grayscale_l(tmp_path: Path) -> None:
    gray = np.arange(12 * 7, dtype=np.uint8).reshape(7, 12) * 3
    path = tmp_path / "g.png"
    Image.fromarray(gray, "L").save(path)
    info = inspect_image(path)
    assert info.mode == "L" and info.converted == "L -> RGB"
    rgb = load_rgb(path)
    assert rgb.shape == (7, 12, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_bilevel_mode_1(tmp_path: Path) -> None:
    bits = np.zeros((6, 8), dtype=bool)
    bits[:, 4:] = True
    path = tmp_path / "b.png"
    Image.fromarray(bits).save(path)
    assert inspect_image(path).mode == "1"
    rgb = load_rgb(path)
    assert (rgb[:, :4] == 0).all() and (rgb[:, 4:] == 255).all()


def test_16bit_png_uses_full_16bit_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32896, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    info = inspect_image(path)
    assert info.mode in ("I;16", "I") and info.converted and "1/257" in info.converted
    rgb = load_rgb(path)
    expected = np.round(values.astype(float) / 257).astype(np.uint8)  # 0, 4, 128, 156, 255
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert rgb[0, 2, 0] == 128  # mid grey, not clipped to 255
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_32bit_integer_tiff_is_clipped_then_scaled(tmp_path: Path) -> None:
    values = np.array([[-5, 0, 32896, 65535, 200000]], dtype=np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(values, "I").save(path)
    assert inspect_image(path).mode == "I"
    np.testing.assert_array_equal(load_rgb(path)[0, :, 1], [0, 0, 128, 255, 255])


def test_float_tiff(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(unit, "F").save(path)
    info = inspect_image(path)
    assert info.mode == "F" and "0-1 scaled" in (info.converted or "")
    np.testing.assert_array_equal(load_rgb(path)[0, :, 0], [0, 128, 255])
    wide = np.array([[-3.0, 100.4, 300.0, np.nan]], dtype=np.float32)
    Image.fromarray(wide, "F").save(path)
    np.testing.assert_array_equal(load_rgb(path)[0, :, 0], [0, 100, 255, 0])


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 100, 50, 128)  # half transparent
    rgba[0, 1] = (10, 20, 30, 255)  # opaque
    rgba[1, 0] = (255, 255, 255, 0)  # fully transparent white
    rgba[1, 1] = (255, 255, 255, 255)
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    info = inspect_image(path)
    assert info.mode == "RGBA" and "composited on black" in (info.converted or "")
    rgb = load_rgb(path).astype(int)
    np.testing.assert_allclose(rgb[0, 0], [200 * 128 / 255, 100 * 128 / 255, 50 * 128 / 255], atol=1)
    np.testing.assert_array_equal(rgb[0, 1], [10, 20, 30])
    np.testing.assert_array_equal(rgb[1, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])


def test_gray_with_alpha_la(tmp_path: Path) -> None:
    la = np.array([[[200, 255], [200, 0]]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(path)
    assert inspect_image(path).mode == "LA"
    np.testing.assert_array_equal(load_rgb(path)[0], [[200, 200, 200], [0, 0, 0]])


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 2))
    img.putpalette([255, 255, 255, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1, 0, 0, 2, 2])
    path = tmp_path / "p.png"
    img.save(path, transparency=0)  # palette index 0 (white) is transparent
    info = inspect_image(path)
    assert info.mode == "P" and "composited on black" in (info.converted or "")
    rgb = load_rgb(path)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [255, 0, 0])
    np.testing.assert_array_equal(rgb[0, 2], [0, 0, 255])


def test_palette_without_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 255, 255, 0, 128, 0] + [0] * (256 * 3 - 6))
    img.putdata([0, 1])
    path = tmp_path / "p.gif"
    img.save(path)
    info = inspect_image(path)
    assert info.mode == "P" and info.format == "GIF" and info.converted == "P -> RGB"
    np.testing.assert_array_equal(load_rgb(path)[0], [[255, 255, 255], [0, 128, 0]])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red ink
    info = inspect_image(path)
    assert (info.mode, info.format, info.converted) == ("CMYK", "JPEG", "CMYK -> RGB")
    rgb = load_rgb(path).astype(int)
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_allclose(rgb.mean(axis=(0, 1)), [255, 0, 0], atol=6)


def test_ycbcr_tiff(tmp_path: Path) -> None:
    path = tmp_path / "y.tif"
    Image.new("RGB", (8, 8), (30, 160, 90)).convert("YCbCr").save(path)
    with Image.open(path) as img:
        if img.mode != "YCbCr":  # pragma: no cover - depends on the Pillow build
            pytest.skip(f"Pillow reads this TIFF as {img.mode}")
    info = inspect_image(path)
    assert info.converted == "YCbCr -> RGB"
    np.testing.assert_allclose(load_rgb(path).astype(int).mean(axis=(0, 1)), [30, 160, 90], atol=3)


def test_unsupported_mode(tmp_path: Path) -> None:
    path = tmp_path / "lab.tif"
    Image.new("LAB", (4, 4), (50, 128, 128)).save(path)
    with pytest.raises(ValidationError, match="unsupported image mode LAB"):
        inspect_image(path)


def test_multiframe_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    info = inspect_image(path)
    assert "first of 2 frames" in (info.converted or "")
    np.testing.assert_array_equal(load_rgb(path)[0, 0], [255, 0, 0])


# --------------------------------------------------------------------------- orientation and resizing


def _exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 40x20 (WxH as stored) grey JPEG with a red 8x8 block in the stored top-left corner."""
    arr = np.full((20, 40, 3), 128, dtype=np.uint8)
    arr[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr, "RGB").save(path, quality=95, exif=exif)
    return path


def test_exif_orientation_6(tmp_path: Path) -> None:
    path = _exif_rotated_jpeg(tmp_path / "rot.jpg")
    info = inspect_image(path)
    assert (info.width, info.height) == (20, 40)  # after orientation
    assert info.converted == "EXIF orientation 6 applied"
    rgb = load_rgb(path).astype(int)
    assert rgb.shape == (40, 20, 3)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored top-left goes to top-right.
    top_right, top_left, bottom_right = rgb[1:6, -6:-1], rgb[1:6, 1:6], rgb[-6:-1, -6:-1]
    assert top_right[..., 0].mean() > 220 and top_right[..., 1].mean() < 40
    assert abs(top_left[..., 0].mean() - 128) < 10 and abs(bottom_right[..., 0].mean() - 128) < 10


def test_exif_orientation_with_resize(tmp_path: Path) -> None:
    path = _exif_rotated_jpeg(tmp_path / "rot.jpg")
    rgb = load_rgb(path, size=(10, 20)).astype(int)
    assert rgb.shape == (20, 10, 3)
    assert rgb[0:2, -2:, 0].mean() > 200 and rgb[0:2, -2:, 1].mean() < 60


def test_resize_output_size(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path)
    rgb = load_rgb(path, size=(32, 24))
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.broadcast_to([10, 200, 30], rgb.shape))
    assert load_rgb(path, size=(100, 7)).shape == (7, 100, 3)
    for bad in [(0, 10), (10,), (10.0, 5), (True, 4)]:
        with pytest.raises(ValueError, match="size must be"):
            load_rgb(path, size=bad)  # type: ignore[arg-type]


def test_resize_is_antialiased(tmp_path: Path) -> None:
    # A one-pixel checkerboard shrunk 8x must average to grey, not alias to black or white.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    path = tmp_path / "board.png"
    Image.fromarray(board, "L").save(path)
    small = load_rgb(path, size=(8, 8)).astype(int)
    assert np.abs(small - 127.5).max() < 10


def test_reduced_scale_jpeg_decode_matches_full_decode(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:900, 0:1200]
    arr = np.stack([xx * 255 // 1199, yy * 255 // 899, (xx + yy) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr, "RGB").save(path, quality=92)
    fast = load_rgb(path, size=(150, 112)).astype(float)
    with Image.open(path) as img:
        full = np.asarray(img.convert("RGB").resize((150, 112), Image.Resampling.BILINEAR), dtype=float)
    assert fast.shape == full.shape == (112, 150, 3)
    assert np.abs(fast - full).mean() < 3.0


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    path = _truncated_jpeg(tmp_path)
    with pytest.raises(ValidationError) as err:
        inspect_image(path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300 + len(os.fspath(path))


def test_exif_orientation_in_png(tmp_path: Path) -> None:
    # PNG keeps EXIF in an eXIf chunk, possibly after the pixel data; orientation 8 = rotate 90 CCW.
    arr = np.zeros((2, 3, 3), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "rot.png"
    Image.fromarray(arr, "RGB").save(path, exif=exif)
    info = inspect_image(path)
    assert (info.width, info.height, info.converted) == (2, 3, "EXIF orientation 8 applied")
    rgb = load_rgb(path)
    assert rgb.shape == (3, 2, 3)
    np.testing.assert_array_equal(rgb[2, 0], [255, 0, 0])  # stored top-left lands bottom-left
