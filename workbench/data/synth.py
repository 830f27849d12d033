"""Deterministic synthetic pre/post-stain cervical image pairs for demos, tests and benchmarks.

Why: the workbench needs data it can ship, regenerate byte for byte, and still learn from. The generator
models the one thing the real task depends on, an *acetowhite* lesion that is only visible by comparing the
post-stain photograph with the pre-stain one, among confounders that make either image alone misleading.

Difficulty levels (``difficulty=``): ``"easy"`` is the generator of version 1, pixel for pixel (its lesions
are far stronger and larger than any look-alike; a hand-written whitening score separates it almost
perfectly). ``"realistic"`` (the default) and ``"hard"`` use the model described after the easy one, in which
faint, small lesions overlap post-only look-alikes, so only part of the positives are recognisable.

Easy generative model (all geometry in units of ``s = min(width, height)``, all colours in 0-255 RGB):

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
* **Labels:** positives drawn uniformly among the cases.

Realistic / hard generative model (the same scene, with these differences; numbers in ``_LEVELS``):

* **Patients share risk.** Each patient draws a log-normal risk (sigma 1); the exactly ``round(n * rate)``
  positives are drawn without replacement with probability proportional to their patient's risk, so
  positives cluster within patients.
* **Lesion** (positives): strength from a Beta distribution (realistic ``0.12 + 0.83 * Beta(3, 1.4)``,
  hard ``0.08 + 0.87 * Beta(3.5, 1.2)``) and diameter / cervix diameter log-normal (median 0.28 / 0.27); with
  probability 0.15 / 0.25 the lesion is instead *faint and small* (strength uniform up to 0.3, half the
  median diameter), which overlaps the focal look-alikes below. With probability 0.25 / 0.35 it is split
  into 2-3 nearby foci; each focus is elongated (aspect up to 2 / 2.5) and its whitening is textured
  (multiplicative smooth noise, amplitude 0.3 / 0.4). Whitening is shaded like the tissue and veils the
  vessels under it.
* **Post-only look-alikes** (any case, positives too): focal acetowhite-like spots (Poisson mean 0.6 / 0.9 per
  case, strength ``0.05 + 0.35 * Beta(1.5, 3)`` / ``0.05 + 0.4 * Beta(1.5, 2.5)``, diameter about 5% of the
  cervix diameter); a squamous-metaplasia-like diffuse faint whitening near the os (probability 0.3 / 0.4,
  strength 0.04-0.15 / 0.05-0.2, radius 25-50% of the cervix radius, smooth); extra large glare patches in
  the post shot (probability 0.2 / 0.3). Whitish spots present in *both* images as in easy (0-3).
* **Per shot:** shift up to 3% / 4% of ``s`` (normal, sd a third of the maximum, clipped), rotation up to
  2.5 / 4 degrees, scale +-3% / +-4%; exposure (log sd 0.10 / 0.13), white balance (0.05 / 0.06) and gamma
  (0.07 / 0.09) drift; Gaussian blur up to 0.8 / 1.1 px at 256 px; off-centre vignetting up to 0.25 / 0.3;
  sensor noise sd 2 / 2.5; the post stain tint.
* **Latent variables** (``ground_truth.csv``): ``lesion_strength``, ``lesion_area`` (sum of the soft lesion
  mask over the cervix area), ``lookalike_strength`` (strongest post-only look-alike, focal or diffuse) and
  ``evidence = max(strength * sqrt(area))`` over the post-only *focal* whitenings (the lesion's foci taken
  together, and each focal look-alike spot; diffuse metaplasia and glare are told apart by shape and are
  left out). Its AUROC is the Bayes-level reference written to ``synth.json`` and ``README.txt``.

Options for every level:

* **Sites** (``sites`` > 1): each site draws a device profile (colour cast, exposure, internal resolution
  50-100% of the output size: rendered there and resized up, JPEG quality 70-95, extra sensor noise); each
  patient belongs to one site (``site`` column of ``ground_truth.csv``; not in the manifest). ``sites=1`` is
  one standard device (no profile applied). For easy the site profile is applied to the finished image.
* **Label noise** (``label_noise`` in [0, 0.5)): exactly ``round(label_noise * labelled)`` labelled cases
  get the other label in ``manifest.csv``; ``ground_truth.csv`` keeps the truth (``label``) and the
  recorded label (``recorded_label``).
* **Pair faults** (``swap_rate``, ``mismatch_rate``, each in [0, 0.5]): what a data pipeline does to pairs,
  planted after rendering so every image stays as generated. Exactly ``round(n * swap_rate)`` cases get
  their pre and post files exchanged (*swapped*), and exactly ``round(n * mismatch_rate)`` other cases get
  their post file replaced by the post file of an unfaulted case of another patient (*mismatched*; the
  bytes are copied, so two cases share that post file). ``ground_truth.csv`` then gains a ``pair_fault``
  column (``swapped``, ``mismatched`` or empty) and ``synth.json`` the two rates; with both rates 0 the
  output is byte-identical to what it was before these options existed.

Not modelled: real anatomy and pathology variation, iodine (Schiller) staining, blood, mucus, instruments
(speculum), motion blur, camera optics, or any link to real prevalence. The data exists to exercise the
pipeline and to make the pre/post comparison necessary; it says nothing about clinical use.

Output layout (the project's import format, both variants at once)::

    OUT/cases/<case_id>/pre.<fmt>, post.<fmt>
    OUT/manifest.csv        case_id,pre_path,post_path,label,patient_id  (label empty when unlabelled)
    OUT/ground_truth.csv    case_id,label,recorded_label,patient_id,site,lesion_strength,lesion_area,
                            lookalike_strength,evidence[,pair_fault]       (all cases, true labels)
    OUT/README.txt          what the data models and does not model
    OUT/synth.json          parameters and reference AUROCs; written last (absent: an incomplete run)

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from workbench.errors import ValidationError

__all__ = ["DIFFICULTIES", "GENERATOR_VERSION", "SynthSummary", "generate_dataset", "parse_size"]

#: Bumped whenever the generated pixels change, so stale outputs are regenerated rather than reused.
GENERATOR_VERSION = 2

DIFFICULTIES = ("easy", "realistic", "hard")
MAX_SITES = 16
TRUTH_COLUMNS = (
    "case_id",
    "label",
    "recorded_label",
    "patient_id",
    "site",
    "lesion_strength",
    "lesion_area",
    "lookalike_strength",
    "evidence",
)
#: Written after TRUTH_COLUMNS only when pair faults are planted (so a fault-free output is unchanged).
PAIR_FAULT_COLUMN = "pair_fault"
PAIR_FAULTS = ("swapped", "mismatched")
MAX_FAULT_RATE = 0.5
#: Parameters a version-1 synth.json lacks, with the values version 1 implied.
_V1_DEFAULTS = {"difficulty": "easy", "label_noise": 0.0, "sites": 1}
#: Parameters written to synth.json only when non-zero; an output without them had them at zero.
_FAULT_DEFAULTS = {"swap_rate": 0.0, "mismatch_rate": 0.0}

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
    difficulty: str = "realistic"
    label_noise: float = 0.0
    sites: int = 1
    #: AUROC of the latent ``evidence`` column against the true labels, and against the recorded labels of
    #: the labelled cases (None when only one class is present).
    reference_auroc: float | None = None
    reference_auroc_recorded: float | None = None
    #: Planted pair faults (``pair_fault`` in ground_truth.csv): pre/post exchanged, post of another patient.
    swapped: int = 0
    mismatched: int = 0


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
    patients = _assign_patients(n, cases_per_patient, rng)
    return labels, patients, _choose_unlabelled(labels, unlabelled_fraction, rng)


def _design_clustered(
    n: int,
    rate: float,
    unlabelled_fraction: float,
    cases_per_patient: float,
    risk_sigma: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like ``_design``, but the positives are drawn with probability proportional to a log-normal
    patient-level risk, so a patient's visits tend to share their label."""
    patients = _assign_patients(n, cases_per_patient, rng)
    risk = np.exp(rng.normal(0.0, risk_sigma, size=int(patients.max()) + 1))
    weight = risk[patients]
    k = _n_positives(n, rate)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, size=k, replace=False, p=weight / weight.sum())] = 1
    return labels, patients, _choose_unlabelled(labels, unlabelled_fraction, rng)


