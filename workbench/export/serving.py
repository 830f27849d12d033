"""The SavedModel's ``serve_images`` signature: encoded images in, calibrated decision out, no client code.

``serve_images(pre, post)`` takes two 1-D batches of scalar strings (the bytes of JPEG or PNG files)
and returns ``logit`` (float64), ``calibrated_probability`` (float64) and ``decision`` (string,
"positive" or "negative"), with everything ``workbench predict`` does inside the graph:

* decode and resize exactly as :func:`workbench.data.images.load_rgb` does for JPEG and PNG files, so
  the model sees the same uint8 pixels: JPEGs are decoded with libjpeg's accurate integer IDCT at the
  reduced DCT scale Pillow's ``draft`` picks, with their EXIF orientation applied; PNGs of every bit
  depth and colour type follow the same 8-bit conversion (16-bit grey scaled by 1/257, alpha composited
  on black); the resize is Pillow's antialiased bilinear filter re-implemented in TF ops (same
  coefficients, same 22-bit fixed-point rounding, same pass order), so it is bit-exact rather than
  ``tf.image.resize``'s slightly different filter (checked pixel for pixel against ``load_rgb``: every
  PNG colour type, grey, CMYK, progressive and multi-picture JPEGs, all eight EXIF orientations, sizes
  up and down). Other formats (GIF, BMP,
  WebP) go through ``tf.io.decode_image``, a best effort (plain BMP, GIF and WebP matched); DICOM and
  EXIF in PNG files are not read in the graph;
* the backbone's preprocessing function (``preprocess_fn``), the calibrator of ``calibration.json``
  written as TF ops in float64 (isotonic, histogram and BBQ tables embedded as constants), including
  the 1e-9 tie-break term, so the outputs equal the NumPy calibrator's; and the decision
  ``calibrated_probability >= threshold`` with the threshold of ``threshold.json``.

TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.calibration.binning import BBQCalibrator, HistogramCalibrator, IsotonicCalibrator
from workbench.calibration.calibrator_base import _V1_LOGIT_LIMIT, TIE_WEIGHT, Calibrator
from workbench.calibration.calibrators import calibrator_from_json
from workbench.calibration.scaling import (
    BetaCalibrator,
    IdentityCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
)
from workbench.errors import WorkbenchError

SIGNATURE = "serve_images"
PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_EXIF_MARKER = b"Exif\x00\x00"
_MPF_MARKER = b"MPF\x00"  # APP2 multi-picture header: Pillow opens such a file as MPO, without draft
_ULTRAHDR_MARKER = b'hdrgm:Version="'  # ... unless it is an UltraHDR JPEG, which Pillow keeps as JPEG
_HEADER_BYTES = 1 << 17  # APP segments (at most 64 KiB each) are searched in the first 128 KiB only
_ORIENTATION_TAG = 0x0112


# ------------------------------------------------------------------------------------------------
# Calibrators in TF ops (float64), mirroring workbench.calibration.calibrators formula by formula


def _sigmoid(u: Any) -> Any:
    """The NumPy calibrators' two-branch stable sigmoid, as TF ops."""
    import tensorflow as tf

    e = tf.exp(-tf.abs(u))
    return tf.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_sigmoid(u: Any) -> Any:
    """``-logaddexp(0, -u)`` as NumPy computes it: ``-(max(0, -u) + log1p(exp(-|u|)))``."""
    import tensorflow as tf

    return -(tf.maximum(0.0 * u, -u) + tf.math.log1p(tf.exp(-tf.abs(u))))


def _interp(x: Any, xp: np.ndarray, fp: np.ndarray) -> Any:
    """``np.interp(x, xp, fp)`` for x already inside [xp[0], xp[-1]] (non-decreasing xp, ties allowed)."""
    import tensorflow as tf

    n = xp.shape[0]
    xs, ys = tf.constant(xp, tf.float64), tf.constant(fp, tf.float64)
    j = tf.searchsorted(xs, x, side="right") - 1  # the last j with xp[j] <= x, as NumPy's search
    j = tf.clip_by_value(j, 0, n - 1)
    nxt = tf.minimum(j + 1, n - 1)
    x0, x1 = tf.gather(xs, j), tf.gather(xs, nxt)
    y0, y1 = tf.gather(ys, j), tf.gather(ys, nxt)
    span = tf.where(x1 > x0, x1 - x0, tf.ones_like(x0))
    inner = (y1 - y0) / span * (x - x0) + y0
    return tf.where((j == n - 1) | tf.equal(x0, x), y0, inner)


