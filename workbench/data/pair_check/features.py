"""One pair, pure: structure thumbnails, registration of post onto pre, and the antisymmetric
pre-to-post change features (steps 1-3 of the package docstring).

Why apart: these are image computations on arrays, with no data-set statistics and no database.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage

from workbench.data.images import load_rgb
from workbench.errors import ValidationError
from workbench.evaluation.whitening import _glare, _tissue, _whiteness

WORK_SIZE = 96
THUMB_SIZE = 64
BAND_SIGMAS = (1.0, 3.0)
ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)
SCALES = (0.92, 0.96, 1.0, 1.04, 1.08)
SHIFT_FRACTION = 0.08
WINDOW_FRACTION = 0.62
_CHANGE_LEVELS = (0.1, 0.2)
_TOP_FRACTIONS = (0.01, 0.03, 0.1)
_MAX_FILTERS = (3, 5)
CHANGE_FEATURES: tuple[str, ...] = (
    "log_blue_red",
    "log_green_red",
    "median_saturation",
    *(
        name
        for k in _MAX_FILTERS
        for name in (
            *(f"whitening_top{round(f * 100)}pct_k{k}" for f in _TOP_FRACTIONS),
            *(f"whitening_log_frac_gt_{t}_k{k}" for t in _CHANGE_LEVELS),
        )
    ),
)
_N_COLOUR = 3


def _rgb8(path: str | os.PathLike[str]) -> np.ndarray:
    return load_rgb(Path(path), (WORK_SIZE, WORK_SIZE))


def band_image(rgb8: np.ndarray) -> np.ndarray:
    """The ``THUMB_SIZE`` band-pass structure image of one shot (step 1 of the module docstring)."""
    if rgb8.ndim != 3 or rgb8.shape[2] != 3:
        raise ValidationError(f"expected an RGB image array, got shape {rgb8.shape}")
    small = Image.fromarray(np.ascontiguousarray(rgb8, dtype=np.uint8), "RGB")
    if small.size != (THUMB_SIZE, THUMB_SIZE):
        small = small.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
    x = np.asarray(small, dtype=np.float32) / 255.0
    g = np.log(np.maximum(x[..., 1], 1.0 / 255.0))
    med = ndimage.median_filter(g, size=5)
    specks = ndimage.binary_dilation((x.min(axis=2) > 0.85) | (g - med > 0.25), iterations=1)
    g = np.where(specks, med, g)
    out = ndimage.gaussian_filter(g, BAND_SIGMAS[0]) - ndimage.gaussian_filter(g, BAND_SIGMAS[1])
    spread = 1.4826 * float(np.median(np.abs(out - np.median(out)))) + 1e-6
    return np.clip(out, -3.0 * spread, 3.0 * spread).astype(np.float32)


def _affine(angle: float, scale: float, w: int, h: int) -> tuple[float, ...]:
    """PIL inverse map of a rotation by ``angle`` degrees and a scaling by ``scale`` about the centre."""
    a = math.radians(angle)
    c, s = math.cos(a) / scale, math.sin(a) / scale
    cx, cy = w / 2.0, h / 2.0
    return (c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy)


def _warp(img: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """Rotate/scale a float image (H x W, or H x W x C channel by channel) about its centre."""
    if img.ndim == 3:
        return np.stack([_warp(img[..., c], angle, scale) for c in range(img.shape[2])], axis=-1)
    if angle == 0.0 and scale == 1.0:
        return img
    h, w = img.shape
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), "F")
    moved = pil.transform(
        (w, h), Image.Transform.AFFINE, _affine(angle, scale, w, h), Image.Resampling.BILINEAR
    )
    return np.asarray(moved, dtype=np.float32)


def _window_sums(img: np.ndarray, k: int) -> np.ndarray:
    """Sums of every k x k window of ``img`` (integral image)."""
    c = np.pad(img, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def _best_shift(a: np.ndarray, b: np.ndarray, window: int, max_shift: int) -> tuple[float, int, int]:
    """Best normalised cross-correlation of ``a``'s central window with ``b`` moved by <= ``max_shift`` px."""
    h, w = a.shape
    y0, x0 = (h - window) // 2, (w - window) // 2
    ref = a[y0 : y0 + window, x0 : x0 + window]
    ref = (ref - ref.mean()) / (ref.std() + 1e-6)  # zero mean: the shifted window's mean drops out
    region = b[y0 - max_shift : y0 + window + max_shift, x0 - max_shift : x0 + window + max_shift]
    area = float(window * window)
    wide = region.astype(np.float64)
    mean = _window_sums(wide, window) / area
    sd = np.sqrt(np.maximum(_window_sums(wide * wide, window) / area - mean * mean, 0.0)) + 1e-6
    views = sliding_window_view(region, (window, window))
    ncc = np.tensordot(views, ref, axes=([2, 3], [0, 1])) / area / sd
    i, j = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return float(ncc[i, j]), int(i) - max_shift, int(j) - max_shift


