"""Pair sanity check: is each case's pre/post pair one cervix, photographed in the right order?

Why: a data pipeline swaps pre and post, or pairs one patient's pre with another patient's post, and a
model trained on such pairs learns noise. Nothing else checks it: the importer sees two valid images.
Each case gets a score, a reason and a status (``cases.pair_status``): NULL (not checked yet), ``ok``,
``suspect`` (kept out of training and queued as a ``pair-check`` item for an expert), and the expert's
``confirmed`` (a sound pair after all: back into training) or ``rejected``.

Per pair (both images decoded with :func:`workbench.data.images.load_rgb` at ``WORK_SIZE`` px; numpy,
scipy and PIL only):

1. **Structure thumbnails.** Each shot becomes a ``THUMB_SIZE`` x ``THUMB_SIZE`` band-pass image: the
   green channel (vessels contrast most there), in log (exposure becomes an offset), small bright
   specks (specular highlights, which differ between shots) replaced by the local median, difference of
   Gaussians (``BAND_SIGMAS`` px: vessels, os, texture stay; illumination, vignetting and dome shading
   go), clipped at 3 robust SDs. The data set's mean thumbnail (what every cervix shares: a dark os near
   the centre, the rim) is subtracted, so what is left is specific to this cervix.
2. **Similarity and registration.** Normalised cross-correlation of the central ``WINDOW_FRACTION`` of
   the pre thumbnail with the post thumbnail, maximised over shifts up to ``SHIFT_FRACTION`` of the side,
   rotations ``ANGLES`` and scales ``SCALES``: the misalignment real pairs have between shots. The best
   correlation is the pair's *structural similarity*; its warp registers post onto pre for step 3.
3. **Change.** Antisymmetric pre-to-post statistics (post minus pre: exchanging the shots flips their
   sign exactly): the shift of the tissue's colour (log blue/red and log green/red of the median tissue
   colour, median saturation; exposure cancels) and the whitening gained by the registered post over
   pre against the whitening gained the other way (means of the top 1/3/10% and log fractions above two
   levels, after a 3 and a 5 px max filter that absorbs what the registration leaves). Whiteness is the
   baseline's (``evaluation.baseline``: each shot relative to its own tissue median, so exposure, white
   balance and a uniform tint cancel); the tissue and glare masks are the baseline's too.

Across the data set (every threshold is relative to the data set itself, so the check transfers to data
from another camera or generator; the two constants below are likelihood-ratio and robust-z levels, not
image levels):

* **Not the same cervix** (``mismatched``). The *matched* distribution is every pair's similarity (Fisher
  z, median and MAD, robust to the few faulty pairs); the *null* distribution is the similarity of up to
  ``NULL_PAIRS`` pre/post combinations of *different* patients drawn from the same data set (what "not
  the same cervix" looks like here). A pair is flagged when the Gaussian log-likelihood ratio
  null : matched is at least ``FAULT_LLR`` AND the robust z of its similarity against the data set's
  pairs is at most ``MISMATCH_MAX_Z``.
* **Probably swapped** (``swapped``). Exchanging the shots negates the change vector, so the data set
  provides its own counter-examples: a logistic regression without intercept learns to tell each pair's
  change ``d`` from its mirror ``-d`` (features scaled by their robust spread), cross-fitted in ``FOLDS``
  folds so that no pair judges itself. Its log-odds ``t`` for a pair's own change ranks pairs from
  "typical" to "typical only when mirrored", but is shrunk (its training labels include the data set's
  own swapped pairs), so it is recalibrated in one dimension the same way as the similarity: sound pairs
  ``t ~ N(m, s)`` (median and MAD of ``t`` over the data set), swapped pairs the mirror ``N(-m, s)``,
  log-likelihood ratio swapped : sound ``= -2 t m / s^2``; a pair is flagged when it is at least
  ``FAULT_LLR``. Which way is "right" is learned from the data (new whitening in post, the stain's
  colour shift, whatever is consistent); a data set without a consistent pre-to-post change has
  ``m`` near 0 (ratios near 0) and gets no swap flags.

``FAULT_LLR = 1.5``: a fault must be at least e^1.5 (about 4.5) times as likely as a sound pair.
``MISMATCH_MAX_Z = -3``: and a mismatch must lie outside the bulk of this data set's own pairs. The score
stored per case is the log-likelihood ratio fault : sound of the fault named (``mismatched`` when both
pass), for a sound pair the larger of the two (negative: the pair looks sound). On the synthetic data
about 1-2% of sound pairs are flagged (docs/benchmarks.md).

Cases are checked in sets: the cases to check plus up to ``REFERENCE_SIZE`` already checked ``ok`` or
``confirmed`` cases as reference, at least ``MIN_PAIRS`` pairs of at least ``MIN_PATIENTS`` patients in
all (fewer: the cases stay unchecked, with a note, and are checked again at the next import or round).
Expert decisions (``confirmed``, ``rejected``) are never overwritten. Measured recall and precision on
planted faults: ``bench/bench_pair_check.py`` and docs/benchmarks.md.

Limits: a mismatched pair of two near-identical cervices (e.g. the same patient's other visit) or a
swap in a data set whose pairs have no consistent pre-to-post change is not detected; a sound pair whose
post differs a lot from its pre (a very large lesion, heavy glare, a rotation beyond about 8 degrees or a
rescaling beyond about 10%) can be flagged as not the same cervix. That is what the expert's
``confirmed`` is for.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage
from sqlalchemy import Engine, or_, select, update

from workbench.data.images import load_rgb
from workbench.db.engine import session_scope
from workbench.db.models import PAIR_CHECK_KIND, PAIR_STATUSES, Case
from workbench.errors import NotFoundError, ValidationError
from workbench.evaluation.baseline import _glare, _tissue, _whiteness

__all__ = [
    "EXCLUDED_FROM_TRAINING",
    "FAULT_LLR",
    "FAULTS",
    "MISMATCH_MAX_Z",
    "PAIR_CHECK_KIND",
    "FlaggedPair",
    "PairCheckResult",
    "PairCheckSummary",
    "PairVerdict",
    "check_pair_files",
    "check_pairs",
    "check_unchecked_safely",
    "flagged_pairs",
    "pair_status_counts",
]

PAIR_CHECK_VERSION = 1
#: Statuses whose pairs are kept out of training (and out of the reference set).
EXCLUDED_FROM_TRAINING = ("suspect", "rejected")
#: Statuses a check may (re)write; the others are an expert's decision and are never overwritten.
CHECK_STATUSES = ("ok", "suspect")
FAULTS = ("swapped", "mismatched")

WORK_SIZE = 96
THUMB_SIZE = 64
BAND_SIGMAS = (1.0, 3.0)
ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)
SCALES = (0.92, 0.96, 1.0, 1.04, 1.08)
SHIFT_FRACTION = 0.08
WINDOW_FRACTION = 0.62

FAULT_LLR = 1.5
MISMATCH_MAX_Z = -3.0
MIN_PAIRS = 30
MIN_PATIENTS = 5
REFERENCE_SIZE = 500
#: Cases whose thumbnails make the data set's mean thumbnail and the different-patient null pairs.
SAMPLE_SIZE = 300
NULL_PAIRS = 300
FOLDS = 5

_FISHER_CLIP = 0.999
_LLR_CLIP = 50.0
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


# ------------------------------------------------------------------------------------------------
# One pair: thumbnails, registration, change features (pure)


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


# ------------------------------------------------------------------------------------------------
# A set of pairs: data-relative verdicts (pure: files in, verdicts out)


@dataclass(frozen=True)
class PairVerdict:
    """The check's answer for one pair: ``status`` ok/suspect, ``fault`` ("" when ok), score and reason."""

    status: str
    fault: str
    score: float
    reason: str
    similarity: float
    similarity_z: float
    mismatch_llr: float
    swap_llr: float


