"""The non-learned baseline's image features: pre/post whitening change of one pair of RGB arrays.

Pure (arrays in, vector out; numpy and scipy only), so the pair check (:mod:`workbench.data.pair_check`)
shares the tissue, glare and whiteness masks. Steps 2-6 of :mod:`workbench.evaluation.baseline`: a tissue
mask minus glare, per-channel median normalisation, whiteness, post whiteness minus max-filtered pre
whiteness, and summary features over the tissue (``FEATURE_NAMES``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from workbench.errors import ValidationError

WORK_SIZE = 192


_CHANGE_LEVELS = (0.15, 0.3, 0.6)
_REGION_LEVELS = (0.15, 0.3)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"log_frac_change_gt_{t}" for t in _CHANGE_LEVELS),
    "top1pct_mean_change",
    "top5pct_mean_change",
    *(f"log_largest_region_gt_{t}" for t in _REGION_LEVELS),
    "mean_change",
)
_EPS = 1e-4


def _glare(img: np.ndarray, k: int) -> np.ndarray:
    """Near-saturated white pixels (all channels >= 0.94), dilated by ``k`` px to cover the halo."""
    sat = np.minimum(np.minimum(img[..., 0], img[..., 1]), img[..., 2]) >= 0.94
    return ndimage.binary_dilation(sat, iterations=k) if sat.any() else sat


def _tissue(img: np.ndarray, central: np.ndarray) -> np.ndarray:
    """Bright (relative to the central region) and reddish pixels."""
    lum = (img[..., 0] + img[..., 1] + img[..., 2]) / 3.0
    ref = float(np.percentile(lum[central], 90)) if central.any() else float(lum.max())
    red = img[..., 0] >= 0.75 * np.maximum(img[..., 1], img[..., 2])
    return (lum > 0.35 * max(ref, 1e-3)) & red


def _whiteness(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log brightness + log paleness, relative to the tissue's per-channel median (drift cancels)."""
    med = np.median(img[mask], axis=0) if mask.sum() >= 16 else np.median(img.reshape(-1, 3), axis=0)
    norm = img / np.maximum(med, 0.02)[None, None, :]
    norm = np.maximum(norm, 0.02)
    bright = np.log((norm[..., 0] + norm[..., 1] + norm[..., 2]) / 3.0)
    pale = np.log((norm[..., 1] + norm[..., 2]) / (2.0 * norm[..., 0]))
    return bright + pale


#: Side of the max filter over pre whiteness, as a fraction of the image side: wide enough for the
#: misalignment of unaligned shots (the baseline's setting; bench/bench_alignment.py varies it).
TOLERANCE = 0.045


def features_from_arrays(pre: np.ndarray, post: np.ndarray, tolerance: float = TOLERANCE) -> np.ndarray:
    """The feature vector (``FEATURE_NAMES``) of a pair of float RGB arrays in [0, 1] of one square size."""
    if pre.shape != post.shape or pre.ndim != 3 or pre.shape[2] != 3:
        raise ValidationError(
            f"pre and post must be RGB arrays of one shape, got {pre.shape} and {post.shape}"
        )
    h, w = pre.shape[:2]
    side = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    central = r < 0.47 * side
    core = r < 0.3 * side
    dil = max(1, round(side / 96))
    mask = central & _tissue(pre, core) & _tissue(post, core) & ~_glare(pre, dil) & ~_glare(post, dil)
    if mask.sum() < 0.01 * h * w:  # nothing looks like tissue: fall back to the central disk
        mask = central & ~_glare(pre, dil) & ~_glare(post, dil)
    if mask.sum() < 16:
        mask = central
    w_pre = _whiteness(pre, mask)
    w_post = ndimage.uniform_filter(_whiteness(post, mask), size=3, mode="nearest")
    # at least 5 px at the baseline's tolerance (as it always was), 3 px for an aligned pair's smaller one
    k = max(5 if tolerance >= TOLERANCE else 3, int(round(tolerance * side)) | 1)
    change = w_post - ndimage.maximum_filter(w_pre, size=k, mode="nearest")
    values = change[mask]
    n = values.size
    feats: list[float] = [math.log(float((values > t).mean()) + _EPS) for t in _CHANGE_LEVELS]
    ordered = np.sort(values)[::-1]
    feats.append(float(ordered[: max(1, n // 100)].mean()))
    feats.append(float(ordered[: max(1, n // 20)].mean()))
    for t in _REGION_LEVELS:
        labels, count = ndimage.label((change > t) & mask)
        largest = int(np.bincount(labels.ravel())[1:].max()) if count else 0
        feats.append(math.log(largest / n + _EPS))
    feats.append(float(values.mean()))
    out = np.asarray(feats, dtype=np.float64)
    return np.where(np.isfinite(out), out, 0.0)