def _assign_patients(n: int, cases_per_patient: float, rng: np.random.Generator) -> np.ndarray:
    n_patients = min(n, max(1, round(n / cases_per_patient)))
    owner = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, size=n - n_patients)])
    rng.shuffle(owner)
    # Renumber patients by first appearance so ids increase along the case list.
    _, first = np.unique(owner, return_index=True)
    rank = np.empty(n_patients, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(n_patients)
    return rank[owner]


def _choose_unlabelled(
    labels: np.ndarray, unlabelled_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    n = len(labels)
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
    return unlabelled


def _flip_labels(
    labels: np.ndarray, unlabelled: np.ndarray, label_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Recorded labels: exactly ``round(label_noise * labelled)`` labelled cases flipped."""
    recorded = labels.copy()
    labelled = np.flatnonzero(~unlabelled)
    m = round(label_noise * len(labelled))
    if m:
        flip = rng.choice(labelled, size=m, replace=False)
        recorded[flip] = 1 - recorded[flip]
    return recorded


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
    info: dict[str, float] = field(default_factory=dict)  # latent per-case variables (ground_truth.csv)


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
) -> tuple[Image.Image, Image.Image, dict[str, float]]:
    frame = _Frame(width, height)
    scene = _make_scene(frame, patient, positive, rng)
    return _render_shot(scene, frame, False, rng), _render_shot(scene, frame, True, rng), scene.info


def _evidence(strength: float, area: float) -> float:
    """Latent detectability of one post-only focal whitening: contrast x sqrt(area fraction of the cervix)."""
    return float(strength) * math.sqrt(max(float(area), 0.0))


# --------------------------------------------------------------------------------------------------------
# Realistic / hard generative model (difficulty levels other than "easy")
# --------------------------------------------------------------------------------------------------------


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


_LEVELS = {
    "realistic": _Level(
        strength=(0.12, 0.95, 3.0, 1.4),
        diameter=(0.28, 0.35),
        diameter_clip=(0.04, 0.45),
        faint=0.15,
        multifocal=0.25,
        elongation=2.0,
        texture=0.3,
        spot_rate=0.6,
        spot_strength=(0.05, 0.4, 1.5, 3.0),
        spot_diameter=(0.05, 0.35),
        metaplasia=0.3,
        metaplasia_strength=(0.04, 0.15),
        glare=0.2,
        shift=0.03,
        rotation=2.5,
        scale=0.03,
        exposure=0.10,
        white_balance=0.05,
        gamma=0.07,
        blur=0.8,
        vignette=0.25,
        noise=2.0,
        risk_sigma=1.0,
    ),
    "hard": _Level(
        strength=(0.08, 0.95, 3.5, 1.2),
        diameter=(0.27, 0.45),
        diameter_clip=(0.03, 0.45),
        faint=0.25,
        multifocal=0.35,
        elongation=2.5,
        texture=0.4,
        spot_rate=0.9,
        spot_strength=(0.05, 0.45, 1.5, 2.5),
        spot_diameter=(0.055, 0.35),
        metaplasia=0.4,
        metaplasia_strength=(0.05, 0.2),
        glare=0.3,
        shift=0.04,
        rotation=4.0,
        scale=0.04,
        exposure=0.13,
        white_balance=0.06,
        gamma=0.09,
        blur=1.1,
        vignette=0.3,
        noise=2.5,
        risk_sigma=1.0,
    ),
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
    centre = (float(rng.normal(0, 0.03)), float(rng.normal(0, 0.03)))
    radius = patient.radius * float(rng.uniform(0.95, 1.05))
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
    cervix = _smoothstep(-0.03, 0.03, rim - rho)
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
    cos_a, sin_a = math.cos(angle) / scale, math.sin(angle) / scale
    cx, cy = frame.w / 2, frame.h / 2
    coeffs = (
        cos_a,
        sin_a,
        cx - cos_a * (cx + tx) - sin_a * (cy + ty),
        -sin_a,
        cos_a,
        cy + sin_a * (cx + tx) - cos_a * (cy + ty),
    )
    img = img.transform(
        img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=scene.fill
    )
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


def _encode(img: Image.Image, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
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


def _summary_from_files(root: Path, n: int, params: dict) -> SynthSummary | None:
    """Summary of an existing output read from its CSVs and parameters; None when they are inconsistent."""
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
    faults = [row.get(PAIR_FAULT_COLUMN) or "" for row in truth]
    reference = params.get("reference_auroc")
    reference = reference if isinstance(reference, dict) else {}
    return SynthSummary(
        root,
        root / MANIFEST_NAME,
        root / GROUND_TRUTH_NAME,
        n,
        positives,
        labelled,
        patients,
        difficulty=params["difficulty"],
        label_noise=params["label_noise"],
        sites=params["sites"],
        reference_auroc=reference.get("truth"),
        reference_auroc_recorded=reference.get("recorded"),
        swapped=faults.count("swapped"),
        mismatched=faults.count("mismatched"),
    )


_README = """\
Synthetic pre/post-stain cervical image pairs (workbench synthetic generator v{version})

THIS IS NOT MEDICAL DATA. Every image is drawn by a small random program; no patient exists.

Parameters: n={n}, positive_rate={rate}, seed={seed}, size={w}x{h} (width x height),
unlabelled_fraction={unl}, cases_per_patient={cpp}, image_format={fmt},
difficulty={difficulty}, label_noise={noise}, sites={sites}.
Contents: {n} cases, {pos} positive, {labelled} labelled in manifest.csv ({flipped} of them with a
flipped recorded label), {patients} patients.
Reference AUROC of the latent "evidence" (a perfect observer of the generator's latent variables):
{reference}

Files
  cases/<case_id>/pre.{fmt}, post.{fmt}   one pre-stain and one post-stain photograph per case
  manifest.csv       case_id,pre_path,post_path,label,patient_id (paths relative to this folder;
                     label 0/1 is the RECORDED label, flipped for label_noise of the labelled
                     cases; empty for the unlabelled cases)
  ground_truth.csv   case_id,label,recorded_label,patient_id,site,lesion_strength,lesion_area,
                     lookalike_strength,evidence for every case (for simulations only):
                       label              the true label
                       recorded_label     the label in manifest.csv (empty when unlabelled)
                       site               the site/device that took the pictures (site-1 ...)
                       lesion_strength    peak whitening of the lesion in post (0 for negatives)
                       lesion_area        lesion area as a fraction of the cervix area (0 for negatives)
                       lookalike_strength strongest post-only look-alike whitening (0 when none)
                       evidence           max over post-only focal whitenings (lesion foci together,
                                          and each focal look-alike spot) of strength * sqrt(area)
  synth.json         the parameters and reference AUROCs; written last (a folder without it is an
                     interrupted run)

What the data models ({difficulty})
{model}
What it does not model
  - Real anatomy, real lesion appearance or grades, iodine staining, blood, mucus, speculum and
    other instruments, motion blur, real camera optics, realistic prevalence or any link
    between these images and clinical outcomes. Results on this data say nothing about clinical
    performance; use it to exercise and benchmark the pipeline.
"""

_MODEL_EASY = """\
  - A pinkish cervix-like disk with a dark os, mucosal texture, a redder zone around the os,
    red vessels, on a dark background. Patients share tissue colour and cervix shape.
  - Positive cases: one "acetowhite" lesion, an irregular soft-edged blob (12-20% of the cervix
    diameter) that looks like normal tissue in pre and turns bright and low-saturated in post
    (strength 0.6-0.9). It can only be recognised by comparing post with pre.
  - Confounders in every case: whitish look-alike spots present in BOTH images at the same
    place, small specular highlights that differ between shots, exposure and white-balance drift,
    slight misalignment (shift, rotation, scale) between the shots, a yellow/brown stain tint in
    every post image, and (in some cases) a faint, small post-only whitening far below lesion size.
    Lesions and look-alikes do not overlap in strength: this level is easy on purpose.
"""

_MODEL_LEVEL = """\
  - A pinkish cervix-like disk with a dark os, mucosal texture, a redder zone around the os,
    red vessels, on a dark background. Patients share tissue colour and cervix shape.
  - Positive cases: an "acetowhite" lesion that looks like normal tissue in pre and whitens in
    post. Strength = {s_lo} + {s_span} * Beta({s_a}, {s_b}) (faint to dense); diameter / cervix
    diameter log-normal (median {d_med}, sigma {d_sig}, clipped to {d_lo}-{d_hi}); with
    probability {multi} split into 2-3 foci; each focus elongated (aspect up to {elong}) and its
    whitening textured (amplitude {tex}).
  - Post-only look-alikes in any case (negatives and positives): focal acetowhite-like spots
    (Poisson mean {spot_rate} per case, strength {p_lo} + {p_span} * Beta({p_a}, {p_b}),
    diameter median {p_med} of the cervix), so the faintest, smallest lesions overlap them;
    a squamous-metaplasia-like diffuse faint whitening near the os (probability {meta},
    strength {m_lo}-{m_hi}, 25-50% of the cervix radius); extra large glare patches in post
    (probability {glare}). Plus whitish spots present identically in BOTH images.
  - Between the two shots: shift up to {shift:.0%} of the image side, rotation up to {rot} degrees,
    scale +-{scale:.0%}; exposure (log sd {exp}), white balance (log sd {wb}) and gamma (log sd
    {gam}) drift; Gaussian blur up to {blur} px (at 256 px); off-centre vignetting up to {vig};
    sensor noise sd {noise}; a yellow/brown stain tint in every post image.
  - Patients: a log-normal patient risk (sigma {risk}); the positives are drawn with probability
    proportional to it, so positives cluster within patients.
  - Sites (sites > 1): each patient belongs to one site; a site has its own colour cast,
    exposure, internal resolution (50-100%, rendered down then up to the output size), JPEG
    quality (70-95) and extra sensor noise.
"""

_SITES_NOTE = """\
  - Sites (sites > 1): each patient belongs to one site; a site has its own colour cast,
    exposure, internal resolution (50-100%, rendered down then up to the output size), JPEG
    quality (70-95) and extra sensor noise.
"""


def _model_text(difficulty: str) -> str:
    if difficulty == "easy":
        return _MODEL_EASY + _SITES_NOTE
    lv = _LEVELS[difficulty]
    return _MODEL_LEVEL.format(
        s_lo=lv.strength[0],
        s_span=round(lv.strength[1] - lv.strength[0], 3),
        s_a=lv.strength[2],
        s_b=lv.strength[3],
        d_med=lv.diameter[0],
        d_sig=lv.diameter[1],
        d_lo=lv.diameter_clip[0],
        d_hi=lv.diameter_clip[1],
        multi=lv.multifocal,
        elong=lv.elongation,
        tex=lv.texture,
        spot_rate=lv.spot_rate,
        p_lo=lv.spot_strength[0],
        p_span=round(lv.spot_strength[1] - lv.spot_strength[0], 3),
        p_a=lv.spot_strength[2],
        p_b=lv.spot_strength[3],
        p_med=lv.spot_diameter[0],
        meta=lv.metaplasia,
        m_lo=lv.metaplasia_strength[0],
        m_hi=lv.metaplasia_strength[1],
        glare=lv.glare,
        shift=lv.shift,
        rot=lv.rotation,
        scale=lv.scale,
        exp=lv.exposure,
        wb=lv.white_balance,
        gam=lv.gamma,
        blur=lv.blur,
        vig=lv.vignette,
        noise=lv.noise,
        risk=lv.risk_sigma,
    )


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if len(set(labels.tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(labels, scores)), 4)


def _validate_levels(difficulty: object, label_noise: object, sites: object) -> tuple[str, float, int]:
    level = difficulty.strip().lower() if isinstance(difficulty, str) else None
    if level not in DIFFICULTIES:
        raise ValidationError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if not _is_number(label_noise) or not 0.0 <= float(label_noise) < 0.5:
        raise ValidationError(f"label_noise must be a number in [0, 0.5), got {label_noise!r}")
    if not isinstance(sites, int | np.integer) or isinstance(sites, bool) or not 1 <= int(sites) <= MAX_SITES:
        raise ValidationError(f"sites must be an integer between 1 and {MAX_SITES}, got {sites!r}")
    return level, float(label_noise), int(sites)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


_README_FAULTS = """
Planted pair faults (swap_rate={swap_rate}, mismatch_rate={mismatch_rate})
  - {swapped} case(s) SWAPPED: their pre.{fmt} holds the post-stain photograph and post.{fmt} the
    pre-stain one.
  - {mismatched} case(s) MISMATCHED: their post.{fmt} is a byte copy of the post-stain photograph of
    an unfaulted case of ANOTHER patient (not the same cervix as their pre.{fmt}).
  - ground_truth.csv column pair_fault says which (swapped, mismatched, or empty). Labels, lesion and
    evidence columns describe the case as rendered, before the fault.
"""


def _validate_faults(swap_rate: object, mismatch_rate: object, n: int) -> tuple[float, float, int, int]:
    """(swap_rate, mismatch_rate, swapped count, mismatched count); ValidationError on bad rates."""
    rates = []
    for name, value in (("swap_rate", swap_rate), ("mismatch_rate", mismatch_rate)):
        if not _is_number(value) or not 0.0 <= float(value) <= MAX_FAULT_RATE:
            raise ValidationError(f"{name} must be a number between 0 and {MAX_FAULT_RATE}, got {value!r}")
        rates.append(float(value))
    k_swap, k_mismatch = round(n * rates[0]), round(n * rates[1])
    if k_swap + k_mismatch > n - 1 and k_mismatch:
        raise ValidationError(
            f"swap_rate + mismatch_rate plant {k_swap + k_mismatch} faults in {n} cases; a mismatched post "
            "is taken from an unfaulted case, so leave at least one case unfaulted"
        )
    return rates[0], rates[1], k_swap, k_mismatch


def _plant_faults(
    k_swap: int, k_mismatch: int, patients: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], dict[int, int]]:
    """Which cases are swapped / mismatched (exact counts) and each mismatched case's donor case.

    Donors are unfaulted cases of another patient, distinct while there are enough of them.
    """
    n = len(patients)
    faults = [""] * n
    order = rng.permutation(n)
    for i in order[:k_swap]:
        faults[int(i)] = "swapped"
    for i in order[k_swap : k_swap + k_mismatch]:
        faults[int(i)] = "mismatched"
    clean = np.sort(order[k_swap + k_mismatch :])
    donors: dict[int, int] = {}
    used: set[int] = set()
    for i in sorted(int(i) for i in order[k_swap : k_swap + k_mismatch]):
        donor = None
        for _ in range(64):  # a random draw almost always fits; the scan below covers the rare rest
            j = int(clean[rng.integers(len(clean))])
            if patients[j] != patients[i] and j not in used:
                donor = j
                break
        if donor is None:
            others = clean[patients[clean] != patients[i]]
            if not len(others):
                raise ValidationError(
                    "mismatch_rate needs unfaulted cases of at least one other patient to take a post "
                    "image from; lower the rates or generate more cases"
                )
            fresh = others[~np.isin(others, sorted(used))]
            donor = int(rng.choice(fresh if len(fresh) else others))
        used.add(donor)
        donors[i] = donor
    return faults, donors


def _apply_faults(case_dirs: list[Path], fmt: str, faults: list[str], donors: dict[int, int]) -> None:
    """Rewrite the image files of the faulted cases (donors are unfaulted, so read them untouched)."""
    for i, donor in sorted(donors.items()):
        _write_atomic(case_dirs[i] / f"post.{fmt}", (case_dirs[donor] / f"post.{fmt}").read_bytes())
    for i, fault in enumerate(faults):
        if fault == "swapped":
            pre, post = (
                (case_dirs[i] / f"pre.{fmt}").read_bytes(),
                (case_dirs[i] / f"post.{fmt}").read_bytes(),
            )
            _write_atomic(case_dirs[i] / f"pre.{fmt}", post)
            _write_atomic(case_dirs[i] / f"post.{fmt}", pre)


def generate_dataset(
    out: Path,
    n: int = 400,
    positive_rate: float = 0.1,
    seed: int = 0,
    size: tuple[int, int] = (128, 128),
    unlabelled_fraction: float = 0.0,
    cases_per_patient: float = 1.3,
    image_format: str = "jpg",
    difficulty: str = "realistic",
    label_noise: float = 0.0,
    sites: int = 1,
    swap_rate: float = 0.0,
    mismatch_rate: float = 0.0,
) -> SynthSummary:
    """Write a synthetic pair data set to ``out`` (see the module docstring) and return its summary.

    ``size`` is ``(width, height)``. Exactly ``round(n * positive_rate)`` positives (at least one when the
    rate is above zero). ``difficulty`` is ``"easy"`` (generator version 1 pixels), ``"realistic"`` or
    ``"hard"``; ``label_noise`` flips exactly ``round(label_noise * labelled)`` recorded labels in the
    manifest; ``sites`` (1-16) draws that many site/device profiles; ``swap_rate`` / ``mismatch_rate``
    plant exactly ``round(n * rate)`` swapped / mismatched pairs (column ``pair_fault``). Reuses a complete
    earlier output of the same parameters instead of regenerating; refuses a non-empty folder that is not
    such an output.
    """
    n, positive_rate, seed, size, unlabelled_fraction, cases_per_patient, fmt = _validate(
        n, positive_rate, seed, size, unlabelled_fraction, cases_per_patient, image_format
    )
    difficulty, label_noise, sites = _validate_levels(difficulty, label_noise, sites)
    swap_rate, mismatch_rate, k_swap, k_mismatch = _validate_faults(swap_rate, mismatch_rate, n)
    faulty = bool(k_swap or k_mismatch or swap_rate or mismatch_rate)
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
        "difficulty": difficulty,
        "label_noise": label_noise,
        "sites": sites,
    }
    if faulty:  # only then, so a fault-free synth.json stays byte-identical to earlier outputs
        params.update(swap_rate=swap_rate, mismatch_rate=mismatch_rate)
    compared = {**_FAULT_DEFAULTS, **params}
    if root.exists() and not root.is_dir():
        raise ValidationError(f"output path {root} exists and is not a folder; choose an empty folder")
    if root.is_dir() and any(root.iterdir()):
        params_file = root / PARAMS_NAME
        if params_file.is_file():
            try:
                previous = json.loads(params_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                previous = None
            if isinstance(previous, dict):
                # Version 1 outputs predate the difficulty levels: they are what "easy" draws today.
                previous = {**_V1_DEFAULTS, **_FAULT_DEFAULTS, **previous}
            same = (
                isinstance(previous, dict)
                and previous.get("generator") == params["generator"]
                and {k: previous.get(k) for k in compared if k != "version"}
                == {k: v for k, v in compared.items() if k != "version"}
            )
            if not same:
                raise ValidationError(
                    f"{root} already holds synthetic data made with different parameters "
                    f"({_describe_difference(previous, compared)}); choose an empty folder"
                )
            if previous.get("version") == GENERATOR_VERSION and _complete(root, n, fmt):
                summary = _summary_from_files(root, n, previous)
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
    # The first three streams are those of generator version 1 (easy keeps its pixels); the others are new.
    # Spawning a sixth child leaves the first five as they were (children are numbered in order).
    design_seq, patient_seq, case_seq, noise_seq, site_seq, fault_seq = seq.spawn(6)
    level = _LEVELS.get(difficulty)
    design_rng = np.random.default_rng(design_seq)
    if level is None:
        labels, patients, unlabelled = _design(
            n, positive_rate, unlabelled_fraction, cases_per_patient, design_rng
        )
    else:
        labels, patients, unlabelled = _design_clustered(
            n, positive_rate, unlabelled_fraction, cases_per_patient, level.risk_sigma, design_rng
        )
    recorded = _flip_labels(labels, unlabelled, label_noise, np.random.default_rng(noise_seq))
    n_patients = int(patients.max()) + 1
    patient_models = [_make_patient(np.random.default_rng(s)) for s in patient_seq.spawn(n_patients)]
    case_ids, patient_ids = _case_ids(n), _patient_ids(n_patients)
    site_rng = np.random.default_rng(site_seq)
    if sites == 1:
        site_models = [_STANDARD_SITE]
        patient_site = np.zeros(n_patients, dtype=np.int64)
    else:
        site_models = [_make_site(site_rng) for _ in range(sites)]
        patient_site = np.arange(n_patients) % sites
        site_rng.shuffle(patient_site)

    faults, donors = [""] * n, {}
    if faulty:
        faults, donors = _plant_faults(k_swap, k_mismatch, patients, np.random.default_rng(fault_seq))

    width, height = size
    manifest_rows, truth_rows, evidence, case_dirs = [], [], [], []
    for i, (case_id, case_rng_seq) in enumerate(zip(case_ids, case_seq.spawn(n), strict=True)):
        rng = np.random.default_rng(case_rng_seq)
        patient = patient_models[patients[i]]
        site_index = int(patient_site[patients[i]])
        site = site_models[site_index]
        if level is None:
            pre, post, info = _render_case(width, height, patient, bool(labels[i]), rng)
            pre, post = _apply_site(pre, site, rng), _apply_site(post, site, rng)
        else:
            pre, post, info = _render_case2(width, height, patient, bool(labels[i]), level, site, rng)
        case_dir = root / CASES_DIR / case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        case_dirs.append(case_dir)
        _write_atomic(case_dir / f"pre.{fmt}", _encode(pre, fmt, site.quality))
        _write_atomic(case_dir / f"post.{fmt}", _encode(post, fmt, site.quality))
        label = "" if unlabelled[i] else str(int(recorded[i]))
        pid = patient_ids[patients[i]]
        rel = f"{CASES_DIR}/{case_id}"
        manifest_rows.append([case_id, f"{rel}/pre.{fmt}", f"{rel}/post.{fmt}", label, pid])
        evidence.append(round(info["evidence"], 4))
        truth_rows.append(
            [
                case_id,
                str(int(labels[i])),
                label,
                pid,
                f"site-{site_index + 1}",
                _fmt(info["lesion_strength"]),
                _fmt(info["lesion_area"]),
                _fmt(info["lookalike_strength"]),
                _fmt(info["evidence"]),
            ]
            + ([faults[i]] if faulty else [])
        )
    if faulty:
        _apply_faults(case_dirs, fmt, faults, donors)

    _write_atomic(
        root / MANIFEST_NAME,
        _csv_bytes(["case_id", "pre_path", "post_path", "label", "patient_id"], manifest_rows),
    )
    truth_header = list(TRUTH_COLUMNS) + ([PAIR_FAULT_COLUMN] if faulty else [])
    _write_atomic(root / GROUND_TRUTH_NAME, _csv_bytes(truth_header, truth_rows))
    scores = np.array(evidence)
    keep = ~unlabelled
    reference = {
        "truth": _auroc(scores, labels),
        "recorded": _auroc(scores[keep], recorded[keep]),
    }
    positives, labelled = int(labels.sum()), int(keep.sum())
    flipped = int((recorded[keep] != labels[keep]).sum())
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
        difficulty=difficulty,
        noise=label_noise,
        sites=sites,
        pos=positives,
        labelled=labelled,
        flipped=flipped,
        patients=n_patients,
        reference=(
            f"  against the true labels: {_na(reference['truth'])}; "
            f"against the recorded labels: {_na(reference['recorded'])}"
        ),
        model=_model_text(difficulty),
    )
    swapped, mismatched = faults.count("swapped"), faults.count("mismatched")
    if faulty:
        readme += _README_FAULTS.format(
            swap_rate=swap_rate,
            mismatch_rate=mismatch_rate,
            swapped=swapped,
            mismatched=mismatched,
            fmt=fmt,
        )
    _write_atomic(root / README_NAME, readme.encode("utf-8"))
    record = {**params, "reference_auroc": reference}
    _write_atomic(root / PARAMS_NAME, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return SynthSummary(
        root=root,
        manifest=root / MANIFEST_NAME,
        ground_truth=root / GROUND_TRUTH_NAME,
        n=n,
        positives=positives,
        labelled=labelled,
        patients=n_patients,
        difficulty=difficulty,
        label_noise=label_noise,
        sites=sites,
        reference_auroc=reference["truth"],
        reference_auroc_recorded=reference["recorded"],
        swapped=swapped,
        mismatched=mismatched,
    )


def _na(value: float | None) -> str:
    return "n/a (one class only)" if value is None else f"{value:.3f}"


def _describe_difference(previous: object, params: dict) -> str:
    if not isinstance(previous, dict):
        return f"unreadable {PARAMS_NAME}"
    diffs = [
        f"{key}={previous.get(key)!r} there, {value!r} asked"
        for key, value in params.items()
        if key != "version" and previous.get(key) != value
    ]
    return "; ".join(diffs[:4]) or "different generator"
