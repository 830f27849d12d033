"""The easy generative model (generator version 1, pixel for pixel): strong, large lesions among
look-alikes present in both shots (see the package docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from workbench.data.synth.anatomy import _cervix_outline, _evidence, _Patient, _random_in_cervix, _vessel_mask
from workbench.data.synth.drawing import (
    _WHITE,
    _blend,
    _blob,
    _Frame,
    _shift_and_turn,
    _smooth_noise,
    _smoothstep,
)


@dataclass
class _Scene:
    """Everything shared by the pre and post shots of one case."""

    base: np.ndarray  # H x W x 3 float32 colour before shot-specific whitening
    cervix: np.ndarray  # H x W soft cervix mask
    shade: np.ndarray  # H x W multiplicative dome shading x texture (inside cervix)
    overlay: list[
        tuple[np.ndarray, np.ndarray, float]
    ]  # vessels and os drawn over whitening (mask, colour, a)
    background: np.ndarray  # H x W x 3
    post_whitening: list[tuple[np.ndarray, float]]  # (mask, strength) applied to post only
    centre: tuple[float, float]
    radius: float
    info: dict[str, float] = field(default_factory=dict)  # latent per-case variables (ground_truth.csv)


def _make_scene(frame: _Frame, patient: _Patient, positive: bool, rng: np.random.Generator) -> _Scene:
    h, w = frame.h, frame.w
    # Cervix geometry (patient-level shape with small per-visit jitter).
    centre, radius, rho, cervix = _cervix_outline(frame, patient, rng, 0.025, (0.96, 1.04))

    # Background: dark, reddish-brown, vignetted, faintly textured.
    bg_col = np.array([rng.uniform(28, 48), rng.uniform(14, 26), rng.uniform(12, 24)], dtype=np.float32)
    r_img = np.sqrt(frame.x**2 + frame.y**2)
    vignette = (1.0 - 0.6 * np.clip(r_img / 0.75, 0, 1) ** 2)[..., None]
    bg_noise = 1.0 + 0.15 * _smooth_noise(rng, (h, w), 6)[..., None]
    background = bg_col * vignette * bg_noise

    # Tissue colour, texture and shading.
    tissue = patient.tissue * rng.uniform(0.96, 1.04, size=3).astype(np.float32)
    base = np.broadcast_to(tissue, (h, w, 3)).copy()
    redness = 0.5 * _smooth_noise(rng, (h, w), 5) + 0.5 * _smooth_noise(rng, (h, w), 11)
    base[..., 1:] *= (1.0 - 0.05 * redness)[..., None]
    # Ectropion-like redder zone around the os.
    os_c = (centre[0] + float(rng.normal(0, 0.02)), centre[1] + float(rng.normal(0, 0.02)))
    ecto_r = radius * float(rng.uniform(0.25, 0.55))
    ecto = _blob(frame, rng, os_c[0], os_c[1], ecto_r, parts=(4, 8))
    _blend(base, ecto, tissue * np.array([0.9, 0.62, 0.62], dtype=np.float32), float(rng.uniform(0.3, 0.7)))
    dome = 0.72 + 0.28 * np.sqrt(np.clip(1.0 - np.minimum(rho, 1.0) ** 2, 0, 1))
    texture = 1.0 + 0.05 * _smooth_noise(rng, (h, w), 9) + 0.035 * _smooth_noise(rng, (h, w), 24)
    shade = (dome * texture).astype(np.float32)

    # Look-alike white spots, identical in pre and post.
    spot_centres: list[tuple[float, float, float]] = []
    for _ in range(int(rng.choice([1, 1, 2, 2, 3]))):
        cx, cy = _random_in_cervix(rng, centre, radius, 0.8)
        r = radius * float(rng.uniform(0.10, 0.22))
        _blend(base, _blob(frame, rng, cx, cy, r, parts=(4, 8)), _WHITE, float(rng.uniform(0.55, 0.9)))
        spot_centres.append((cx, cy, r))

    post_whitening: list[tuple[np.ndarray, float]] = []
    if positive:
        r = radius * float(rng.uniform(0.12, 0.20))
        for _ in range(20):  # keep the lesion off the look-alike spots so its whitening stays visible
            cx, cy = _random_in_cervix(rng, centre, radius, 0.75)
            if all(math.hypot(cx - sx, cy - sy) > r + sr for sx, sy, sr in spot_centres):
                break
        post_whitening.append((_blob(frame, rng, cx, cy, r, parts=(4, 8)), float(rng.uniform(0.6, 0.9))))
    if rng.uniform() < 0.4:  # hard negative cue: faint, small post-only whitening (any case)
        cx, cy = _random_in_cervix(rng, centre, radius, 0.8)
        r = radius * float(rng.uniform(0.05, 0.10))
        post_whitening.append((_blob(frame, rng, cx, cy, r, parts=(1, 3)), float(rng.uniform(0.10, 0.25))))
    # Latent variables for ground_truth.csv (computed, no random draws: the pixels stay as in version 1).
    cervix_px = float(cervix.sum()) + 1e-6
    regions = [(float(m.sum()) / cervix_px, st) for m, st in post_whitening]
    lesion = regions[0] if positive else (0.0, 0.0)
    lookalikes = regions[1:] if positive else regions
    info = {
        "lesion_strength": lesion[1],
        "lesion_area": lesion[0],
        "lookalike_strength": max((st for _, st in lookalikes), default=0.0),
        "evidence": max((_evidence(st, area) for area, st in regions), default=0.0),
    }

    overlay: list[tuple[np.ndarray, np.ndarray, float]] = []
    vessels = _vessel_mask(frame, rng, centre, radius)
    overlay.append((vessels, np.array([150.0, 28.0, 40.0], dtype=np.float32) * tissue[0] / 210.0, 0.75))
    # Os: dark slit/ellipse.
    oa = patient.os_angle + float(rng.normal(0, 0.1))
    a_len, b_len = radius * float(rng.uniform(0.10, 0.25)), radius * float(rng.uniform(0.03, 0.10))
    ox, oy = frame.x - os_c[0], frame.y - os_c[1]
    ou = (ox * math.cos(oa) + oy * math.sin(oa)) / a_len
    ov = (-ox * math.sin(oa) + oy * math.cos(oa)) / b_len
    os_mask = _smoothstep(-0.35, 0.35, 1.0 - np.sqrt(ou * ou + ov * ov))
    overlay.append((os_mask, np.array([70.0, 22.0, 28.0], dtype=np.float32), 0.92))

    return _Scene(base, cervix, shade, overlay, background, post_whitening, centre, radius, info)


def _render_shot(scene: _Scene, frame: _Frame, post: bool, rng: np.random.Generator) -> Image.Image:
    """Render one photograph of the scene: whitening (post), highlights, misalignment, drift, tint, noise."""
    rgb = scene.base.copy()
    if post:
        for mask, strength in scene.post_whitening:
            _blend(rgb, mask, _WHITE, strength)
    rgb *= scene.shade[..., None]
    for mask, colour, alpha in scene.overlay:
        _blend(rgb, mask, colour, alpha)
    # Specular highlights: small, saturated, different in every shot.
    spec = np.zeros((frame.h, frame.w), dtype=np.float32)
    for _ in range(int(rng.integers(3, 11))):
        cx, cy = _random_in_cervix(rng, scene.centre, scene.radius, 0.9)
        r = float(rng.uniform(0.006, 0.018))
        spec = np.maximum(spec, _blob(frame, rng, cx, cy, r, parts=(1, 3)))
    _blend(rgb, spec, (255.0, 255.0, 255.0), 1.0)
    a = scene.cervix[..., None]
    rgb = rgb * a + scene.background * (1.0 - a)

    # Misalignment: a small rigid-ish transform of this shot around the image centre.
    img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    angle = math.radians(float(np.clip(rng.normal(0, 0.8), -1.6, 1.6)))
    scale = float(rng.uniform(0.98, 1.02))
    tx = float(np.clip(rng.normal(0, 0.015), -0.03, 0.03)) * frame.s
    ty = float(np.clip(rng.normal(0, 0.015), -0.03, 0.03)) * frame.s
    fill = tuple(int(c) for c in np.clip(scene.background[0, 0], 0, 255))
    img = _shift_and_turn(img, frame, angle, scale, tx, ty, fill)

    # Photometric drift between shots: exposure, white balance, gamma; post gets the stain tint.
    out = np.asarray(img, dtype=np.float32) / 255.0
    gain = math.exp(float(rng.normal(0, 0.06))) * np.exp(rng.normal(0, 0.035, size=3))
    if post:
        gain = gain * np.array([1.03, 0.97, 0.84]) * rng.uniform(0.97, 1.03, size=3)
    out = np.clip(out * gain.astype(np.float32), 0, 1) ** np.float32(math.exp(float(rng.normal(0, 0.04))))
    out = out * np.float32(255.0) + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(1.5)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _render_case(
    width: int, height: int, patient: _Patient, positive: bool, rng: np.random.Generator
) -> tuple[Image.Image, Image.Image, dict[str, float]]:
    frame = _Frame(width, height)
    scene = _make_scene(frame, patient, positive, rng)
    return _render_shot(scene, frame, False, rng), _render_shot(scene, frame, True, rng), scene.info