def _bins(p: Any, edges: np.ndarray, values: np.ndarray) -> Any:
    """netcal's right-closed equal-width bin lookup (``np.digitize(p, edges, right=True) - 1``, clipped)."""
    import tensorflow as tf

    idx = tf.searchsorted(tf.constant(edges, tf.float64), p, side="left") - 1
    idx = tf.clip_by_value(idx, 0, edges.shape[0] - 2)
    return tf.gather(tf.constant(values, tf.float64), idx)


def _method_tf(cal: Calibrator) -> Callable[[Any], Any]:
    """The method's ``_transform(u)`` as a TF function of float64 prior-corrected logits."""
    import tensorflow as tf

    if isinstance(cal, IdentityCalibrator):
        return _sigmoid
    if isinstance(cal, TemperatureCalibrator):
        return lambda u: _sigmoid(cal.weight * u)
    if isinstance(cal, PlattCalibrator):
        return lambda u: _sigmoid(cal.weight * u + cal.bias)
    if isinstance(cal, BetaCalibrator):
        return lambda u: _sigmoid(cal.a * _log_sigmoid(u) - cal.b * _log_sigmoid(-u) + cal.c)
    if isinstance(cal, IsotonicCalibrator):
        xp, fp = np.asarray(cal.x, np.float64), np.asarray(cal.y, np.float64)

        def isotonic(u: Any) -> Any:
            xs = _sigmoid(u) if cal.format_version == 1 else u
            if xp.shape[0] == 1:
                return tf.fill(tf.shape(u), tf.constant(fp[0], tf.float64))
            return _interp(tf.clip_by_value(xs, xp[0], xp[-1]), xp, fp)

        return isotonic
    if isinstance(cal, HistogramCalibrator):
        hist = cal.hist
        return lambda u: _bins(_sigmoid(u), hist["edges"], hist["values"])
    if isinstance(cal, BBQCalibrator):

        def bbq(u: Any) -> Any:
            p = _sigmoid(u)
            total: Any = 0  # Python's sum(): 0 + w0 * v0 + w1 * v1 + ..., in the same order
            for w, h in zip(cal.weights, cal.models, strict=True):
                total = total + float(w) * _bins(p, h["edges"], h["values"])
            return total

        return bbq
    raise WorkbenchError(f"no TF implementation of the {cal.method!r} calibrator")


def calibrator_tf(parameters: dict[str, Any]) -> Callable[[Any], Any]:
    """A TF function mapping float64 raw logits (B,) to what ``calibrator_from_json(parameters).transform``
    returns: prior offset removed, method formula, clipped to [0, 1], tie-break term mixed in."""
    import tensorflow as tf

    cal = calibrator_from_json(parameters)
    method = _method_tf(cal)
    offset, v1 = float(cal.prior_offset), cal.format_version == 1

    def transform(z: Any) -> Any:
        u = z - offset
        if v1:
            u = tf.clip_by_value(u, -_V1_LOGIT_LIMIT, _V1_LOGIT_LIMIT)
        c = tf.clip_by_value(method(u), 0.0, 1.0)
        return (1.0 - TIE_WEIGHT) * c + TIE_WEIGHT * (0.5 + tf.atan(z) / math.pi)

    return transform


# ------------------------------------------------------------------------------------------------
# Decoding and resizing as load_rgb does (Pillow semantics in TF ops)


def _bytes_at(data: Any, offset: Any, n: int) -> Any:
    """n bytes of ``data`` from ``offset`` as int64 (zeros past the end)."""
    import tensorflow as tf

    length = tf.cast(tf.strings.length(data), tf.int64)
    start = tf.cast(tf.clip_by_value(tf.cast(offset, tf.int64), 0, length), tf.int32)
    chunk = tf.strings.substr(data, start, n)
    raw = tf.io.decode_raw(chunk + tf.constant(b"\x00" * n), tf.uint8)[:n]
    return tf.cast(raw, tf.int64)


