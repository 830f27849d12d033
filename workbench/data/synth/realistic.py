"""The realistic / hard generative model: faint, small, multifocal lesions overlapping post-only
look-alikes, per-shot nuisance and site profiles (numbers in :mod:`workbench.data.synth.levels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from workbench.data.synth.anatomy import _cervix_outline, _evidence, _Patient, _random_in_cervix, _vessel_mask
from workbench.data.synth.drawing import (
    _WHITE,
    _blend,
    _blend_patch,
    _blob_patch,
    _Frame,
    _Patch,
    _shift_and_turn,
    _smooth_noise,
    _smoothstep,
    _window,
)
from workbench.data.synth.levels import _Level, _Site
from workbench.data.synth.options import MIN_SIDE


@dataclass
class _Scene2:
    """Everything shared by the pre and post shots of one case (realistic / hard)."""

    canvas: np.ndarray  # H x W x 3 float32: shaded tissue with vessels and os, composited on the background
    cervix: np.ndarray  # H x W soft cervix mask
    shade: np.ndarray  # H x W shading, so post-only whitening is shaded like the tissue under it
    fill: tuple[int, ...]  # background colour for pixels moved in by the misalignment
    post_whitening: list[tuple[_Patch, float]]
    centre: tuple[float, float]
    radius: float
    glare: bool
    info: dict[str, float]


def _beta_in(rng: np.random.Generator, spec: tuple[float, float, float, float]) -> float:
    lo, hi, a, b = spec
    return float(lo + (hi - lo) * rng.beta(a, b))


def _make_scene2(
    frame: _Frame, patient: _Patient, positive: bool, level: _Level, rng: np.random.Generator
) -> _Scene2:
    h, w = frame.h, frame.w
    centre, radius, rho, cervix = _cervix_outline(frame, patient, rng, 0.03, (0.95, 1.05))
    cervix_px = float(cervix.sum()) + 1e-6

    bg_col = np.array([rng.uniform(24, 52), rng.uniform(12, 28), rng.uniform(10, 26)], dtype=np.float32)
    r_img = np.sqrt(frame.x**2 + frame.y**2)
    vignette = (1.0 - 0.6 * np.clip(r_img / 0.75, 0, 1) ** 2)[..., None]
    background = bg_col * vignette * (1.0 + 0.15 * _smooth_noise(rng, (h, w), 6)[..., None])

    tissue = patient.tissue * rng.uniform(0.95, 1.05, size=3).astype(np.float32)
    base = np.broadcast_to(tissue, (h, w, 3)).copy()
    redness = 0.5 * _smooth_noise(rng, (h, w), 5) + 0.5 * _smooth_noise(rng, (h, w), 11)
    base[..., 1:] *= (1.0 - 0.06 * redness)[..., None]
    os_c = (centre[0] + float(rng.normal(0, 0.02)), centre[1] + float(rng.normal(0, 0.02)))
    ecto = _blob_patch(frame, rng, os_c[0], os_c[1], radius * float(rng.uniform(0.25, 0.55)), parts=(4, 8))
    if ecto is not None:
        colour = tissue * np.array([0.9, 0.62, 0.62], dtype=np.float32)
        _blend_patch(base, ecto, colour, float(rng.uniform(0.3, 0.7)))
    dome = 0.72 + 0.28 * np.sqrt(np.clip(1.0 - np.minimum(rho, 1.0) ** 2, 0, 1))
    texture = 1.0 + 0.06 * _smooth_noise(rng, (h, w), 9) + 0.04 * _smooth_noise(rng, (h, w), 24)
    shade = (dome * texture).astype(np.float32)

    # Look-alike white spots present, identical, in both images.
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        cx, cy = _random_in_cervix(rng, centre, radius, 0.8)
        patch = _blob_patch(frame, rng, cx, cy, radius * float(rng.uniform(0.08, 0.22)), parts=(3, 8))
        if patch is not None:
            _blend_patch(base, patch, _WHITE, float(rng.uniform(0.4, 0.9)))

    post_whitening: list[tuple[_Patch, float]] = []
    lesion_strength = lesion_area = lookalike = 0.0
    evidence = 0.0
    if positive:
        med, sig = level.diameter
        if rng.uniform() < level.faint:  # the faint, small tail that overlaps the look-alikes
            lesion_strength = float(rng.uniform(level.strength[0], 0.3))
            med = med / 2
        else:
            lesion_strength = _beta_in(rng, level.strength)
        diam = float(np.clip(med * math.exp(rng.normal(0, sig)), *level.diameter_clip))
        n_foci = int(rng.integers(2, 4)) if rng.uniform() < level.multifocal else 1
        fx, fy = _random_in_cervix(rng, centre, radius, 0.7)
        area = 0.0
        for j in range(n_foci):
            if j:
                d_ang, d_len = rng.uniform(0, 2 * math.pi), radius * float(rng.uniform(0.1, 0.35))
                cx, cy = fx + d_len * math.cos(d_ang), fy + d_len * math.sin(d_ang)
            else:
                cx, cy = fx, fy
            r = radius * diam / math.sqrt(n_foci) * float(rng.uniform(0.8, 1.2))
            aspect = float(rng.uniform(1.0, level.elongation))
            patch = _blob_patch(frame, rng, cx, cy, r, parts=(3, 8), aspect=aspect, texture=level.texture)
            if patch is not None:
                patch = (patch[0] * cervix[patch[1][0] : patch[1][1], patch[1][2] : patch[1][3]], patch[1])
                post_whitening.append((patch, lesion_strength))
                area += float(patch[0].sum()) / cervix_px
        lesion_area = area
        evidence = _evidence(lesion_strength, lesion_area)
    # Focal post-only acetowhite-like spots (small, mostly faint).
    for _ in range(min(int(rng.poisson(level.spot_rate)), 5)):
        strength = _beta_in(rng, level.spot_strength)
        med, sig = level.spot_diameter
        diam = float(np.clip(med * math.exp(rng.normal(0, sig)), 0.015, 0.2))
        cx, cy = _random_in_cervix(rng, centre, radius, 0.8)
        patch = _blob_patch(frame, rng, cx, cy, radius * diam, parts=(1, 4), texture=level.texture * 0.5)
        if patch is not None:
            post_whitening.append((patch, strength))
            lookalike = max(lookalike, strength)
            evidence = max(evidence, _evidence(strength, float(patch[0].sum()) / cervix_px))
    # Squamous-metaplasia-like diffuse faint whitening around the os (large, smooth, low strength).
    if rng.uniform() < level.metaplasia:
        strength = float(rng.uniform(*level.metaplasia_strength))
        r = radius * float(rng.uniform(0.25, 0.5))
        cx, cy = os_c[0] + float(rng.normal(0, 0.05)), os_c[1] + float(rng.normal(0, 0.05))
        patch = _blob_patch(frame, rng, cx, cy, r, parts=(4, 8), aspect=float(rng.uniform(1.0, 1.6)))
        if patch is not None:
            post_whitening.append((patch, strength))
            lookalike = max(lookalike, strength)

    # Vessels and os are drawn under the post-only whitening (acetowhitening veils the vessels).
    vessels = _vessel_mask(frame, rng, centre, radius)
    vessel_colour = np.array([150.0, 28.0, 40.0], dtype=np.float32) * tissue[0] / 210.0
    oa = patient.os_angle + float(rng.normal(0, 0.1))
    a_len, b_len = radius * float(rng.uniform(0.10, 0.25)), radius * float(rng.uniform(0.03, 0.10))
    base *= shade[..., None]
    _blend(base, vessels, vessel_colour, 0.75)
    box = _window(frame, os_c[0], os_c[1], a_len * 1.5)
    if box is not None:
        y0, y1, x0, x1 = box
        ox, oy = frame.x[:, x0:x1] - os_c[0], frame.y[y0:y1, :] - os_c[1]
        ou = (ox * math.cos(oa) + oy * math.sin(oa)) / a_len
        ov = (-ox * math.sin(oa) + oy * math.cos(oa)) / b_len
        os_mask = _smoothstep(-0.35, 0.35, 1.0 - np.sqrt(ou * ou + ov * ov))
        _blend_patch(base, (os_mask, box), (70.0, 22.0, 28.0), 0.92)
    a = cervix[..., None]
    canvas = base * a + background * (1.0 - a)
    fill = tuple(int(c) for c in np.clip(background[0, 0], 0, 255))
    glare = bool(rng.uniform() < level.glare)
    info = {
        "lesion_strength": lesion_strength,
        "lesion_area": lesion_area,
        "lookalike_strength": lookalike,
        "evidence": evidence,
    }
    return _Scene2(canvas, cervix, shade, fill, post_whitening, centre, radius, glare, info)


def _blend_inside(
    rgb: np.ndarray,
    scene: _Scene2,
    patch: _Patch,
    colour: np.ndarray | tuple[float, float, float],
    alpha: float,
) -> None:
    """Blend a shaded colour into the cervix part of ``patch``'s window of ``rgb`` (in place)."""
    mask, (y0, y1, x0, x1) = patch
    a = (alpha * mask * scene.cervix[y0:y1, x0:x1])[..., None]
    win = rgb[y0:y1, x0:x1]
    win *= 1.0 - a
    win += a * (np.asarray(colour, dtype=np.float32) * scene.shade[y0:y1, x0:x1, None])


