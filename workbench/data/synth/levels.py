"""Difficulty presets of the realistic / hard generative model, and the site (device) profiles.

Why a table: every number of a difficulty level in one place, next to the other level's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from workbench.data.synth.options import JPEG_QUALITY


@dataclass(frozen=True)
class _Level:
    """Parameters of one difficulty level (geometry relative to the cervix diameter or ``s``)."""

    # Lesion: strength = lo + (hi - lo) * Beta(a, b); diameter / cervix diameter ~ log-normal(median, sigma).
    strength: tuple[float, float, float, float]
    diameter: tuple[float, float]
    diameter_clip: tuple[float, float]
    faint: float  # probability that a lesion is faint and small (strength lo-0.3, half the diameter)
    multifocal: float  # probability of 2-3 foci
    elongation: float  # maximum aspect ratio of a focus
    texture: float  # amplitude of the multiplicative texture of the whitening
    # Post-only look-alikes (any case).
    spot_rate: float  # Poisson mean of focal acetowhite-like spots
    spot_strength: tuple[float, float, float, float]
    spot_diameter: tuple[float, float]
    metaplasia: float  # probability of a diffuse faint whitening near the os
    metaplasia_strength: tuple[float, float]
    glare: float  # probability of extra large glare patches in post
    # Per-shot nuisance.
    shift: float  # maximum shift, fraction of s (normal with sd shift / 3, clipped; rotation alike)
    rotation: float  # maximum rotation, degrees
    scale: float  # maximum relative scale change
    exposure: float  # sd of log exposure gain
    white_balance: float  # sd of log per-channel gains
    gamma: float  # sd of log gamma
    blur: float  # maximum Gaussian blur radius, pixels at s = 256
    vignette: float  # maximum extra vignetting strength
    noise: float  # sensor noise sd (0-255)
    risk_sigma: float  # sd of the log patient risk


#: Every parameter of a level as (realistic, hard), side by side; the meanings are on ``_Level``.
_LEVEL_VALUES: dict[str, tuple[object, object]] = {
    "strength": ((0.12, 0.95, 3.0, 1.4), (0.08, 0.95, 3.5, 1.2)),
    "diameter": ((0.28, 0.35), (0.27, 0.45)),
    "diameter_clip": ((0.04, 0.45), (0.03, 0.45)),
    "faint": (0.15, 0.25),
    "multifocal": (0.25, 0.35),
    "elongation": (2.0, 2.5),
    "texture": (0.3, 0.4),
    "spot_rate": (0.6, 0.9),
    "spot_strength": ((0.05, 0.4, 1.5, 3.0), (0.05, 0.45, 1.5, 2.5)),
    "spot_diameter": ((0.05, 0.35), (0.055, 0.35)),
    "metaplasia": (0.3, 0.4),
    "metaplasia_strength": ((0.04, 0.15), (0.05, 0.2)),
    "glare": (0.2, 0.3),
    "shift": (0.03, 0.04),
    "rotation": (2.5, 4.0),
    "scale": (0.03, 0.04),
    "exposure": (0.1, 0.13),
    "white_balance": (0.05, 0.06),
    "gamma": (0.07, 0.09),
    "blur": (0.8, 1.1),
    "vignette": (0.25, 0.3),
    "noise": (2.0, 2.5),
    "risk_sigma": (1.0, 1.0),
}
_LEVELS = {
    name: _Level(**{key: values[i] for key, values in _LEVEL_VALUES.items()})  # type: ignore[arg-type]
    for i, name in enumerate(("realistic", "hard"))
}


@dataclass(frozen=True)
class _Site:
    """A site's camera: colour cast, exposure, resolution, JPEG quality, sensor noise."""

    cast: np.ndarray  # per-channel gains
    exposure: float
    resolution: float  # internal resolution as a fraction of the output size
    quality: int
    noise: float


_STANDARD_SITE = _Site(np.ones(3, dtype=np.float32), 1.0, 1.0, JPEG_QUALITY, 0.0)


def _make_site(rng: np.random.Generator) -> _Site:
    return _Site(
        cast=np.exp(rng.normal(0, 0.06, size=3)).astype(np.float32),
        exposure=float(math.exp(rng.normal(0, 0.12))),
        resolution=float(rng.uniform(0.5, 1.0)),
        quality=int(rng.integers(70, 96)),
        noise=float(rng.uniform(0.5, 3.5)),
    )


def _apply_site(img: Image.Image, site: _Site, rng: np.random.Generator) -> Image.Image:
    """The site's camera: lower internal resolution (down then up), colour cast, exposure, noise."""
    if site is _STANDARD_SITE:
        return img
    w, h = img.size
    if site.resolution < 0.99:
        small = (max(16, round(w * site.resolution)), max(16, round(h * site.resolution)))
        img = img.resize(small, Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BICUBIC)
    out = np.asarray(img, dtype=np.float32) * (site.cast * np.float32(site.exposure))
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(site.noise)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
