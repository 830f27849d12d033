"""Frozen-backbone feature cache and head-only training: what makes active-learning rounds fast.

When the backbones are frozen (pretrained ImageNet weights, or a parent model's trained
backbones), their feature maps do not change between epochs or rounds. They are computed once per
image and stored as ``.npy`` under::

    <root>/<backbone id>/<width>x<height>/<image sha256>.npy

The backbone id is a sha256 of the backbone's weights (so a different parent, or a fine-tuned
backbone, gets a different folder), the size is the model input size, and the image is keyed by the
sha256 of its file bytes. ``build_head_model(cfg)`` is the same fusion head as the full model
(same layer names) on feature-map inputs; after training it on cached features, ``graft_head``
copies its weights into the full model, so the saved artifact is a normal full model. Training on
cached features cannot augment images (the features are of the unaugmented images).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ValidationError, WorkbenchError
from workbench.files import atomic_replace
from workbench.model.config import ModelConfig


def backbone_identity(backbone: Any) -> str:
    """sha256 (hex) over the backbone's weight shapes and values: the same weights give the same id."""
    digest = hashlib.sha256()
    for w in backbone.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float32))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


#: A cached map must hold at most this fraction of its image's values for the cache to pay.
CACHE_MAX_MAP_FRACTION = 0.25


def cache_pays(cfg: ModelConfig) -> bool:
    """Whether caching this configuration's backbone maps is worth it (no TensorFlow needed).

    A ``keras.applications`` backbone costs far more than reading its maps back: always. A ``small_cnn``
    only when its map is much smaller than the image (``CACHE_MAX_MAP_FRACTION``): a 1-block CNN with
    whiteness channels at 192x192 keeps a half-resolution map, about as many values as the image, so
    the cache would cost disk on the order of the decoded images (~400 KB an image, 80 GB for a 100k
    pool) to save two cheap conv layers, while the change path (most of the compute) is in the head and
    runs anyway. Such a warm-started round trains the head on the images instead, with augmentation.
    The map's shape is computed here from the configuration (``builder._small_cnn``'s layout) because
    :func:`workbench.model.builder.feature_shape` builds the backbone, which needs TensorFlow in the
    round's process; a test keeps the two equal.

    Never with ``align_shots``: the cache holds one map per image file, while an aligned pre shot
    depends on its post shot.
    """
    if cfg.align_shots:
        return False
    if cfg.backbone != "small_cnn":
        return True
    w, h = cfg.input_size
    return small_cnn_map_values(cfg) <= CACHE_MAX_MAP_FRACTION * w * h * 3


def small_cnn_map_values(cfg: ModelConfig) -> int:
    """Values in one ``small_cnn`` feature map: (h / 2^blocks) x (w / 2^blocks) x (last block's width, plus
    3 whiteness channels with ``whiteness_prior``)."""
    w, h = cfg.input_size
    pool = 2**cfg.cnn_blocks
    channels = cfg.cnn_width * 2 ** (cfg.cnn_blocks - 1) + (3 if cfg.whiteness_prior else 0)
    return (w // pool) * (h // pool) * channels


class FeatureCacheCancelled(WorkbenchError):
    """``should_cancel()`` returned true while the feature cache was being built."""


class FeatureCache:
    """Backbone feature maps on disk, keyed by (backbone id, input size, image sha256).

    ``should_cancel`` (a job's cancel check) is polled between batches of a build, which raises
    :class:`FeatureCacheCancelled`: a build over a large pool can take minutes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dtype: str = "float32",
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise ValidationError(f"dtype: feature cache stores float32 or float16, got {dtype!r}")
        self.root = Path(root)
        self.dtype = dtype
        self.should_cancel = should_cancel

    def folder(self, backbone_id: str, input_size: tuple[int, int]) -> Path:
        w, h = input_size
        return self.root / backbone_id[:32] / f"{w}x{h}"

    def features(
        self,
        backbone: Any,
        backbone_name: str,
        paths: Sequence[str | os.PathLike],
        input_size: tuple[int, int],
        batch_size: int = 128,
        backbone_id: str | None = None,
        digests: Sequence[str] | None = None,
        workers: int = 4,
    ) -> np.ndarray:
        """Feature maps (N, h, w, C) float32 for the images at ``paths``; computes and stores misses.

        ``digests``: the images' sha256 when the caller has them (the ``cases`` rows record them at
        import), so a pass over a 100k pool does not read every file again just to hash it. Misses
        are decoded by ``workers`` threads and run through the backbone in batches of ``batch_size``
        (a plain call: ``predict_on_batch`` splits a batch over a distribution strategy's replicas);
        stored maps are read back without ``np.load``'s per-file parsing."""
        from concurrent.futures import ThreadPoolExecutor

        from workbench.data.images import load_rgb, sha256_file
        from workbench.model.builder import preprocess_fn

        backbone_id = backbone_id or backbone_identity(backbone)
        folder = self.folder(backbone_id, input_size)
        folder.mkdir(parents=True, exist_ok=True)
        if digests is not None and len(digests) != len(paths):
            raise ValidationError(f"features: {len(digests)} digests for {len(paths)} images")
        digests = list(digests) if digests is not None else [sha256_file(Path(p)) for p in paths]
        missing = sorted(
            {
                d: str(p)
                for d, p in zip(digests, paths, strict=True)
                if not os.path.isfile(folder / f"{d}.npy")
            }.items()
        )
        prep = preprocess_fn(backbone_name)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(missing), batch_size):
                if self.should_cancel is not None and self.should_cancel():
                    raise FeatureCacheCancelled(
                        f"feature cache build cancelled after {start} of {len(missing)} images"
                    )
                chunk = missing[start : start + batch_size]
                decoded = list(pool.map(lambda item: load_rgb(Path(item[1]), size=tuple(input_size)), chunk))
                maps = np.asarray(backbone(prep(np.stack(decoded).astype(np.float32)), training=False))
                for (digest, _), fmap in zip(chunk, maps, strict=True):
                    target = folder / f"{digest}.npy"
                    with atomic_replace(target, suffix=".tmp.npy") as tmp:  # np.save appends .npy otherwise
                        np.save(tmp, fmap.astype(self.dtype))
            return _read_maps([folder / f"{d}.npy" for d in digests], pool)