def _uint(data: Any, offset: Any, n: int, little: Any) -> Any:
    """An unsigned n-byte integer at ``offset`` of ``data`` in the given byte order."""
    import tensorflow as tf

    b = _bytes_at(data, offset, n)
    weights_le = tf.constant([256**i for i in range(n)], tf.int64)
    weights_be = tf.reverse(weights_le, [0])
    return tf.reduce_sum(b * tf.where(little, weights_le, weights_be))


def _jpeg_orientation(contents: Any) -> Any:
    """EXIF orientation (1-8; 1 when absent or unreadable) from the first ``Exif\\0\\0`` block of a JPEG."""
    import tensorflow as tf

    header = tf.strings.substr(contents, 0, _HEADER_BYTES)
    parts = tf.strings.split(header, sep=_EXIF_MARKER.decode("latin-1"), maxsplit=1)

    def read() -> Any:
        tiff = parts[1]
        order = tf.strings.substr(tiff, 0, 2)
        little = tf.equal(order, b"II")
        valid = little | tf.equal(order, b"MM")
        ifd = _uint(tiff, 4, 4, little)
        count = _uint(tiff, ifd, 2, little)
        count = tf.clip_by_value(count, 0, 512)
        starts = ifd + 2 + 12 * tf.range(count, dtype=tf.int64)

        def entry(start: Any) -> Any:
            return tf.stack([_uint(tiff, start, 2, little), _uint(tiff, start + 8, 2, little)])

        entries = tf.map_fn(entry, starts, fn_output_signature=tf.TensorSpec((2,), tf.int64))
        hits = tf.boolean_mask(entries[:, 1], tf.equal(entries[:, 0], _ORIENTATION_TAG))
        value = tf.cond(tf.size(hits) > 0, lambda: hits[0], lambda: tf.constant(1, tf.int64))
        ok = valid & (ifd > 0) & (value >= 1) & (value <= 8)
        return tf.where(ok, value, tf.constant(1, tf.int64))

    return tf.cond(tf.size(parts) > 1, read, lambda: tf.constant(1, tf.int64))


def _orient(img: Any, orientation: Any) -> Any:
    """Apply EXIF orientation like ``PIL.ImageOps.exif_transpose``."""
    import tensorflow as tf

    t = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731 - a one-line helper
    branches = [
        lambda: img,  # 1
        lambda: tf.reverse(img, [1]),  # 2: mirror left-right
        lambda: tf.reverse(img, [0, 1]),  # 3: rotate 180
        lambda: tf.reverse(img, [0]),  # 4: mirror top-bottom
        lambda: t(img),  # 5: transpose
        lambda: tf.reverse(t(img), [1]),  # 6: rotate 270 (90 clockwise)
        lambda: tf.reverse(t(img), [0, 1]),  # 7: transverse
        lambda: tf.reverse(t(img), [0]),  # 8: rotate 90 (counter-clockwise)
    ]
    return tf.switch_case(tf.cast(orientation - 1, tf.int32), branches)


def _contains(data: Any, marker: bytes) -> Any:
    import tensorflow as tf

    return tf.size(tf.strings.split(data, sep=marker.decode("latin-1"), maxsplit=1)) > 1


def _decode_jpeg(contents: Any, width: int, height: int) -> Any:
    """Pillow's path: draft scale (largest of 8, 4, 2, 1 that keeps the size; none for an MPO file),
    ISLOW IDCT, EXIF orientation."""
    import tensorflow as tf

    orientation = _jpeg_orientation(contents)
    header = tf.strings.substr(contents, 0, _HEADER_BYTES)
    mpo = _contains(header, _MPF_MARKER) & tf.logical_not(_contains(header, _ULTRAHDR_MARKER))
    shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)  # stored (unrotated) h, w
    swap = orientation >= 5
    want_w = tf.where(swap, tf.constant(height, tf.int64), width)
    want_h = tf.where(swap, tf.constant(width, tf.int64), height)
    scale = tf.minimum(shape[1] // want_w, shape[0] // want_h)
    branch = tf.cast(scale >= 2, tf.int32) + tf.cast(scale >= 4, tf.int32) + tf.cast(scale >= 8, tf.int32)
    branch = tf.where(mpo, 0, branch)
    decoders = [
        lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r, dct_method="INTEGER_ACCURATE")
        for r in (1, 2, 4, 8)
    ]
    return _orient(tf.switch_case(branch, decoders), orientation)


