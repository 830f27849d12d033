"""Batch inference over image pairs: logits, probabilities, MC-dropout uncertainty, embeddings.

MC dropout without touching batch normalisation: the builder puts the model's only Dropout
("head_dropout") between the "embedding" layer and the "logit" layer. So the network up to
"embedding" runs once in inference mode, and only the tail (dropout, logit, sigmoid) is drawn
``mc_samples`` times, all at once over a (K, B, D) tensor inside the same compiled function as the
network (:func:`mc_probabilities`). Batch norm statistics are never used in training mode, and the K
samples cost almost nothing. The samples are summarised per case by their standard deviation and
their BALD mutual information (:func:`mc_statistics`), both stored with the prediction.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from workbench.errors import ValidationError, WorkbenchError
from workbench.model.decoded_cache import DecodedCache
from workbench.model.pipeline import Pair


class PredictionCancelled(WorkbenchError):
    """``should_cancel()`` returned true during inference."""


_EMBEDDING_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def embedding_model(model: Any) -> Any:
    """A sub-model of a workbench model mapping {"pre", "post"} to the pooled fused "embedding".

    Kept per model (weakly), so repeated predict_pairs calls reuse its compiled predict function.
    """
    import keras

    cached = _EMBEDDING_MODELS.get(model)
    if cached is not None:
        return cached
    try:
        layer = model.get_layer("embedding")
    except ValueError:
        raise ValidationError(
            f"model {model.name!r} has no 'embedding' layer (not built by the workbench)"
        ) from None
    sub = keras.Model(model.input, layer.output, name="embedding_model")
    _EMBEDDING_MODELS[model] = sub
    return sub


def predict_pairs(
    model: Any,
    pairs: Sequence[Pair],
    batch_size: int = 32,
    mc_samples: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    *,
    backbone: str | None = None,
    seed: int = 0,
    decoded_cache: DecodedCache | None = None,
    workers: int = 4,
) -> dict[str, np.ndarray | None]:
    """Predict every pair, in order.

    Returns {"logit": (N,), "probability": (N,), "uncertainty": (N,) MC-dropout standard deviation
    of the probability over ``mc_samples`` passes, "mutual_information": (N,) the same passes' BALD
    mutual information in bits (both None when mc_samples == 0), "embedding": (N, D)}.
    ``backbone`` (picks the preprocessing) defaults to the one encoded in the model's name.
    ``progress`` gets {"step", "steps", "done", "total"} after each batch; ``should_cancel`` is
    polled between batches and raises PredictionCancelled. Images are decoded by ``workers``
    threads, ahead of the model; with ``decoded_cache`` the decoded, resized pixels are read from
    (and misses stored in) that cache: same pixels, same predictions.
    """
    from workbench.model.builder import aligns_shots, backbone_from_model
    from workbench.model.pipeline import decoded_batches

    _check_sizes(batch_size, mc_samples)
    backbone = backbone or backbone_from_model(model)
    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    n = len(pairs)
    loader = decoded_cache.load if decoded_cache is not None else None
    align = aligns_shots(model)
    batches = (
        decoded_batches(pairs, (w, h), batch_size, loader=loader, workers=workers, align=align) if n else []
    )
    runner = _batch_runner(model, backbone)
    return _predict_batches(runner, model, batches, n, batch_size, mc_samples, progress, should_cancel, seed)


TTA_VIEWS = ("identity", "flip_left_right", "flip_up_down", "rotate_180")
"""Test-time views, each applied to both shots of a pair alike (a flip of one shot only would read as
change): the colposcope's orientation carries no label information."""


def _view(x: np.ndarray, name: str) -> np.ndarray:
    """One TTA view of a (B, H, W, 3) batch."""
    if name == "flip_left_right":
        return x[:, :, ::-1]
    if name == "flip_up_down":
        return x[:, ::-1]
    if name == "rotate_180":
        return x[:, ::-1, ::-1]
    return x


