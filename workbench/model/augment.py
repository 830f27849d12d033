"""Pair augmentation with albumentations: one random draw applied to both images of a pair.

The pre- and post-stain photographs show the same cervix, so the pair gets the SAME geometric
transform (flip, rotation, shift/scale) and the same brightness/contrast change. This is done with
``additional_targets={"post": "image"}``: albumentations samples the parameters once per call and
applies them to "image" (pre) and "post" alike.

With ``shot_jitter`` each image then gets its OWN small draw as well: a slight shift/rotation/scale and
an exposure, white-balance and gamma change, as between two real shots of one visit. The model must then
find what the stain changed despite the misalignment and drift, instead of learning from pixel-exact
differences that a real pair never has.

Two policies (``TrainConfig.augment_policy``): "affine" (above: the card's flip, rotation, shift/scale
and brightness/contrast) and "dihedral": only the 8 flips and quarter turns of the square (flips alone
for a non-square input), which move pixels without resampling or changing a value. A faint post-only
whitening is a difference of a few levels between two shots; interpolation blurs it, and a shared
brightness shift pushes the brightest acetowhite tissue into the saturated range that the whiteness
channels treat as glare. Measured on hard synthetic data with a 1-block change-map variant
(docs/benchmarks.md, "Subtle lesions"): in a plain Keras loop "affine" did not learn at all while
"dihedral" came level with the baseline; in the product's training neither beat it (0.75 vs 0.68,
one seed each), so both presets keep "affine".

Reproducible: every call takes an explicit integer seed (pipeline.py derives one per example from
the training seed), and each thread keeps its own Compose object, so parallel tf.data calls do not
share random state.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from workbench.errors import ValidationError

_local = threading.local()


def pair_transform(seed: int | None = None) -> Any:
    """The training augmentation (albumentations Compose) for a pair, seeded.

    Horizontal flip; Affine with rotation +-15 degrees, shift +-6 % and scale 0.9-1.1 (the card's
    rotation and shift/scale/rotate); brightness/contrast +-0.15. Borders are reflected, which
    suits photographs better than black corners.
    """
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                rotate=(-15, 15),
                translate_percent={"x": (-0.06, 0.06), "y": (-0.06, 0.06)},
                scale=(0.9, 1.1),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.8,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.8),
        ],
        additional_targets={"post": "image"},
        seed=seed,
    )


AUGMENT_POLICIES: tuple[str, ...] = ("affine", "dihedral")


def dihedral_transform(seed: int | None = None, square: bool = True) -> Any:
    """The "dihedral" pair augmentation (albumentations Compose): one of the 8 symmetries of the square
    (``D4``), or for a non-square input a horizontal and a vertical flip, each with p=0.5. Lossless."""
    import albumentations as A

    ops = [A.D4(p=1.0)] if square else [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    return A.Compose(ops, additional_targets={"post": "image"}, seed=seed)


def shot_transform(seed: int | None = None) -> Any:
    """Per-shot jitter (albumentations Compose) applied to one image of a pair on its own.

    Affine: shift +-2.5 %, rotation +-3 degrees, scale 0.97-1.03; per-channel gains (RGB shift of
    +-12 levels), brightness/contrast +-0.1 and gamma 0.9-1.1.
    """
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.Affine(
                rotate=(-3, 3),
                translate_percent={"x": (-0.025, 0.025), "y": (-0.025, 0.025)},
                scale=(0.97, 1.03),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.8,
            ),
            A.RGBShift(r_shift_limit=12, g_shift_limit=12, b_shift_limit=12, p=0.7),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.7),
            A.RandomGamma(gamma_limit=(90, 110), p=0.5),
        ],
        seed=seed,
    )


def _pair_compose(policy: str, square: bool) -> Any:
    """This thread's Compose for ``policy`` (built once per thread: albumentations holds random state)."""
    if policy not in AUGMENT_POLICIES:
        raise ValidationError(f"augment_policy: must be one of {', '.join(AUGMENT_POLICIES)}; got {policy!r}")
    cache = getattr(_local, "composes", None)
    if cache is None:
        cache = _local.composes = {}
    key = (policy, square)
    if key not in cache:
        cache[key] = pair_transform(0) if policy == "affine" else dihedral_transform(0, square)
    return cache[key]


def augment_pair(
    pre: np.ndarray, post: np.ndarray, seed: int, shot_jitter: bool = False, policy: str = "affine"
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one uint8 (H, W, 3) pair with the draw fixed by ``seed``; both images transformed alike
    (``policy``: "affine" or "dihedral"), then (``shot_jitter``) each image by its own small draw."""
    if pre.shape != post.shape:
        raise ValidationError(f"augment: pre {pre.shape} and post {post.shape} images differ in shape")
    compose = _pair_compose(policy, pre.shape[0] == pre.shape[1])
    compose.set_random_seed(int(seed) % (2**32))
    out = compose(image=np.ascontiguousarray(pre), post=np.ascontiguousarray(post))
    pre_out, post_out = out["image"], out["post"]
    if shot_jitter:
        shot = getattr(_local, "shot", None)
        if shot is None:
            shot = _local.shot = shot_transform(0)
        jittered = []
        for k, image in enumerate((pre_out, post_out), start=1):
            shot.set_random_seed((int(seed) * 2 + k) % (2**32))
            jittered.append(shot(image=np.ascontiguousarray(image))["image"])
        pre_out, post_out = jittered
    return pre_out, post_out
