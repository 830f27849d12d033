"""Batch inference over image pairs: logits, probabilities, MC-dropout uncertainty, embeddings.

MC dropout without touching batch normalisation: the builder puts the model's only Dropout
("head_dropout") between the "embedding" layer and the "logit" layer. So the network up to
"embedding" runs once in inference mode, and only the tail (head_dropout with ``training=True``,
then logit and sigmoid) is replayed ``mc_samples`` times. Batch norm statistics are never used in
training mode, and the K samples cost almost nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from workbench.errors import ValidationError, WorkbenchError
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
) -> dict[str, np.ndarray | None]:
    """Predict every pair, in order.

    Returns {"logit": (N,), "probability": (N,), "uncertainty": (N,) MC-dropout standard deviation
    of the probability over ``mc_samples`` passes, or None when mc_samples == 0, "embedding": (N, D)}.
    ``backbone`` (picks the preprocessing) defaults to the one encoded in the model's name.
    ``progress`` gets {"step", "steps", "done", "total"} after each batch; ``should_cancel`` is
    polled between batches and raises PredictionCancelled.
    """
    from workbench.model.builder import backbone_from_model
    from workbench.model.pipeline import make_dataset

    if mc_samples < 0 or batch_size < 1:
        raise ValidationError("mc_samples must be >= 0 and batch_size >= 1")
    backbone = backbone or backbone_from_model(model)
    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    n = len(pairs)
    batches = (
        make_dataset(pairs, None, input_size=(w, h), backbone=backbone, batch_size=batch_size, cache=False)
        if n
        else []
    )
    return _predict_batches(model, batches, n, batch_size, mc_samples, progress, should_cancel, seed)


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
) -> dict[str, np.ndarray | None]:
    """Like :func:`predict_pairs`, but the frozen backbones' feature maps come from the feature cache
    (computed once per image and backbone), so only the fusion head runs: what makes a warm-started
    round's inference over a large pool fast. Same outputs, same MC-dropout tail."""
    from workbench.model.features import build_head_model, graft_head, pair_features

    if mc_samples < 0 or batch_size < 1:
        raise ValidationError("mc_samples must be >= 0 and batch_size >= 1")
    n = len(pairs)
    if n == 0:
        return _predict_batches(model, [], 0, batch_size, mc_samples, progress, should_cancel, seed)
    feats = pair_features(model, cfg, cache, list(pairs))
    head = build_head_model(cfg, tuple(feats["pre_features"].shape[1:]))
    graft_head(model, head)
    batches = ({k: v[i : i + batch_size] for k, v in feats.items()} for i in range(0, n, batch_size))
    return _predict_batches(head, batches, n, batch_size, mc_samples, progress, should_cancel, seed)


def _predict_batches(
    model: Any,
    batches: Any,
    n: int,
    batch_size: int,
    mc_samples: int,
    progress: Callable[[dict[str, Any]], None] | None,
    should_cancel: Callable[[], bool] | None,
    seed: int,
) -> dict[str, np.ndarray | None]:
    """Run ``model`` (a full model or a head) up to "embedding" once per batch, then the dropout tail."""
    import keras

    emb_model = embedding_model(model)
    dropout = model.get_layer("head_dropout")
    logit_layer = model.get_layer("logit")
    dim = int(emb_model.output.shape[-1])
    if n == 0:
        empty = np.zeros((0,), np.float64)
        return {
            "logit": empty,
            "probability": empty,
            "uncertainty": None if mc_samples == 0 else empty,
            "embedding": np.zeros((0, dim), np.float32),
        }
    steps = -(-n // batch_size)
    rng = keras.random.SeedGenerator(seed)
    logits, embeddings, spreads = [], [], []
    done = 0
    for step, batch in enumerate(batches, start=1):
        if should_cancel is not None and should_cancel():
            raise PredictionCancelled(f"inference cancelled after {done} of {n} pairs")
        emb = emb_model.predict_on_batch(batch)  # compiled once, inference mode
        logits.append(np.asarray(logit_layer(emb)).reshape(-1))
        embeddings.append(np.asarray(emb))
        if mc_samples:
            samples = []
            for _ in range(mc_samples):
                dropped = keras.random.dropout(emb, dropout.rate, seed=rng) if dropout.rate > 0 else emb
                samples.append(np.asarray(keras.ops.sigmoid(logit_layer(dropped))).reshape(-1))
            spreads.append(np.std(np.stack(samples), axis=0))
        done += len(emb)
        if progress is not None:
            progress({"step": step, "steps": steps, "done": done, "total": n})
    logit = np.concatenate(logits).astype(np.float64)  # float64 from here on: no saturation before |z| ~ 36
    return {
        "logit": logit,
        "probability": expit(logit),
        "uncertainty": np.concatenate(spreads).astype(np.float32) if mc_samples else None,
        "embedding": np.concatenate(embeddings).astype(np.float32),
    }
