"""tf.data input pipeline for image pairs.

Order of work (training)::

    paths -> decode + resize with workbench.data.images.load_rgb (tf.numpy_function, parallel)
          [-> align pre onto post (ModelConfig.align_shots; workbench.data.alignment)]
          -> cache() the uint8 pairs in memory (later epochs do not decode again)
          -> shuffle (seeded) [-> class-balanced sampling] -> augment the pair (numpy_function, same
             draw for both images, seed per example) -> preprocess_fn(backbone) -> batch -> prefetch

Elements are ``({"pre": float32 (H, W, 3), "post": ...}, label float32 (1,))``, batched. Evaluation
skips shuffling and augmentation and keeps the input order.

Inference does not go through tf.data: :func:`decoded_batches` yields the uint8 pixels in order,
decoded by a thread pool a few batches ahead (from a ``DecodedCache`` when given), and the model's
compiled step casts and preprocesses them exactly as ``make_dataset`` does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ValidationError

Pair = tuple[str | Path, str | Path]


def check_pairs(pairs: Sequence[Pair], labels: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """Validate a list of (pre, post) paths (and labels) up front; return them as strings."""
    out: list[tuple[str, str]] = []
    missing = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValidationError(f"pairs[{i}]: expected (pre_path, post_path), got {pair!r}")
        pre, post = (str(p) for p in pair)
        for p in (pre, post):
            if not Path(p).is_file():
                missing.append(p)
        out.append((pre, post))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValidationError(f"image file(s) not found: {', '.join(missing[:3])}{more}")
    if labels is not None:
        if len(labels) != len(out):
            raise ValidationError(f"labels: {len(labels)} labels for {len(out)} pairs")
        bad = [v for v in labels if v not in (0, 1)]
        if bad:
            raise ValidationError(f"labels: must be 0 or 1, got {bad[0]!r}")
    return out


Loader = Callable[[Path, tuple[int, int]], np.ndarray]
"""Decodes one image file to uint8 (H, W, 3) at a size (width, height): ``load_rgb`` or a cache's ``load``."""


def _load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    from workbench.data.images import load_rgb

    return load_rgb(path, size=size)


def load_pair(
    pre: str | Path,
    post: str | Path,
    size: tuple[int, int],
    loader: Loader | None = None,
    align: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair to uint8 (H, W, 3) arrays resized to ``size`` (width, height); with ``align``
    the pre shot is registered onto the post shot (workbench.data.alignment) at that size."""
    load = loader or _load_rgb
    size = (int(size[0]), int(size[1]))
    pre_px, post_px = load(Path(pre), size), load(Path(post), size)
    if align:
        from workbench.data.alignment import align_pre

        pre_px = align_pre(pre_px, post_px)
    return pre_px, post_px


def load_arrays(
    pairs: Sequence[Pair],
    size: tuple[int, int],
    workers: int = 4,
    loader: Loader | None = None,
    align: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode all pairs (threaded) into two uint8 arrays of shape (N, H, W, 3)."""
    pairs = check_pairs(pairs)
    w, h = size
    if not pairs:
        empty = np.zeros((0, h, w, 3), np.uint8)
        return empty, empty.copy()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(lambda p: load_pair(p[0], p[1], size, loader, align), pairs))
    return np.stack([d[0] for d in decoded]), np.stack([d[1] for d in decoded])


