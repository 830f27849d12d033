"""Anatomy shared by every difficulty: the patient (tissue colour, cervix shape), positions inside the
cervix, vessels, and the latent evidence of a post-only whitening.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from workbench.data.synth.drawing import _Frame, _smoothstep


@dataclass(frozen=True)
class _Patient:
    tissue: np.ndarray  # base RGB colour
    radius: float  # cervix radius in units of s
    ellipticity: float
    angle: float
    os_angle: float


def _make_patient(rng: np.random.Generator) -> _Patient:
    r = rng.uniform(192, 225)
    g = rng.uniform(0.52, 0.66) * r
    b = g * rng.uniform(1.0, 1.12)
    return _Patient(
        tissue=np.array([r, g, b], dtype=np.float32),
        radius=float(rng.uniform(0.33, 0.42)),
        ellipticity=float(rng.uniform(-0.08, 0.08)),
        angle=float(rng.uniform(0, math.pi)),
        os_angle=float(rng.normal(0.0, 0.35)),
    )


def _cervix_outline(
    frame: _Frame,
    patient: _Patient,
    rng: np.random.Generator,
    centre_sd: float,
    radius_scale: tuple[float, float],
) -> tuple[tuple[float, float], float, np.ndarray, np.ndarray]:
    """This visit's cervix: centre, radius, normalised radial distance ``rho`` and the soft cervix mask.

    The patient fixes the shape; each visit jitters the centre (sd ``centre_sd``), the radius (times a uniform
    draw in ``radius_scale``), the ellipticity, the angle and the rim.
    """
    centre = (float(rng.normal(0, centre_sd)), float(rng.normal(0, centre_sd)))
    radius = patient.radius * float(rng.uniform(*radius_scale))
    ell = patient.ellipticity + float(rng.normal(0, 0.015))
    ang = patient.angle + float(rng.normal(0, 0.2))
    dx, dy = frame.x - centre[0], frame.y - centre[1]
    ca, sa = math.cos(ang), math.sin(ang)
    u, v = (dx * ca + dy * sa) / (1 + ell), (-dx * sa + dy * ca) / (1 - ell)
    rho = np.sqrt(u * u + v * v) / radius
    phi = np.arctan2(v, u)
    rim = np.ones_like(phi)
    for k in (2, 3, 4, 5):
        rim += float(rng.normal(0, 0.015)) * np.cos(k * phi + float(rng.uniform(0, 2 * math.pi)))
    return centre, radius, rho, _smoothstep(-0.03, 0.03, rim - rho)


def _random_in_cervix(
    rng: np.random.Generator, centre: tuple[float, float], radius: float, frac: float
) -> tuple[float, float]:
    ang, dist = rng.uniform(0, 2 * math.pi), radius * frac * math.sqrt(rng.uniform())
    return centre[0] + dist * math.cos(ang), centre[1] + dist * math.sin(ang)


def _vessel_mask(
    frame: _Frame, rng: np.random.Generator, centre: tuple[float, float], radius: float
) -> np.ndarray:
    """Thin smooth random red curves (returned as a 0-1 mask with per-vessel intensity)."""
    canvas = Image.new("L", (frame.w, frame.h), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(frame.s / 110))
    for _ in range(int(rng.integers(3, 9))):
        x, y = _random_in_cervix(rng, centre, radius, 0.85)
        heading = rng.uniform(0, 2 * math.pi)
        step = radius * rng.uniform(0.05, 0.09)
        points = []
        for _ in range(int(rng.integers(6, 16))):
            points.append((x * frame.s + frame.w / 2, y * frame.s + frame.h / 2))
            heading += rng.normal(0, 0.35)
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        draw.line(points, fill=int(rng.uniform(110, 230)), width=width, joint="curve")
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=0.35 * frame.s / 128))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _evidence(strength: float, area: float) -> float:
    """Latent detectability of one post-only focal whitening: contrast x sqrt(area fraction of the cervix)."""
    return float(strength) * math.sqrt(max(float(area), 0.0))