@dataclass(frozen=True)
class Registration:
    """The warp that best maps post onto pre, and the correlation it reaches (the structural similarity)."""

    similarity: float
    angle: float = 0.0
    scale: float = 1.0
    dy: int = 0
    dx: int = 0


def register(pre_band: np.ndarray, post_band: np.ndarray) -> Registration:
    """Search ``ANGLES`` x ``SCALES`` x shifts for the best correlation of two band images (one size)."""
    if pre_band.shape != post_band.shape or pre_band.ndim != 2:
        raise ValidationError(f"band images must have one 2-D shape, got {pre_band.shape}, {post_band.shape}")
    side = min(pre_band.shape)
    window = int(WINDOW_FRACTION * side)
    max_shift = max(1, min(round(SHIFT_FRACTION * side), (side - window) // 2))
    best = Registration(-2.0)
    for angle in ANGLES:
        for scale in SCALES:
            value, dy, dx = _best_shift(pre_band, _warp(post_band, angle, scale), window, max_shift)
            if value > best.similarity:
                best = Registration(value, angle, scale, dy, dx)
    return best


def _masks(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    return r < 0.45 * min(h, w), r < 0.3 * min(h, w)


def _tissue_mask(img: np.ndarray, central: np.ndarray, core: np.ndarray) -> np.ndarray:
    dil = max(1, round(min(img.shape[:2]) / 96))
    mask = central & _tissue(img, core) & ~_glare(img, dil)
    return mask if mask.sum() >= 0.02 * mask.size else central & ~_glare(img, dil)


def _colour(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    px = np.maximum(img[mask], 1.0 / 255.0)
    log_med = np.log(np.median(px, axis=0))
    sat = 1.0 - px.min(axis=1) / np.maximum(px.max(axis=1), 1e-3)
    return np.array([log_med[2] - log_med[0], log_med[1] - log_med[0], float(np.median(sat))])


def change_features(pre8: np.ndarray, post8: np.ndarray, reg: Registration) -> np.ndarray:
    """The antisymmetric pre-to-post change vector (``CHANGE_FEATURES``) of a pair of uint8 RGB arrays."""
    if pre8.shape != post8.shape or pre8.ndim != 3:
        raise ValidationError(
            f"pre and post must be RGB arrays of one shape, got {pre8.shape}, {post8.shape}"
        )
    pre = pre8.astype(np.float32) / 255.0
    post = post8.astype(np.float32) / 255.0
    factor = pre.shape[0] / THUMB_SIZE
    moved = _warp(post, reg.angle, reg.scale)
    moved = ndimage.shift(moved, (-reg.dy * factor, -reg.dx * factor, 0), order=1, mode="nearest")
    central, core = _masks(pre)
    m_pre, m_post = _tissue_mask(pre, central, core), _tissue_mask(moved, central, core)
    both = m_pre & m_post
    if both.sum() < 16:
        both = central
    out = list(_colour(post, _tissue_mask(post, central, core)) - _colour(pre, m_pre))
    w_pre = ndimage.uniform_filter(_whiteness(pre, m_pre), size=3, mode="nearest")
    w_post = ndimage.uniform_filter(_whiteness(moved, m_post), size=3, mode="nearest")
    for k in _MAX_FILTERS:
        grow = (w_post - (ndimage.maximum_filter(w_pre, size=k) if k > 1 else w_pre))[both]
        fade = (w_pre - (ndimage.maximum_filter(w_post, size=k) if k > 1 else w_post))[both]
        grow_sorted, fade_sorted = np.sort(grow)[::-1], np.sort(fade)[::-1]
        for frac in _TOP_FRACTIONS:
            top = max(1, int(grow.size * frac))
            out.append(float(grow_sorted[:top].mean() - fade_sorted[:top].mean()))
        for level in _CHANGE_LEVELS:
            out.append(math.log((grow > level).mean() + 1e-3) - math.log((fade > level).mean() + 1e-3))
    vec = np.asarray(out, dtype=np.float64)
    return np.where(np.isfinite(vec), vec, 0.0)
