"""Deterministic synthetic pre/post-stain cervical image pairs for demos, tests and benchmarks.

Why: the workbench needs data it can ship, regenerate byte for byte, and still learn from. The generator
models the one thing the real task depends on, an *acetowhite* lesion that is only visible by comparing the
post-stain photograph with the pre-stain one, among confounders that make either image alone misleading.

Generative model (all geometry in units of ``s = min(width, height)``, all colours in 0-255 RGB):

* **Patient.** Cases are grouped into patients (about ``cases_per_patient`` cases each). A patient fixes the
  base tissue colour, the cervix size and shape and the os orientation; each case jitters them slightly.
* **Scene** (shared by pre and post of a case, in scene coordinates):

  - a dark reddish-brown background with vignetting;
  - a pinkish, slightly elliptical cervix disk (diameter 0.66-0.84 s, irregular rim, dome shading);
  - mucosal texture: multiplicative low-frequency noise at two scales plus a redder ectropion-like zone
    around the os;
  - the os: a dark red slit/ellipse near the centre;
  - red vessels: 3-8 thin smooth random curves inside the cervix;
  - look-alike white spots: 1-3 irregular whitish blobs (same size and whiteness range as lesions) that
    are present, identical, in *both* images, so whiteness alone is not evidence.
* **Lesion** (positives only): one irregular blob (union of 4-7 Gaussians, soft edges), diameter 12-20% of
  the cervix diameter, random position inside the cervix, away from look-alike spots. It is normal tissue in
  pre and blends towards a bright low-saturation white (strength 0.6-0.9) in post.
* **Hard negatives** (any case, probability 0.4): one faint, small post-only whitening (diameter about 3-5% of the
  cervix diameter, strength 0.10-0.25), well below lesion size and contrast.
* **Per shot** (pre and post independently): 3-10 small saturated specular highlights at random places; a
  small rigid misalignment (shift ~1.5% s per shot, rotation up to ~1.5 degrees, scale +-2%); exposure gain,
  per-channel white-balance gains and a slight gamma change; sensor noise.
* **Post stain tint:** every post image is tinted slightly yellow/brown (blue and green reduced).

Not modelled: real anatomy and pathology variation, iodine (Schiller) staining, blood, mucus, instruments
(speculum), motion blur, focus changes, camera optics, or any link to real prevalence. The data exists to
exercise the pipeline and to make the pre/post comparison necessary; it says nothing about clinical use.

Output layout (the project's import format, both variants at once)::

    OUT/cases/<case_id>/pre.<fmt>, post.<fmt>
    OUT/manifest.csv        case_id,pre_path,post_path,label,patient_id  (label empty when unlabelled)
    OUT/ground_truth.csv    case_id,label,patient_id                      (all labels)
    OUT/README.txt          what the data models and does not model
    OUT/synth.json          parameters; written last, so its absence marks an incomplete run

Same parameters and seed give byte-identical files (fixed JPEG quality, no metadata).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from workbench.errors import ValidationError

__all__ = ["SynthSummary", "generate_dataset", "parse_size", "GENERATOR_VERSION"]

#: Bumped whenever the generated pixels change, so stale outputs are regenerated rather than reused.
GENERATOR_VERSION = 1

JPEG_QUALITY = 92
MIN_SIDE, MAX_SIDE = 32, 4096
MAX_N = 1_000_000
IMAGE_FORMATS = ("jpg", "png")

MANIFEST_NAME = "manifest.csv"
GROUND_TRUTH_NAME = "ground_truth.csv"
README_NAME = "README.txt"
PARAMS_NAME = "synth.json"
CASES_DIR = "cases"
_TMP_SUFFIX = ".synth-tmp"
_CASE_ID_RE = re.compile(r"^synth-\d{5,}$")


@dataclass(frozen=True)
class SynthSummary:
    """Where a generated data set lives and what it holds."""

    root: Path
    manifest: Path
    ground_truth: Path
    n: int
    positives: int
    labelled: int
    patients: int


# --------------------------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WIDTHxHEIGHT"`` (e.g. ``"128x96"`` -> ``(128, 96)``) or a single side ``"128"``."""
    if not isinstance(text, str):
        raise ValidationError(f"image size must be text like '128x96', got {text!r}")
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX\u00d7]\s*(\d+)\s*)?", text)
    if match is None:
        raise ValidationError(f"image size must look like '128x96' (width x height), got {text!r}")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) is not None else width
    return _check_size((width, height))