def _composite(rgb: Any, alpha: Any) -> Any:
    """Alpha on black with Pillow's integer rounding: ``(rgb * alpha + 127) // 255``."""
    import tensorflow as tf

    return (tf.cast(rgb, tf.int32) * tf.cast(alpha, tf.int32) + 127) // 255


def _decode_png(contents: Any) -> Any:
    """Every PNG colour type and bit depth to 8-bit RGB as ``load_rgb`` converts it."""
    import tensorflow as tf

    header = _bytes_at(contents, 24, 2)
    depth, colour = header[0], header[1]
    v = tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint16), tf.int32)  # 8-bit: x * 257
    # Pillow reads 16-bit grey as I;16 (the workbench scales by 1/257 and rounds) but 16-bit RGB(A) and
    # grey+alpha through their most significant byte; lower depths are exact multiples of 257.
    grey16 = tf.cast(tf.round(tf.cast(v, tf.float64) / 257.0), tf.int32)
    to8 = tf.where(depth < 16, v // 257, tf.where(tf.equal(colour, 0), grey16, v // 256))
    to8 = tf.clip_by_value(to8, 0, 255)
    channels = tf.shape(to8)[-1]
    rgb = tf.cond(channels >= 3, lambda: to8[..., :3], lambda: tf.repeat(to8[..., :1], 3, axis=-1))
    alpha = tf.cond(
        tf.equal(channels % 2, 0), lambda: to8[..., -1:], lambda: tf.fill(tf.shape(to8[..., :1]), 255)
    )
    # Alpha counts for grey+alpha, palette (tRNS) and RGBA; a tRNS colour key on grey or RGB is ignored.
    uses_alpha = tf.equal(colour, 3) | tf.equal(colour, 4) | tf.equal(colour, 6)
    return tf.cast(tf.where(uses_alpha, _composite(rgb, alpha), rgb), tf.uint8)


def _decode_other(contents: Any) -> Any:
    """GIF, BMP, WebP: TF's own decoder, first frame, 3 channels (best effort, not Pillow-exact)."""
    import tensorflow as tf

    return tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)


def _pil_coefficients(in_size: Any, out_size: int) -> tuple[Any, Any]:
    """Pillow's bilinear coefficients for one axis: (first input index (out,), fixed-point weights (out, k))."""
    import tensorflow as tf

    f64 = tf.float64
    n_in = tf.cast(in_size, f64)
    scale = n_in / float(out_size)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # bilinear support 1.0 times the filter scale
    ss = 1.0 / filterscale
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.range(out_size, dtype=f64) + 0.5) * scale
    xmin = tf.maximum(tf.floor(center - support + 0.5), 0.0)
    xmax = tf.minimum(tf.floor(center + support + 0.5), n_in) - xmin
    taps = tf.cast(tf.range(ksize), f64)
    pos = xmin[:, None] + taps[None, :]
    w = tf.maximum(1.0 - tf.abs((pos - center[:, None] + 0.5) * ss), 0.0)
    w = tf.where(taps[None, :] < xmax[:, None], w, 0.0)
    ww = tf.reduce_sum(w, axis=1, keepdims=True)
    k = tf.where(ww != 0.0, w / tf.where(ww != 0.0, ww, 1.0), 0.0)
    return tf.cast(xmin, tf.int32), tf.floor(0.5 + k * float(1 << PRECISION_BITS))