def _render_shot2(
    scene: _Scene2, frame: _Frame, post: bool, level: _Level, site: _Site, rng: np.random.Generator
) -> Image.Image:
    """One photograph: whitening (post), highlights, vignetting, misalignment, blur, drift, tint, noise."""
    rgb = scene.canvas.copy()
    if post:
        for patch, strength in scene.post_whitening:
            _blend_inside(rgb, scene, patch, _WHITE, strength)
    highlights = [(0.006, 0.018, (1, 3))] * int(rng.integers(3, 11))
    if post and scene.glare:  # larger glare patches, post only
        highlights += [(0.02, 0.05, (2, 5))] * int(rng.integers(1, 4))
    for r_lo, r_hi, parts in highlights:
        cx, cy = _random_in_cervix(rng, scene.centre, scene.radius, 0.9)
        patch = _blob_patch(frame, rng, cx, cy, float(rng.uniform(r_lo, r_hi)), parts=parts)
        alpha = float(rng.uniform(0.85, 1.0))
        if patch is not None:  # specular: saturated white, not shaded
            mask, (y0, y1, x0, x1) = patch
            _blend(rgb[y0:y1, x0:x1], mask * scene.cervix[y0:y1, x0:x1], (255.0, 255.0, 255.0), alpha)
    # Per-shot vignetting (off-centre radial fall-off).
    vx, vy = float(rng.normal(0, 0.1)), float(rng.normal(0, 0.1))
    v_strength = float(rng.uniform(0, level.vignette))
    rgb *= (1.0 - v_strength * np.clip(((frame.x - vx) ** 2 + (frame.y - vy) ** 2) / 0.5, 0, 1))[..., None]

    img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    max_rot = level.rotation
    angle = math.radians(float(np.clip(rng.normal(0, max_rot / 3), -max_rot, max_rot)))
    scale = float(rng.uniform(1 - level.scale, 1 + level.scale))
    tx = float(np.clip(rng.normal(0, level.shift / 3), -level.shift, level.shift)) * frame.s
    ty = float(np.clip(rng.normal(0, level.shift / 3), -level.shift, level.shift)) * frame.s
    img = _shift_and_turn(img, frame, angle, scale, tx, ty, scene.fill)
    blur = float(rng.uniform(0, level.blur)) * frame.s / 256
    if blur > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius=blur))

    # Photometric drift between shots (exposure, white balance, gamma; post: stain tint) as a lookup table.
    gain = math.exp(float(rng.normal(0, level.exposure))) * np.exp(rng.normal(0, level.white_balance, size=3))
    if post:
        gain = gain * np.array([1.03, 0.97, 0.84]) * rng.uniform(0.96, 1.04, size=3)
    gain = gain * site.cast * site.exposure
    gamma = math.exp(float(rng.normal(0, level.gamma)))
    levels = np.arange(256, dtype=np.float64) / 255.0
    lut = np.concatenate([np.clip(levels * g, 0, 1) ** gamma * 255.0 for g in gain])
    img = img.point(np.clip(lut + 0.5, 0, 255).astype(np.uint8).tolist())
    out = np.asarray(img, dtype=np.float32)
    noise = np.float32(math.hypot(level.noise, site.noise))
    out = out + rng.standard_normal(out.shape, dtype=np.float32) * noise
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _render_case2(
    width: int,
    height: int,
    patient: _Patient,
    positive: bool,
    level: _Level,
    site: _Site,
    rng: np.random.Generator,
) -> tuple[Image.Image, Image.Image, dict[str, float]]:
    """Render at the site's internal resolution, then resize to the output size."""
    inner = (
        max(MIN_SIDE // 2, round(width * site.resolution)),
        max(MIN_SIDE // 2, round(height * site.resolution)),
    )
    frame = _Frame(*inner)
    scene = _make_scene2(frame, patient, positive, level, rng)
    shots = [_render_shot2(scene, frame, post, level, site, rng) for post in (False, True)]
    if inner != (width, height):
        shots = [img.resize((width, height), Image.Resampling.BICUBIC) for img in shots]
    return shots[0], shots[1], scene.info