def _read_maps(paths: Sequence[Path], pool: Any, parts: int = 4) -> np.ndarray:
    """Stack the stored maps as float32. Every file holds an array of one shape and dtype written by
    ``np.save``, so the header of the first is parsed once and the others are read raw (a 100k pool
    reads 200k files: ``np.load`` per file costs about twice the read itself), by ``parts`` threads
    each filling its own contiguous slice; a file whose size does not match is read with
    ``np.load``, which names what is wrong with it."""
    if not paths:
        return np.zeros((0,), np.float32)
    first = np.load(paths[0])
    size = paths[0].stat().st_size
    offset = size - first.nbytes
    out = np.empty((len(paths), *first.shape), np.float32)

    def fill(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            with open(paths[i], "rb") as f:
                raw = f.read()
            if len(raw) == size:
                out[i] = np.frombuffer(raw, first.dtype, offset=offset).reshape(first.shape)
            else:
                out[i] = np.load(paths[i])

    step = -(-len(paths) // parts)
    for future in [pool.submit(fill, lo, min(lo + step, len(paths))) for lo in range(0, len(paths), step)]:
        future.result()
    return out


HEAD_STEPS_PER_EXECUTION = 8


def build_head_model(cfg: ModelConfig, feature_shape: tuple[int, int, int] | None = None) -> Any:
    """The fusion head alone: inputs "pre_features"/"post_features" (feature maps), outputs
    {"logit", "probability"}; layer names match the full model's head."""
    import keras

    from workbench.model.builder import build_head, model_name
    from workbench.model.builder import feature_shape as compute_shape

    shape = feature_shape or compute_shape(cfg)
    pre = keras.Input(shape=shape, name="pre_features", dtype="float32")
    post = keras.Input(shape=shape, name="post_features", dtype="float32")
    out = build_head(cfg, pre, post)
    return keras.Model(
        inputs={"pre_features": pre, "post_features": post},
        outputs={"logit": out["logit"], "probability": out["probability"]},
        name="head_" + model_name(cfg.backbone),
    )


def graft_head(source: Any, target: Any) -> int:
    """Copy the weights of every weighted, non-backbone layer of ``source`` into the layer of the same
    name in ``target`` (head -> full model, or full model -> head); returns how many layers."""
    target_names = {layer.name for layer in target.layers}
    copied = 0
    for layer in source.layers:
        if not layer.weights or layer.name.endswith("backbone"):
            continue
        if layer.name not in target_names:
            raise ValidationError(f"graft: layer {layer.name!r} missing from model {target.name!r}")
        target.get_layer(layer.name).set_weights(layer.get_weights())
        copied += 1
    return copied


def pair_features(
    model: Any,
    cfg: ModelConfig,
    cache: FeatureCache | str | os.PathLike,
    pairs: Sequence[tuple[str, str]],
    digests: Sequence[tuple[str, str]] | None = None,
) -> dict[str, np.ndarray]:
    """{"pre_features", "post_features"} for ``pairs`` from ``model``'s (frozen) backbones, via the cache
    (``digests``: the pairs' (pre, post) sha256 when known). With ``cfg.align_shots`` the pre maps are
    computed from the aligned pre shots every time (an aligned shot depends on its post shot, so it has
    no per-image cache entry); post shots are never moved, so their maps still come from the cache."""
    from workbench.model.builder import backbones

    cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    bbs = backbones(model)
    ids = {side: backbone_identity(bb) for side, bb in bbs.items()}
    out = {}
    for i, side in enumerate(("pre", "post")):
        if side == "pre" and cfg.align_shots and pairs:
            out["pre_features"] = _aligned_pre_maps(bbs["pre"], cfg, pairs, cache.should_cancel)
            continue
        paths = [p[i] for p in pairs]
        out[f"{side}_features"] = cache.features(
            bbs[side],
            cfg.backbone,
            paths,
            cfg.input_size,
            backbone_id=ids[side],
            digests=None if digests is None else [d[i] for d in digests],
        )
    return out


def _aligned_pre_maps(
    backbone: Any,
    cfg: ModelConfig,
    pairs: Sequence[tuple[str, str]],
    should_cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """The pre backbone's maps of the pre shots aligned onto their post shots, in order."""
    from workbench.model.builder import preprocess_fn
    from workbench.model.pipeline import decoded_batches

    prep = preprocess_fn(cfg.backbone)
    maps = []
    for batch in decoded_batches(list(pairs), cfg.input_size, 64, align=True):
        if should_cancel is not None and should_cancel():
            raise FeatureCacheCancelled(
                f"aligned pre maps cancelled after {64 * len(maps)} of {len(pairs)} pairs"
            )
        maps.append(np.asarray(backbone(prep(batch["pre"].astype(np.float32)), training=False)))
    return np.concatenate(maps).astype(np.float32)


def fit_head_on_features(
    model: Any,
    cfg: ModelConfig,
    cache: FeatureCache | str | os.PathLike,
    train_pairs: Sequence[tuple[str, str]],
    y_train: np.ndarray,
    val_pairs: Sequence[tuple[str, str]],
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    loss: Any,
    class_weight: dict[int, float] | None,
    balanced: bool,
    callbacks: list[Any],
    state: dict[str, Any],
    seed: int,
    val_batch_size: int | None = None,
) -> dict[str, list[float]]:
    """Train ``model``'s head on cached backbone features and graft it back (used by training.train).

    ``val_batch_size`` (default ``batch_size``) batches the validation features: under a distribution
    strategy a small set's first batch must split evenly over the replicas.
    ``state`` is training.py's best-weights record: best weights found here are head weights, so
    they are grafted into ``model`` and replaced by the full model's weights before returning.
    """
    import keras
    import tensorflow as tf

    x_tr = pair_features(model, cfg, cache, train_pairs)
    x_va = pair_features(model, cfg, cache, val_pairs)
    head = build_head_model(cfg, tuple(x_tr["pre_features"].shape[1:]))
    graft_head(model, head)  # start from the model's current head (a warm-start parent's)
    head_logit = keras.Model(head.input, head.output["logit"], name="head_logit")
    y_tr = np.asarray(y_train, np.float32).reshape(-1, 1)
    y_va = np.asarray(y_val, np.float32).reshape(-1, 1)
    n = len(y_tr)
    ds = tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
    if balanced:
        parts = [
            ds.filter(lambda _x, y, c=c: tf.equal(y[0], c)).shuffle(n, seed=seed + 1 + int(c)).repeat()
            for c in (0.0, 1.0)
        ]
        ds = tf.data.Dataset.sample_from_datasets(
            parts, [0.5, 0.5], seed=seed, rerandomize_each_iteration=True
        ).take(n)
    else:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    head_logit.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=loss,
        metrics=[
            keras.metrics.AUC(curve="PR", from_logits=True, name="auc_pr"),
            keras.metrics.AUC(curve="ROC", from_logits=True, name="auc"),
        ],
        # A head step on cached features is a few milliseconds of work; running several per call
        # of the compiled function saves Keras' per-step overhead (same batches, same order).
        # (one replica only: under a distribution strategy several steps per call fail on this Keras)
        steps_per_execution=HEAD_STEPS_PER_EXECUTION
        if tf.distribute.get_strategy().num_replicas_in_sync == 1
        else 1,
    )
    before = state.get("best_weights")
    hist = head_logit.fit(
        ds,
        validation_data=(x_va, y_va),
        validation_batch_size=val_batch_size or batch_size,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=0,
    ).history
    if state.get("best_weights") is not None and state["best_weights"] is not before:
        head_logit.set_weights(state["best_weights"])
    graft_head(head, model)
    full = keras.Model(model.input, model.output["logit"])
    state["best_weights"] = full.get_weights() if state.get("best_weights") is not None else None
    return hist