def _check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    ):
        raise ValidationError(f"size must be a (width, height) pair of integers, got {size!r}")
    width, height = int(size[0]), int(size[1])
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValidationError(
                f"image {name} must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {value}"
            )
    return width, height


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _validate(
    n: object,
    positive_rate: object,
    seed: object,
    size: object,
    unlabelled_fraction: object,
    cases_per_patient: object,
    image_format: object,
) -> tuple[int, float, int, tuple[int, int], float, float, str]:
    if not isinstance(n, int | np.integer) or isinstance(n, bool):
        raise ValidationError(f"n (number of cases) must be an integer, got {n!r}")
    if not 1 <= int(n) <= MAX_N:
        raise ValidationError(f"n (number of cases) must be between 1 and {MAX_N:,}, got {n}")
    if not _is_number(positive_rate) or not 0.0 <= float(positive_rate) <= 1.0:
        raise ValidationError(f"positive_rate must be a number between 0 and 1, got {positive_rate!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or int(seed) < 0:
        raise ValidationError(f"seed must be a non-negative integer, got {seed!r}")
    if not _is_number(unlabelled_fraction) or not 0.0 <= float(unlabelled_fraction) < 1.0:
        raise ValidationError(
            f"unlabelled_fraction must be a number in [0, 1) (some cases must stay labelled), "
            f"got {unlabelled_fraction!r}"
        )
    if (
        not _is_number(cases_per_patient)
        or not math.isfinite(float(cases_per_patient))
        or not 1.0 <= float(cases_per_patient) <= 100.0
    ):
        raise ValidationError(
            f"cases_per_patient must be a number between 1 and 100, got {cases_per_patient!r}"
        )
    fmt = image_format.lower().lstrip(".") if isinstance(image_format, str) else None
    if fmt not in IMAGE_FORMATS:
        raise ValidationError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    return (
        int(n),
        float(positive_rate),
        int(seed),
        _check_size(tuple(size) if isinstance(size, list) else size),
        float(unlabelled_fraction),
        float(cases_per_patient),
        fmt,
    )


# --------------------------------------------------------------------------------------------------------
# Study design: labels, patients, unlabelled subset
# --------------------------------------------------------------------------------------------------------


def _n_positives(n: int, rate: float) -> int:
    k = round(n * rate)
    if rate > 0:
        k = max(k, 1)
    return min(k, n)


def _design(
    n: int, rate: float, unlabelled_fraction: float, cases_per_patient: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return labels (0/1), patient index (0-based, ordered by first case) and an unlabelled mask."""
    k = _n_positives(n, rate)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, size=k, replace=False)] = 1

    n_patients = min(n, max(1, round(n / cases_per_patient)))
    owner = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, size=n - n_patients)])
    rng.shuffle(owner)
    # Renumber patients by first appearance so ids increase along the case list.
    _, first = np.unique(owner, return_index=True)
    rank = np.empty(n_patients, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(n_patients)
    patients = rank[owner]

    unlabelled = np.zeros(n, dtype=bool)
    n_unl = round(n * unlabelled_fraction)
    pos_idx, neg_idx = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    # Stratified: each class gives up its share, but keeps at least one labelled case when it has any.
    cap_pos, cap_neg = max(len(pos_idx) - 1, 0), max(len(neg_idx) - 1, 0)
    u_pos = min(round(n_unl * len(pos_idx) / n), cap_pos)
    u_neg = min(n_unl - u_pos, cap_neg)
    u_pos = min(n_unl - u_neg, cap_pos)
    if u_pos:
        unlabelled[rng.choice(pos_idx, size=u_pos, replace=False)] = True
    if u_neg:
        unlabelled[rng.choice(neg_idx, size=u_neg, replace=False)] = True
    return labels, patients, unlabelled


# --------------------------------------------------------------------------------------------------------
# Image synthesis
# --------------------------------------------------------------------------------------------------------


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


def _blend(
    rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray | tuple[float, float, float], alpha: float
) -> None:
    """In place: ``rgb = rgb * (1 - a) + colour * a`` with ``a = alpha * mask``."""
    a = (alpha * mask)[..., None]
    rgb *= 1.0 - a
    rgb += a * np.asarray(colour, dtype=np.float32)


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


_WHITE = np.array([242.0, 236.0, 230.0], dtype=np.float32)


def _make_scene(frame: _Frame, patient: _Patient, positive: bool, rng: np.random.Generator) -> _Scene:
    h, w = frame.h, frame.w
    # Cervix geometry (patient-level shape with small per-visit jitter).
    centre = (float(rng.normal(0, 0.025)), float(rng.normal(0, 0.025)))
    radius = patient.radius * float(rng.uniform(0.96, 1.04))
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
    edge = 0.03
    cervix = _smoothstep(-edge, edge, rim - rho)

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

    return _Scene(base, cervix, shade, overlay, background, post_whitening, centre, radius)


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
    fill = tuple(int(c) for c in np.clip(scene.background[0, 0], 0, 255))
    img = img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill)

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
) -> tuple[Image.Image, Image.Image]:
    frame = _Frame(width, height)
    scene = _make_scene(frame, patient, positive, rng)
    return _render_shot(scene, frame, False, rng), _render_shot(scene, frame, True, rng)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False, progressive=False)
    else:
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _is_our_file(root: Path, path: Path) -> bool:
    """True for files this generator writes (or leaves behind when interrupted)."""
    rel = path.relative_to(root).parts
    name = rel[-1].removesuffix(_TMP_SUFFIX)
    if len(rel) == 1:
        return name in (MANIFEST_NAME, GROUND_TRUTH_NAME, README_NAME, PARAMS_NAME)
    if len(rel) == 3 and rel[0] == CASES_DIR and _CASE_ID_RE.match(rel[1]):
        return name in {f"{stem}.{fmt}" for stem in ("pre", "post") for fmt in IMAGE_FORMATS}
    return False


def _foreign_entries(root: Path, limit: int = 4) -> list[Path]:
    """Up to ``limit`` entries under ``root`` that this generator did not write.

    Foreign folders are reported, not entered, so pointing ``out`` at a large unrelated tree stays fast.
    """
    foreign: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).parts
        keep = []
        for name in sorted(dirnames):
            sub = rel + (name,)
            ours = sub == (CASES_DIR,) or (len(sub) == 2 and sub[0] == CASES_DIR and _CASE_ID_RE.match(name))
            if ours and not (here / name).is_symlink():
                keep.append(name)
            else:
                foreign.append(here / name)
        dirnames[:] = keep
        foreign.extend(
            here / name
            for name in sorted(filenames)
            if (here / name).is_symlink() or not _is_our_file(root, here / name)
        )
        if len(foreign) >= limit:
            break
    return sorted(foreign)[:limit]


def _case_ids(n: int) -> list[str]:
    width = max(5, len(str(n)))
    return [f"synth-{i:0{width}d}" for i in range(1, n + 1)]


def _patient_ids(n_patients: int) -> list[str]:
    width = max(4, len(str(n_patients)))
    return [f"patient-{i:0{width}d}" for i in range(1, n_patients + 1)]


def _complete(root: Path, n: int, fmt: str) -> bool:
    if not all((root / name).is_file() for name in (MANIFEST_NAME, GROUND_TRUTH_NAME, README_NAME)):
        return False
    cases = root / CASES_DIR
    return all(
        (cases / cid / f"pre.{fmt}").is_file() and (cases / cid / f"post.{fmt}").is_file()
        for cid in _case_ids(n)
    )


def _summary_from_files(root: Path, n: int) -> SynthSummary | None:
    """Summary of an existing output read from its CSVs; None when they are inconsistent."""
    try:
        with (root / GROUND_TRUTH_NAME).open(newline="", encoding="utf-8") as fh:
            truth = list(csv.DictReader(fh))
        with (root / MANIFEST_NAME).open(newline="", encoding="utf-8") as fh:
            manifest = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if len(truth) != n or len(manifest) != n:
        return None
    try:
        positives = sum(int(row["label"]) for row in truth)
        labelled = sum(1 for row in manifest if (row.get("label") or "").strip() != "")
        patients = len({row["patient_id"] for row in truth})
    except (KeyError, ValueError, TypeError):
        return None
    return SynthSummary(
        root, root / MANIFEST_NAME, root / GROUND_TRUTH_NAME, n, positives, labelled, patients
    )


_README = """\
Synthetic pre/post-stain cervical image pairs (workbench synthetic generator v{version})

THIS IS NOT MEDICAL DATA. Every image is drawn by a small random program; no patient exists.

Parameters: n={n}, positive_rate={rate}, seed={seed}, size={w}x{h} (width x height),
unlabelled_fraction={unl}, cases_per_patient={cpp}, image_format={fmt}.
Contents: {n} cases, {pos} positive, {labelled} labelled in manifest.csv, {patients} patients.

Files
  cases/<case_id>/pre.{fmt}, post.{fmt}   one pre-stain and one post-stain photograph per case
  manifest.csv       case_id,pre_path,post_path,label,patient_id (paths relative to this folder;
                     label 0/1, empty for the unlabelled cases)
  ground_truth.csv   case_id,label,patient_id with every label (for simulations only)
  synth.json         the parameters; written last (a folder without it is an interrupted run)

What the data models
  - A pinkish cervix-like disk with a dark os, mucosal texture, a redder zone around the os,
    red vessels, on a dark background. Patients share tissue colour and cervix shape.
  - Positive cases: one "acetowhite" lesion, an irregular soft-edged blob (12-20% of the cervix
    diameter) that looks like normal tissue in pre and turns bright and low-saturated in post.
    It can only be recognised by comparing post with pre.
  - Confounders in every case: whitish look-alike spots present in BOTH images at the same
    place, small specular highlights that differ between shots, exposure and white-balance drift,
    slight misalignment (shift, rotation, scale) between the shots, a yellow/brown stain tint in
    every post image, and (in some cases) a faint, small post-only whitening far below lesion size.

What it does not model
  - Real anatomy, real lesion appearance or grades, iodine staining, blood, mucus, speculum and
    other instruments, focus and motion blur, camera optics, realistic prevalence or any link
    between these images and clinical outcomes. Results on this data say nothing about clinical
    performance; use it to exercise and benchmark the pipeline.
"""


def generate_dataset(
    out: Path,
    n: int = 400,
    positive_rate: float = 0.1,
    seed: int = 0,
    size: tuple[int, int] = (128, 128),
    unlabelled_fraction: float = 0.0,
    cases_per_patient: float = 1.3,
    image_format: str = "jpg",
) -> SynthSummary:
    """Write a synthetic pair data set to ``out`` (see the module docstring) and return its summary.

    ``size`` is ``(width, height)``. Exactly ``round(n * positive_rate)`` positives (at least one when the
    rate is above zero). Reuses a complete earlier output of the same parameters instead of regenerating;
    refuses a non-empty folder that is not such an output.
    """
    n, positive_rate, seed, size, unlabelled_fraction, cases_per_patient, fmt = _validate(
        n, positive_rate, seed, size, unlabelled_fraction, cases_per_patient, image_format
    )
    root = Path(out)
    params = {
        "generator": "workbench.data.synth",
        "version": GENERATOR_VERSION,
        "n": n,
        "positive_rate": positive_rate,
        "seed": seed,
        "size": list(size),
        "unlabelled_fraction": unlabelled_fraction,
        "cases_per_patient": cases_per_patient,
        "image_format": fmt,
    }
    if root.exists() and not root.is_dir():
        raise ValidationError(f"output path {root} exists and is not a folder; choose an empty folder")
    if root.is_dir() and any(root.iterdir()):
        params_file = root / PARAMS_NAME
        if params_file.is_file():
            try:
                previous = json.loads(params_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                previous = None
            same = (
                isinstance(previous, dict)
                and previous.get("generator") == params["generator"]
                and {k: previous.get(k) for k in params if k != "version"}
                == {k: v for k, v in params.items() if k != "version"}
            )
            if not same:
                raise ValidationError(
                    f"{root} already holds synthetic data made with different parameters "
                    f"({_describe_difference(previous, params)}); choose an empty folder"
                )
            if previous.get("version") == GENERATOR_VERSION and _complete(root, n, fmt):
                summary = _summary_from_files(root, n)
                if summary is not None:
                    return summary
        foreign = _foreign_entries(root)
        if foreign:
            shown = ", ".join(str(p.relative_to(root)) for p in foreign[:3])
            more = " and more" if len(foreign) > 3 else ""
            raise ValidationError(
                f"{root} is not empty and does not look like a synthetic data folder "
                f"(found {shown}{more}); choose an empty folder"
            )
        # Only our own (stale or interrupted) files: clear them and regenerate.
        (root / PARAMS_NAME).unlink(missing_ok=True)
        shutil.rmtree(root / CASES_DIR, ignore_errors=True)
        for name in (MANIFEST_NAME, GROUND_TRUTH_NAME, README_NAME):
            (root / name).unlink(missing_ok=True)
        for leftover in root.glob("*" + _TMP_SUFFIX):
            leftover.unlink()
    root.mkdir(parents=True, exist_ok=True)

    seq = np.random.SeedSequence([seed, 0x5E7A])
    design_seq, patient_seq, case_seq = seq.spawn(3)
    labels, patients, unlabelled = _design(
        n, positive_rate, unlabelled_fraction, cases_per_patient, np.random.default_rng(design_seq)
    )
    n_patients = int(patients.max()) + 1
    patient_models = [_make_patient(np.random.default_rng(s)) for s in patient_seq.spawn(n_patients)]
    case_ids, patient_ids = _case_ids(n), _patient_ids(n_patients)

    width, height = size
    manifest_rows, truth_rows = [], []
    for i, (case_id, case_rng_seq) in enumerate(zip(case_ids, case_seq.spawn(n), strict=True)):
        rng = np.random.default_rng(case_rng_seq)
        pre, post = _render_case(width, height, patient_models[patients[i]], bool(labels[i]), rng)
        case_dir = root / CASES_DIR / case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(case_dir / f"pre.{fmt}", _encode(pre, fmt))
        _write_atomic(case_dir / f"post.{fmt}", _encode(post, fmt))
        label = "" if unlabelled[i] else str(int(labels[i]))
        pid = patient_ids[patients[i]]
        rel = f"{CASES_DIR}/{case_id}"
        manifest_rows.append([case_id, f"{rel}/pre.{fmt}", f"{rel}/post.{fmt}", label, pid])
        truth_rows.append([case_id, str(int(labels[i])), pid])

    _write_atomic(
        root / MANIFEST_NAME,
        _csv_bytes(["case_id", "pre_path", "post_path", "label", "patient_id"], manifest_rows),
    )
    _write_atomic(root / GROUND_TRUTH_NAME, _csv_bytes(["case_id", "label", "patient_id"], truth_rows))
    positives, labelled = int(labels.sum()), int((~unlabelled).sum())
    readme = _README.format(
        version=GENERATOR_VERSION,
        n=n,
        rate=positive_rate,
        seed=seed,
        w=width,
        h=height,
        unl=unlabelled_fraction,
        cpp=cases_per_patient,
        fmt=fmt,
        pos=positives,
        labelled=labelled,
        patients=n_patients,
    )
    _write_atomic(root / README_NAME, readme.encode("utf-8"))
    _write_atomic(root / PARAMS_NAME, (json.dumps(params, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return SynthSummary(
        root=root,
        manifest=root / MANIFEST_NAME,
        ground_truth=root / GROUND_TRUTH_NAME,
        n=n,
        positives=positives,
        labelled=labelled,
        patients=n_patients,
    )


def _describe_difference(previous: object, params: dict) -> str:
    if not isinstance(previous, dict):
        return f"unreadable {PARAMS_NAME}"
    diffs = [
        f"{key}={previous.get(key)!r} there, {value!r} asked"
        for key, value in params.items()
        if key != "version" and previous.get(key) != value
    ]
    return "; ".join(diffs[:4]) or "different generator"