@dataclass
class PairCheckResult:
    """Verdicts by index of the pairs given (targets only), unreadable pairs and the data set's figures."""

    verdicts: dict[int, PairVerdict] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def _robust(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based SD (falls back to the SD, then to 1, when the MAD is 0)."""
    med = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - med)))
    if spread <= 1e-9:
        spread = float(np.std(values)) or 1.0
    return med, spread


def _fisher(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -_FISHER_CLIP, _FISHER_CLIP))


def _gauss_loglik(z: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return -0.5 * ((z - mean) / sd) ** 2 - math.log(sd)


def _mirror_llr(changes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-fitted log-likelihood ratio mirrored : as observed of each change vector, with the scales and
    the mean weights of the no-intercept logistic regression (for the reasons)."""
    from sklearn.linear_model import LogisticRegression

    scale = np.array([_robust(col)[1] for col in changes.T])
    z = np.clip(changes / scale, -10.0, 10.0)
    n = len(z)
    out = np.zeros(n)
    weights = []
    order = np.random.default_rng(seed).permutation(n)
    folds = min(FOLDS, n)
    for f in range(folds):
        test = np.sort(order[f::folds])
        train = np.setdiff1d(np.arange(n), test)
        x = np.concatenate([z[train], -z[train]])
        y = np.concatenate([np.zeros(len(train)), np.ones(len(train))])
        model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000).fit(x, y)
        out[test] = model.decision_function(z[test])
        weights.append(model.coef_[0])
    return np.clip(out, -_LLR_CLIP, _LLR_CLIP), scale, np.mean(weights, axis=0)