def decoded_batches(
    pairs: Sequence[Pair],
    size: tuple[int, int],
    batch_size: int,
    *,
    loader: Loader | None = None,
    workers: int = 4,
    prefetch: int = 2,
    align: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches {"pre", "post"} of uint8 (B, H, W, 3) arrays, in order, for inference.

    Images are decoded by ``workers`` threads (Pillow releases the GIL), ``prefetch`` batches ahead
    of the one being consumed, so the model, not the decoder, sets the pace. Pixels are exactly what
    :func:`make_dataset` casts and preprocesses (same ``load_rgb``, or a cache of its output, and the
    same alignment when ``align``).
    """
    checked = check_pairs(pairs)
    if batch_size < 1 or workers < 1 or prefetch < 0:
        raise ValidationError("batch_size and workers must be >= 1 and prefetch >= 0")
    starts = range(0, len(checked), batch_size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[list[Future]] = deque()

        def submit(start: int) -> None:
            chunk = checked[start : start + batch_size]
            pending.append([pool.submit(load_pair, pre, post, size, loader, align) for pre, post in chunk])

        ahead = iter(starts)
        for start in islice(ahead, prefetch + 1):
            submit(start)
        try:
            while pending:
                decoded = [f.result() for f in pending.popleft()]
                for start in islice(ahead, 1):
                    submit(start)
                yield {
                    "pre": np.stack([d[0] for d in decoded]),
                    "post": np.stack([d[1] for d in decoded]),
                }
        finally:
            for futures in pending:  # a consumer that stops early (cancel) leaves no work queued
                for f in futures:
                    f.cancel()


def _decoded_dataset(pairs: list[tuple[str, str]], size: tuple[int, int], align: bool) -> Any:
    import tensorflow as tf

    w, h = size

    def _decode(pre: bytes, post: bytes) -> tuple[np.ndarray, np.ndarray]:
        return load_pair(pre.decode(), post.decode(), (w, h), align=align)

    def _map(pre: Any, post: Any) -> tuple[Any, Any]:
        a, b = tf.numpy_function(_decode, [pre, post], (tf.uint8, tf.uint8), stateful=False)
        a.set_shape((h, w, 3))
        b.set_shape((h, w, 3))
        return a, b

    paths = tf.data.Dataset.from_tensor_slices(([p for p, _ in pairs], [q for _, q in pairs]))
    return paths.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _augment_map(h: int, w: int, shot_jitter: bool, policy: str) -> Any:
    import tensorflow as tf

    from workbench.model.augment import augment_pair

    def _aug(pre: np.ndarray, post: np.ndarray, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        return augment_pair(pre, post, int(seed), shot_jitter, policy)

    def _map(example: Any, seed: Any) -> tuple[Any, Any]:
        x, y = example
        a, b = tf.numpy_function(_aug, [x[0], x[1], seed], (tf.uint8, tf.uint8), stateful=False)
        a.set_shape((h, w, 3))
        b.set_shape((h, w, 3))
        return (a, b), y

    return _map


def make_dataset(
    pairs: Sequence[Pair],
    labels: Sequence[int] | None = None,
    *,
    input_size: tuple[int, int],
    backbone: str,
    batch_size: int,
    training: bool = False,
    augment: bool = False,
    shot_jitter: bool = False,
    augment_policy: str = "affine",
    balanced: bool = False,
    seed: int = 0,
    cache: bool = True,
    align: bool = False,
) -> Any:
    """Build a batched, prefetched tf.data.Dataset over image pairs.

    ``training`` shuffles (seeded, reshuffled each epoch); ``augment`` applies the pair augmentation
    (training only; ``augment_policy`` "affine" or "dihedral", see model.augment), with ``shot_jitter`` adding a separate small draw per image; ``balanced`` draws each example from the negative or positive class with equal
    probability (``sample_from_datasets``), keeping the epoch length at len(pairs). Without labels
    the elements are just the input dicts (inference). ``cache`` keeps decoded uint8 pairs in memory.
    ``align`` registers each pre shot onto its post shot at decode time (``ModelConfig.align_shots``),
    before the cache, so the augmentation moves both aligned shots alike.
    """
    import tensorflow as tf

    from workbench.model.builder import preprocess_fn

    checked = check_pairs(pairs, labels)
    if not checked:
        raise ValidationError("pairs: no image pairs given")
    if (training or balanced) and labels is None:
        raise ValidationError("labels: training needs labels")
    w, h = input_size
    n = len(checked)
    ds = _decoded_dataset(checked, (w, h), align)
    if labels is not None:
        y = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(y))
    else:
        ds = ds.map(lambda a, b: ((a, b), tf.zeros((1,), tf.float32)))
    if cache:
        ds = ds.cache()

    if training:
        if balanced:
            y_arr = np.asarray(labels)
            if y_arr.min() == y_arr.max():
                raise ValidationError("imbalance: balanced batches need both classes in the training labels")
            by_class = [
                ds.filter(lambda _x, y, c=c: tf.equal(y[0], c)).shuffle(n, seed=seed + 1 + int(c)).repeat()
                for c in (0.0, 1.0)
            ]
            ds = tf.data.Dataset.sample_from_datasets(
                by_class, weights=[0.5, 0.5], seed=seed, rerandomize_each_iteration=True
            ).take(n)
        else:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if augment:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip(ds, seeds).map(
                _augment_map(h, w, shot_jitter, augment_policy), num_parallel_calls=tf.data.AUTOTUNE
            )

    prep = preprocess_fn(backbone)

    def _prep(x: Any, y: Any) -> Any:
        inputs = {"pre": prep(tf.cast(x[0], tf.float32)), "post": prep(tf.cast(x[1], tf.float32))}
        return (inputs, y) if labels is not None else inputs

    ds = ds.map(_prep, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