def _resample_width(img: Any, out_size: int) -> Any:
    """One 8-bit Pillow pass along axis 1 of (H, W, C) float64 integer pixels, rounded and clipped."""
    import tensorflow as tf

    in_size = tf.shape(img)[1]
    xmin, k = _pil_coefficients(in_size, out_size)
    acc = tf.zeros(tf.stack([tf.shape(img)[0], out_size, tf.shape(img)[2]]), tf.float64)

    def body(t: Any, acc: Any) -> tuple[Any, Any]:
        idx = tf.minimum(xmin + t, in_size - 1)
        return t + 1, acc + tf.gather(img, idx, axis=1) * k[None, :, t, None]

    _, acc = tf.while_loop(lambda t, _: t < tf.shape(k)[1], body, (tf.constant(0), acc))
    half = float(1 << (PRECISION_BITS - 1))
    return tf.clip_by_value(tf.floor((acc + half) / float(1 << PRECISION_BITS)), 0.0, 255.0)


def pil_bilinear_resize(img: Any, width: int, height: int) -> Any:
    """``Image.resize((width, height), BILINEAR)`` of a uint8 (H, W, 3) tensor, bit-exact, as uint8.

    Pass order as Pillow 13 (the installed one) picks it: vertical first when the height shrinks by
    more than twice as many pixels as the width does, else horizontal first (each pass rounds to 8 bits).
    """
    import tensorflow as tf

    x = tf.cast(img, tf.float64)

    def horizontal(x: Any) -> Any:
        return tf.cond(tf.shape(x)[1] != width, lambda: _resample_width(x, width), lambda: x)

    def vertical(x: Any) -> Any:
        xt = tf.transpose(x, [1, 0, 2])
        xt = tf.cond(tf.shape(xt)[1] != height, lambda: _resample_width(xt, height), lambda: xt)
        return tf.transpose(xt, [1, 0, 2])

    shrink_h, shrink_w = tf.shape(x)[0] - height, tf.shape(x)[1] - width
    vertical_first = (shrink_h > 0) & (shrink_h > 2 * shrink_w)
    out = tf.cond(vertical_first, lambda: horizontal(vertical(x)), lambda: vertical(horizontal(x)))
    return tf.cast(out, tf.uint8)


def decode_rgb(contents: Any, width: int, height: int) -> Any:
    """Encoded image bytes (scalar string) -> uint8 (height, width, 3), as ``load_rgb(path, (width, height))``."""
    import tensorflow as tf

    is_png = tf.equal(tf.strings.substr(contents, 0, 8), _PNG_MAGIC)
    img = tf.case(
        [
            (tf.io.is_jpeg(contents), lambda: _decode_jpeg(contents, width, height)),
            (is_png, lambda: _decode_png(contents)),
        ],
        default=lambda: _decode_other(contents),
        exclusive=True,
    )
    img.set_shape((None, None, 3))
    out = pil_bilinear_resize(img, width, height)
    out.set_shape((height, width, 3))
    return out


# ------------------------------------------------------------------------------------------------
# The endpoint


def add_image_endpoint(
    archive: Any,
    model: Any,
    *,
    backbone: str,
    calibration_parameters: dict[str, Any],
    threshold: float,
) -> None:
    """Register ``serve_images(pre, post)`` (1-D string batches) on a ``keras.export.ExportArchive``."""
    import tensorflow as tf

    from workbench.model.builder import preprocess_fn

    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    prep = preprocess_fn(backbone)
    calibrate = calibrator_tf(calibration_parameters)
    cut = float(threshold)
    spec = tf.TensorSpec((h, w, 3), tf.uint8)

    def images(batch: Any) -> Any:
        pixels = tf.map_fn(lambda b: decode_rgb(b, w, h), batch, fn_output_signature=spec)
        return prep(tf.cast(pixels, tf.float32))

    def serve_images(pre: Any, post: Any) -> dict[str, Any]:
        out = model({"pre": images(pre), "post": images(post)}, training=False)
        z = tf.cast(tf.reshape(out["logit"], [-1]), tf.float64)
        p = calibrate(z)
        decision = tf.where(p >= cut, tf.constant("positive"), tf.constant("negative"))
        return {"logit": z, "calibrated_probability": p, "decision": decision}

    archive.add_endpoint(
        SIGNATURE,
        serve_images,
        input_signature=[
            tf.TensorSpec((None,), tf.string, name="pre"),
            tf.TensorSpec((None,), tf.string, name="post"),
        ],
    )
