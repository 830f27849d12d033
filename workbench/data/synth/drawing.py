"""Drawing primitives of the generator: pixel frames, soft blobs, smooth noise and alpha blending.

Why apart: both generative models (easy and realistic / hard) paint with the same brushes.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-ish std noise with features about ``1/cells`` of the image (bicubic-upsampled)."""
    h, w = shape
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    img = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC, box=(1, 1, cells + 2, cells + 2))
    out = np.asarray(img, dtype=np.float32)
    return out / (out.std() + 1e-6)


class _Frame:
    """Pixel-centre coordinates of one image in units of ``s`` relative to the image centre."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.s = float(min(width, height))
        ys = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / self.s
        xs = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / self.s
        self.x = xs[None, :]
        self.y = ys[:, None]


def _blob(
    frame: _Frame,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    parts: tuple[int, int] = (3, 7),
) -> np.ndarray:
    """Irregular soft blob: union of a few Gaussians around (cx, cy) with overall radius ``radius``."""
    field = np.zeros((frame.h, frame.w), dtype=np.float32)
    # Work on a bounding window only: cheap at large image sizes.
    px0 = int(max(0, math.floor((cx - 2.2 * radius) * frame.s + frame.w / 2)))
    px1 = int(min(frame.w, math.ceil((cx + 2.2 * radius) * frame.s + frame.w / 2)))
    py0 = int(max(0, math.floor((cy - 2.2 * radius) * frame.s + frame.h / 2)))
    py1 = int(min(frame.h, math.ceil((cy + 2.2 * radius) * frame.s + frame.h / 2)))
    if px1 <= px0 or py1 <= py0:
        return field
    xs, ys = frame.x[:, px0:px1], frame.y[py0:py1, :]
    sub = field[py0:py1, px0:px1]
    for _ in range(int(rng.integers(parts[0], parts[1]))):
        ang, dist = rng.uniform(0, 2 * math.pi), radius * 0.7 * math.sqrt(rng.uniform())
        sigma = radius * rng.uniform(0.25, 0.5)
        gx, gy = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
        sub += np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * sigma * sigma))
    field[py0:py1, px0:px1] = _smoothstep(0.1, 0.9, sub)
    return field


def _blend(
    rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray | tuple[float, float, float], alpha: float
) -> None:
    """In place: ``rgb = rgb * (1 - a) + colour * a`` with ``a = alpha * mask``."""
    a = (alpha * mask)[..., None]
    rgb *= 1.0 - a
    rgb += a * np.asarray(colour, dtype=np.float32)


_WHITE = np.array([242.0, 236.0, 230.0], dtype=np.float32)


def _window(frame: _Frame, cx: float, cy: float, reach: float) -> tuple[int, int, int, int] | None:
    px0 = int(max(0, math.floor((cx - reach) * frame.s + frame.w / 2)))
    px1 = int(min(frame.w, math.ceil((cx + reach) * frame.s + frame.w / 2)))
    py0 = int(max(0, math.floor((cy - reach) * frame.s + frame.h / 2)))
    py1 = int(min(frame.h, math.ceil((cy + reach) * frame.s + frame.h / 2)))
    if px1 <= px0 or py1 <= py0:
        return None
    return py0, py1, px0, px1


_Patch = tuple[np.ndarray, tuple[int, int, int, int]]  # a mask window and its (y0, y1, x0, x1) box


def _blob_patch(
    frame: _Frame,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    parts: tuple[int, int] = (3, 7),
    aspect: float = 1.0,
    texture: float = 0.0,
) -> _Patch | None:
    """Like ``_blob`` but elongated (``aspect`` >= 1, random orientation), optionally textured, and
    returned as a bounded window only."""
    box = _window(frame, cx, cy, 2.2 * radius * math.sqrt(aspect))
    angle = float(rng.uniform(0, math.pi))
    n_parts = int(rng.integers(parts[0], parts[1]))
    draws = rng.uniform(size=(n_parts, 3))
    tex_seed = int(rng.integers(0, 2**31))
    if box is None:
        return None
    py0, py1, px0, px1 = box
    xs, ys = frame.x[:, px0:px1] - cx, frame.y[py0:py1, :] - cy
    ca, sa = math.cos(angle), math.sin(angle)
    stretch = math.sqrt(aspect)
    u = (xs * ca + ys * sa) / stretch
    v = (-xs * sa + ys * ca) * stretch
    sub = np.zeros((py1 - py0, px1 - px0), dtype=np.float32)
    for ang, dist, sig in draws:
        ang, dist = ang * 2 * math.pi, radius * 0.7 * math.sqrt(dist)
        sigma = radius * (0.25 + 0.25 * sig)
        gu, gv = dist * math.cos(ang), dist * math.sin(ang)
        sub += np.exp(-((u - gu) ** 2 + (v - gv) ** 2) / (2 * sigma * sigma))
    field = _smoothstep(0.1, 0.9, sub)
    if texture > 0:
        cells = max(2, round(8 * (py1 - py0) / max(frame.s * radius * 4, 1.0)) + 2)
        noise = _smooth_noise(np.random.default_rng(tex_seed), field.shape, cells)
        field = np.clip(field * (1.0 + texture * noise), 0.0, 1.0)
    return field.astype(np.float32), box


def _blend_patch(
    rgb: np.ndarray, patch: _Patch, colour: np.ndarray | tuple[float, float, float], alpha: float
) -> None:
    mask, (y0, y1, x0, x1) = patch
    _blend(rgb[y0:y1, x0:x1], mask, colour, alpha)


def _shift_and_turn(
    img: Image.Image, frame: _Frame, angle: float, scale: float, tx: float, ty: float, fill: tuple[int, ...]
) -> Image.Image:
    """``img`` turned by ``angle`` and scaled about its centre, then shifted by (tx, ty) pixels: one
    shot's misalignment against the other (bilinear, the uncovered border filled with ``fill``)."""
    cos_a, sin_a = math.cos(angle) / scale, math.sin(angle) / scale
    cx, cy = frame.w / 2, frame.h / 2
    # Inverse map (output pixel -> input pixel), as PIL expects.
    coeffs = (
        cos_a,
        sin_a,
        cx - cos_a * (cx + tx) - sin_a * (cy + ty),
        -sin_a,
        cos_a,
        cy + sin_a * (cx + tx) - cos_a * (cy + ty),
    )
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill)