def _map(fn: Callable[[int], Any], items: Sequence[int], workers: int) -> list[Any]:
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def check_pair_files(
    pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    patients: Sequence[str],
    *,
    targets: Sequence[int] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PairCheckResult:
    """Check the pairs at ``targets`` (default: all) against the whole set (see the module docstring).

    ``pairs`` are (pre path, post path), ``patients`` their patient ids (the null pairs combine different
    patients). A pair that cannot be decoded gets an entry in ``errors`` and no verdict. Raises
    ValidationError when fewer than ``MIN_PAIRS`` readable pairs or ``MIN_PATIENTS`` patients remain.
    """
    n = len(pairs)
    if len(patients) != n:
        raise ValidationError(f"got {n} pairs but {len(patients)} patient ids")
    target_set = sorted(set(range(n)) if targets is None else {int(t) for t in targets})
    if target_set and not 0 <= target_set[0] <= target_set[-1] < n:
        raise ValidationError(f"target indices must be in 0..{n - 1}")
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    rng = np.random.default_rng(seed)
    result = PairCheckResult()
    _enough(n, len(set(patients)))

    # Pass 1: band thumbnails of a sample: the data set's mean thumbnail and the null pairs come from it.
    sample = np.sort(rng.choice(n, size=min(n, SAMPLE_SIZE), replace=False))

    def bands(i: int) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
        try:
            return i, band_image(_rgb8(pairs[i][0])), band_image(_rgb8(pairs[i][1])), None
        except ValidationError as exc:
            return i, None, None, str(exc)

    sample_bands: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, pre_b, post_b, err in _map(bands, sample.tolist(), workers):
        if err is not None:
            result.errors[i] = err
        else:
            sample_bands[i] = (pre_b, post_b)
    if not sample_bands:
        raise ValidationError("no pair of the sample could be read")
    mean_band = np.mean([b for pair in sample_bands.values() for b in pair], axis=0).astype(np.float32)

    # Pass 2: every readable pair: similarity, registration and change.
    todo = [i for i in range(n) if i not in result.errors]
    done = {"n": 0}

    def analyse(i: int) -> tuple[int, Registration | None, np.ndarray | None, str | None]:
        try:
            pre8, post8 = _rgb8(pairs[i][0]), _rgb8(pairs[i][1])
            reg = register(band_image(pre8) - mean_band, band_image(post8) - mean_band)
            vec = change_features(pre8, post8, reg)
        except ValidationError as exc:
            return i, None, None, str(exc)
        finally:
            done["n"] += 1
            if progress:
                progress(done["n"], len(todo))
        return i, reg, vec, None

    regs: dict[int, Registration] = {}
    vecs: dict[int, np.ndarray] = {}
    for i, reg, vec, err in _map(analyse, todo, workers):
        if err is not None:
            result.errors[i] = err
        else:
            regs[i], vecs[i] = reg, vec
    good = sorted(regs)
    _enough(len(good), len({patients[i] for i in good}))

    # The null: pre of one patient against post of another, from the sample.
    usable = [i for i in sample.tolist() if i in sample_bands]
    null_pairs: list[tuple[int, int]] = []
    n_null = min(NULL_PAIRS, 3 * len(usable))
    for k in range(n_null * 3):
        if len(null_pairs) >= n_null:
            break
        i = usable[k % len(usable)]
        j = usable[int(rng.integers(len(usable)))]
        if patients[i] != patients[j]:
            null_pairs.append((i, j))
    if len(null_pairs) < 20:
        raise ValidationError(
            "too few pairs of different patients to learn what a mismatched pair looks like"
        )

    def null_sim(p: tuple[int, int]) -> float:
        return register(sample_bands[p[0]][0] - mean_band, sample_bands[p[1]][1] - mean_band).similarity

    null = _fisher(np.asarray(_map(null_sim, null_pairs, workers)))
    sims = np.array([regs[i].similarity for i in good])
    zs = _fisher(sims)
    m_med, m_sd = _robust(zs)
    n_med, n_sd = _robust(null)
    sim_z = (zs - m_med) / m_sd
    mismatch_llr = np.clip(
        _gauss_loglik(zs, n_med, n_sd) - _gauss_loglik(zs, m_med, m_sd), -_LLR_CLIP, _LLR_CLIP
    )
    changes = np.stack([vecs[i] for i in good])
    mirror_score, scale, weights = _mirror_llr(changes, seed)
    t_med, t_sd = _robust(mirror_score)
    # Sound pairs ~ N(t_med, t_sd), swapped ones the mirror; no learned direction (t_med >= 0): no flags.
    swap_llr = np.clip(-2.0 * mirror_score * min(t_med, 0.0) / t_sd**2, -_LLR_CLIP, _LLR_CLIP)
    typical = np.median(changes, axis=0)
    result.stats = {
        "version": PAIR_CHECK_VERSION,
        "pairs": len(good),
        "patients": len({patients[i] for i in good}),
        "similarity_median": float(np.tanh(m_med)),
        "null_similarity_median": float(np.tanh(n_med)),
        "null_pairs": len(null_pairs),
        "separation_z": float((m_med - n_med) / m_sd),
        "swap_separation": float(-t_med / t_sd),
        "unreadable": len(result.errors),
    }
    ctx = _Context(float(np.tanh(m_med)), float(np.tanh(n_med)), typical, scale, weights)
    position = {i: k for k, i in enumerate(good)}
    for i in target_set:
        k = position.get(i)
        if k is None:
            continue
        result.verdicts[i] = _verdict(
            float(sims[k]), float(sim_z[k]), float(mismatch_llr[k]), float(swap_llr[k]), changes[k], ctx
        )
    return result


def _enough(pairs: int, patients: int) -> None:
    if pairs < MIN_PAIRS or patients < MIN_PATIENTS:
        raise ValidationError(
            f"{pairs} readable pair(s) of {patients} patient(s): the check needs at least {MIN_PAIRS} "
            "pairs of "
            f"{MIN_PATIENTS} patients to know what a typical pair of this data set looks like"
        )


@dataclass(frozen=True)
class _Context:
    similarity_median: float
    null_median: float
    typical: np.ndarray
    scale: np.ndarray
    weights: np.ndarray


def _verdict(
    sim: float, z: float, m_llr: float, s_llr: float, change: np.ndarray, ctx: _Context
) -> PairVerdict:
    """Decide one pair and say why, in words a reviewer can check against the images."""
    base = dict(similarity=sim, similarity_z=z, mismatch_llr=m_llr, swap_llr=s_llr)
    if m_llr >= FAULT_LLR and z <= MISMATCH_MAX_Z:
        reason = (
            f"not the same cervix: structural similarity {sim:.2f} is {-z:.1f} robust SDs below this data "
            f"set's median {ctx.similarity_median:.2f} and nearer pairs of different patients (median "
            f"{ctx.null_median:.2f}); log-likelihood ratio {m_llr:.1f} >= {FAULT_LLR}"
        )
        return PairVerdict("suspect", "mismatched", m_llr, reason, **base)
    if s_llr >= FAULT_LLR:
        reason = (
            "probably swapped: the pre-to-post change runs against this data set's "
            f"({_direction(change, ctx)}); log-likelihood ratio {s_llr:.1f} >= {FAULT_LLR}"
        )
        return PairVerdict("suspect", "swapped", s_llr, reason, **base)
    reason = (
        f"ok: structural similarity {sim:.2f} (data set median {ctx.similarity_median:.2f}, robust z "
        f"{z:+.1f}); pre-to-post change consistent with the data set's (swap log-likelihood ratio "
        f"{s_llr:+.1f})"
    )
    return PairVerdict("ok", "", max(m_llr, s_llr), reason, **base)


def _direction(change: np.ndarray, ctx: _Context) -> str:
    """The evidence behind a swap verdict: colour shift and new whitening, against their typical values."""
    contrib = ctx.weights * np.clip(change / ctx.scale, -10, 10)  # > 0 pushes towards "mirrored"
    colour, white = float(contrib[:_N_COLOUR].sum()), float(contrib[_N_COLOUR:].sum())
    parts = []
    top = CHANGE_FEATURES.index("whitening_top3pct_k3")  # top 3% of whiteness gained minus lost
    if white > 0:
        parts.append(
            f"post is less white than pre where they differ: net whitening {change[top]:+.2f}, "
            f"typical {ctx.typical[top]:+.2f}"
        )
    if colour > 0:
        parts.append(
            f"tissue colour moves the other way: log blue/red {change[0]:+.2f}, typical {ctx.typical[0]:+.2f}"
        )
    return "; ".join(parts) or "several weak signs together"


# ------------------------------------------------------------------------------------------------
# The database: which cases to check, writing verdicts, queueing suspects


@dataclass
class PairCheckSummary:
    """What one run of the check did (counts of this run's targets)."""

    checked: int = 0
    ok: int = 0
    suspect: int = 0
    swapped: int = 0
    mismatched: int = 0
    unreadable: int = 0
    queued: int = 0
    reference: int = 0
    seconds: float = 0.0
    note: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        """One line for the CLI, the UI and job messages."""
        if self.note and not self.checked:
            return f"pair check: {self.note}"
        text = f"pair check: {self.checked} pair(s) checked, {self.ok} ok, {self.suspect} suspect"
        if self.suspect:
            text += (
                f" ({self.swapped} probably swapped, {self.mismatched} not the same cervix; kept out of "
                f"training, {self.queued} queued for an expert)"
            )
        if self.unreadable:
            text += f"; {self.unreadable} unreadable, left unchecked"
        return text + (f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


@dataclass(frozen=True)
class _CaseRow:
    id: int
    external_id: str
    patient_id: str
    pre_path: str
    post_path: str
    split: str
    status: str | None


def _rows(engine: Engine) -> list[_CaseRow]:
    with session_scope(engine) as s:
        return [
            _CaseRow(*r)
            for r in s.execute(
                select(
                    Case.id,
                    Case.external_id,
                    Case.patient_id,
                    Case.pre_path,
                    Case.post_path,
                    Case.split,
                    Case.pair_status,
                ).order_by(Case.id)
            )
        ]


def check_pairs(
    engine: Engine,
    case_ids: Sequence[int] | None = None,
    *,
    recheck: bool = False,
    reference_size: int = REFERENCE_SIZE,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PairCheckSummary:
    """Check unchecked cases (or ``case_ids``) and store score, reason and status; queue the suspects.

    ``recheck`` also re-checks cases already ``ok`` or ``suspect`` (all of them when ``case_ids`` is None).
    Expert decisions are never changed. Too few pairs: nothing is written and the summary's note says why.
    """
    if not isinstance(reference_size, int) or isinstance(reference_size, bool) or reference_size < 0:
        raise ValidationError(f"reference_size must be a non-negative integer, got {reference_size!r}")
    started = time.perf_counter()
    rows = _rows(engine)
    by_id = {r.id: r for r in rows}
    if case_ids is not None:
        missing = [int(c) for c in case_ids if int(c) not in by_id]
        if missing:
            raise NotFoundError(f"no case with id {missing[0]}")
        wanted = {int(c) for c in case_ids}
    else:
        wanted = set(by_id)
    checkable = (None, *CHECK_STATUSES) if recheck else (None,)
    targets = [r for r in rows if r.id in wanted and r.status in checkable]
    summary = PairCheckSummary()
    if not targets:
        summary.note = "no unchecked pair"
        return summary
    target_ids = {r.id for r in targets}
    pool = [r for r in rows if r.id not in target_ids and r.status in ("ok", "confirmed")]
    if len(pool) > reference_size:
        pick = np.sort(np.random.default_rng(seed).choice(len(pool), size=reference_size, replace=False))
        pool = [pool[int(i)] for i in pick]
    chosen = targets + pool
    summary.reference = len(pool)
    try:
        result = check_pair_files(
            [(r.pre_path, r.post_path) for r in chosen],
            [r.patient_id for r in chosen],
            targets=range(len(targets)),
            seed=seed,
            workers=workers,
            progress=progress,
        )
    except ValidationError as exc:
        summary.note = f"{exc}; {len(targets)} case(s) left unchecked"
        summary.seconds = round(time.perf_counter() - started, 2)
        return summary
    summary.stats = result.stats
    _store(engine, targets, result, summary)
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _store(
    engine: Engine, targets: list[_CaseRow], result: PairCheckResult, summary: PairCheckSummary
) -> None:
    """Write verdicts (never over an expert's decision) and queue each new suspect, in one transaction."""
    from workbench.active.leases import enqueue_pair_checks

    suspects: list[tuple[int, float, str]] = []
    cleared: list[int] = []
    with session_scope(engine) as s:
        for k, row in enumerate(targets):
            verdict = result.verdicts.get(k)
            if verdict is None:
                summary.unreadable += 1
                s.execute(
                    update(Case)
                    .where(Case.id == row.id, Case.pair_status.is_(None))
                    .values(pair_check_reason=f"unchecked: {result.errors.get(k, 'not analysed')}")
                )
                continue
            written = s.execute(
                update(Case)
                .where(
                    Case.id == row.id, or_(Case.pair_status.is_(None), Case.pair_status.in_(CHECK_STATUSES))
                )
                .values(
                    pair_check_score=round(verdict.score, 4),
                    pair_check_reason=verdict.reason,
                    pair_status=verdict.status,
                )
            ).rowcount
            if not written:  # an expert decided meanwhile
                continue
            summary.checked += 1
            if verdict.status == "suspect":
                summary.suspect += 1
                summary.swapped += verdict.fault == "swapped"
                summary.mismatched += verdict.fault == "mismatched"
                suspects.append((row.id, verdict.score, verdict.reason))
            else:
                summary.ok += 1
                cleared.append(row.id)
        summary.queued = enqueue_pair_checks(s, suspects, cancel=cleared)


def check_unchecked_safely(engine: Engine, when: str) -> dict[str, Any]:
    """Check the unchecked cases for ``when`` ("import" or "round"); never raises: a failure is reported.

    Returns the summary as a dict with ``message``, plus ``error`` when the check failed: the import
    stays committed, the round goes on, and the cases stay unchecked (not excluded from training) until
    the next check.
    """
    if when not in ("import", "round"):
        raise ValidationError(f"when must be 'import' or 'round', got {when!r}")
    try:
        return check_pairs(engine).to_dict()
    except Exception as exc:  # the caller's own work must never be undone or masked by the check
        error = f"{type(exc).__name__}: {exc}"
        if when == "import":
            message = (
                f"pair check failed after the import ({error}); the import is kept and the cases stay "
                "unchecked (checked again before the next round)"
            )
        else:
            message = (
                f"pair check failed before training ({error}); the round goes on and unchecked cases "
                "stay unchecked (checked again at the next import or round)"
            )
        return {"error": error, "message": message}


# ------------------------------------------------------------------------------------------------
# Reading back


@dataclass(frozen=True)
class FlaggedPair:
    """A case the check or an expert flagged, with the check's score and reason."""

    case_id: int
    external_id: str
    patient_id: str
    split: str
    status: str
    score: float | None
    reason: str | None
    pre_path: str
    post_path: str


def _check_statuses(statuses: Sequence[str]) -> tuple[str, ...]:
    out = tuple(statuses)
    bad = [st for st in out if st not in PAIR_STATUSES]
    if bad or not out:
        raise ValidationError(
            f"unknown pair status(es) {bad or '(none given)'} (one of {', '.join(PAIR_STATUSES)})"
        )
    return out


def flagged_pairs(engine: Engine, statuses: Sequence[str] = ("suspect",)) -> list[FlaggedPair]:
    """Cases with a pair status in ``statuses``, most suspect first."""
    wanted = _check_statuses(statuses)
    with session_scope(engine) as s:
        rows = s.scalars(select(Case).where(Case.pair_status.in_(wanted)).order_by(Case.id)).all()
        out = [
            FlaggedPair(
                c.id,
                c.external_id,
                c.patient_id,
                c.split,
                c.pair_status or "",
                c.pair_check_score,
                c.pair_check_reason,
                c.pre_path,
                c.post_path,
            )
            for c in rows
        ]
    return sorted(out, key=lambda f: -(f.score if f.score is not None else -math.inf))


def pair_status_counts(engine: Engine) -> dict[str, int]:
    """Number of cases per pair status, ``unchecked`` for NULL."""
    from sqlalchemy import func

    out = {"unchecked": 0, **{st: 0 for st in PAIR_STATUSES}}
    with session_scope(engine) as s:
        for status, n in s.execute(select(Case.pair_status, func.count()).group_by(Case.pair_status)):
            out[status or "unchecked"] += int(n)
    return out


def case_by_ref(engine: Engine, ref: str | int) -> int:
    """Case id from an id or an external id (``synth-00012``); NotFoundError otherwise."""
    text = str(ref).strip()
    with session_scope(engine) as s:
        found = s.scalar(select(Case.id).where(Case.external_id == text))
        if found is None and text.isdigit():
            found = s.scalar(select(Case.id).where(Case.id == int(text)))
    if found is None:
        raise NotFoundError(f"no case with id or external id {text!r}")
    return int(found)