def predict_tta(
    model: Any,
    pairs: Sequence[Pair],
    batch_size: int = 32,
    *,
    decoded_cache: DecodedCache | None = None,
    workers: int = 4,
    should_cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Standard deviation of the probability over the :data:`TTA_VIEWS` of each pair, (N,): how much
    the prediction depends on how the pair was photographed. The full model runs on the images (the
    feature cache holds unaugmented features only), one compiled step per view and batch."""
    from workbench.model.builder import aligns_shots, backbone_from_model
    from workbench.model.pipeline import decoded_batches

    _check_sizes(batch_size, 0)
    if not pairs:
        return np.zeros(0, np.float64)
    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    loader = decoded_cache.load if decoded_cache is not None else None
    runner = _batch_runner(model, backbone_from_model(model))
    seed, one = np.zeros(2, np.int32), np.int32(1)
    spreads = []
    done = 0
    align = aligns_shots(model)
    for batch in decoded_batches(pairs, (w, h), batch_size, loader=loader, workers=workers, align=align):
        if should_cancel is not None and should_cancel():
            raise PredictionCancelled(f"TTA cancelled after {done} of {len(pairs)} pairs")
        views = []
        for name in TTA_VIEWS:
            view = {k: np.ascontiguousarray(_view(v, name)) for k, v in batch.items()}
            views.append(expit(runner(view, seed, one)[1].numpy().astype(np.float64)))
        spreads.append(np.std(np.stack(views), axis=0))
        done += len(spreads[-1])
    return np.concatenate(spreads)


def predict_cached(
    model: Any,
    cfg: Any,
    cache: Any,
    pairs: Sequence[Pair],
    batch_size: int = 256,
    mc_samples: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    *,
    seed: int = 0,
    digests: Sequence[tuple[str, str]] | None = None,
) -> dict[str, np.ndarray | None]:
    """Like :func:`predict_pairs`, but the frozen backbones' feature maps come from the feature cache
    (computed once per image and backbone), so only the fusion head runs: what makes a warm-started
    round's inference over a large pool fast. Same outputs, same MC-dropout tail."""
    from workbench.model.features import pair_features

    _check_sizes(batch_size, mc_samples)
    n = len(pairs)
    if n == 0:
        return _predict_batches(None, model, [], 0, batch_size, mc_samples, progress, should_cancel, seed)
    feats = pair_features(model, cfg, cache, list(pairs), digests)
    head = _head_of(model, cfg, tuple(feats["pre_features"].shape[1:]))
    batches = ({k: v[i : i + batch_size] for k, v in feats.items()} for i in range(0, n, batch_size))
    runner = _batch_runner(head, None)
    return _predict_batches(runner, head, batches, n, batch_size, mc_samples, progress, should_cancel, seed)


_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _head_of(model: Any, cfg: Any, feature_shape: tuple[int, ...]) -> Any:
    """``model``'s fusion head as a model of its own, built once per model and feature shape (so its
    compiled step is traced once, not once per inference chunk); the weights are copied from ``model``
    at every call (cheap), so a model trained in between is predicted with its current weights."""
    from workbench.model.features import build_head_model, graft_head

    held = _HEADS.get(model)
    if held is None or held[0] != feature_shape:
        held = (feature_shape, build_head_model(cfg, feature_shape))
        _HEADS[model] = held
    graft_head(model, held[1])
    return held[1]


def _check_sizes(batch_size: int, mc_samples: int) -> None:
    if mc_samples < 0 or batch_size < 1:
        raise ValidationError(
            f"mc_samples must be >= 0 and batch_size >= 1, got mc_samples={mc_samples}, batch_size={batch_size}"
        )


Runner = Callable[[dict[str, Any], Any, Any], tuple[Any, Any, Any, Any]]
"""(inputs, seed (2,) int32, passes int32 >= 1) -> (embedding (B, D), logit (B,), MC std (B,),
BALD mutual information in bits (B,))."""

_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batch_runner(model: Any, backbone: str | None) -> Runner:
    """One compiled function per batch: preprocessing (uint8 inputs, when ``backbone`` is given), the
    network up to "embedding" in inference mode, the logit, and all MC-dropout passes at once.

    Kept per model (weakly) and per backbone; the number of passes is a tensor argument, so calls
    with and without MC dropout share one trace (tracing two ResNet50 takes seconds).
    """
    import tensorflow as tf

    from workbench.model.builder import preprocess_fn

    per_model = _RUNNERS.setdefault(model, {})
    if backbone in per_model:
        return per_model[backbone]
    emb_model = embedding_model(model)
    logit_layer = model.get_layer("logit")
    rate = float(model.get_layer("head_dropout").rate)
    prep = preprocess_fn(backbone) if backbone is not None else None

    @tf.function(reduce_retracing=True)
    def run(inputs: dict[str, Any], seed: Any, passes: Any) -> tuple[Any, Any, Any, Any]:
        if prep is not None:  # exactly make_dataset's _prep: cast the uint8 pixels, then preprocess
            inputs = {k: prep(tf.cast(v, tf.float32)) for k, v in inputs.items()}
        emb = emb_model(inputs, training=False)
        logit = tf.reshape(logit_layer(emb), [-1])
        spread, information = mc_statistics(mc_probabilities(emb, logit_layer, rate, passes, seed))
        return emb, logit, spread, information

    per_model[backbone] = run
    return run


def mc_probabilities(emb: Any, logit_layer: Any, rate: float, passes: Any, seed: Any) -> Any:
    """``passes`` dropout draws of sigmoid(logit_layer(dropout(emb))), (passes, B).

    All passes in one op over a (passes, B, D) tensor: inverted dropout (kept units scaled by
    1 / (1 - rate), like Keras' Dropout) with a stateless draw, so a seed gives the same samples.
    """
    import tensorflow as tf

    tiled = tf.broadcast_to(emb, tf.concat([[passes], tf.shape(emb)], axis=0))
    if rate > 0:
        keep = tf.random.stateless_uniform(tf.shape(tiled), seed=seed) >= rate
        tiled = tf.where(keep, tiled / (1.0 - rate), tf.zeros_like(tiled))
    return tf.sigmoid(tf.squeeze(logit_layer(tiled), axis=-1))


def mc_statistics(probs: Any) -> tuple[Any, Any]:
    """(standard deviation, BALD mutual information in bits) over the K samples of (K, B) probabilities.

    Mutual information H(mean_k p_k) - mean_k H(p_k): how much the samples disagree, not how unsure
    they are together (a case every sample puts at 0.5 has entropy 1 bit and information 0). Computed
    in float64 so probabilities near 0 or 1 do not turn the entropies into NaN.
    """
    import tensorflow as tf

    p = tf.clip_by_value(tf.cast(probs, tf.float64), 1e-12, 1.0 - 1e-12)

    def entropy(q: Any) -> Any:
        return -(q * tf.math.log(q) + (1.0 - q) * tf.math.log(1.0 - q)) / tf.math.log(
            tf.constant(2.0, tf.float64)
        )

    information = entropy(tf.reduce_mean(p, axis=0)) - tf.reduce_mean(entropy(p), axis=0)
    return tf.math.reduce_std(tf.cast(probs, tf.float32), axis=0), tf.maximum(information, 0.0)


def mc_spread(emb: Any, logit_layer: Any, rate: float, passes: Any, seed: Any) -> Any:
    """Standard deviation over ``passes`` dropout draws of the probability, (B,) (see
    :func:`mc_probabilities`)."""
    return mc_statistics(mc_probabilities(emb, logit_layer, rate, passes, seed))[0]


def _predict_batches(
    runner: Runner | None,
    model: Any,
    batches: Any,
    n: int,
    batch_size: int,
    mc_samples: int,
    progress: Callable[[dict[str, Any]], None] | None,
    should_cancel: Callable[[], bool] | None,
    seed: int,
) -> dict[str, np.ndarray | None]:
    """Run ``runner`` over the batches of ``model`` (a full model or a head); batch ``i``'s dropout
    draws use the stateless seed (seed, i)."""
    if n == 0:
        empty = np.zeros((0,), np.float64)
        dim = int(embedding_model(model).output.shape[-1])
        return {
            "logit": empty,
            "probability": empty,
            "uncertainty": None if mc_samples == 0 else empty,
            "mutual_information": None if mc_samples == 0 else empty,
            "embedding": np.zeros((0, dim), np.float32),
        }
    steps = -(-n // batch_size)
    logits, embeddings, spreads, informations = [], [], [], []
    done = 0
    for step, batch in enumerate(batches, start=1):
        if should_cancel is not None and should_cancel():
            raise PredictionCancelled(f"inference cancelled after {done} of {n} pairs")
        emb, logit, spread, information = runner(
            batch, np.asarray([seed, step], np.int32), np.int32(max(mc_samples, 1))
        )
        logits.append(logit.numpy())
        embeddings.append(emb.numpy())
        spreads.append(spread.numpy())
        informations.append(information.numpy())
        done += len(logits[-1])
        if progress is not None:
            progress({"step": step, "steps": steps, "done": done, "total": n})
    logit = np.concatenate(logits).astype(np.float64)  # float64 from here on: no saturation before |z| ~ 36
    return {
        "logit": logit,
        "probability": expit(logit),
        "uncertainty": np.concatenate(spreads).astype(np.float32) if mc_samples else None,
        "mutual_information": np.concatenate(informations).astype(np.float64) if mc_samples else None,
        "embedding": np.concatenate(embeddings).astype(np.float32),
    }
