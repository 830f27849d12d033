"""Inference job: score cases with a version in batches, bulk-writing predictions; resumable.

Each chunk of cases is predicted (with MC-dropout passes for the uncertainty when asked), then
written in one statement, so a cancelled or killed run keeps what it finished and a re-run skips
the cases this version already scored. Pooled embeddings are kept per chunk under the version's
artifact folder for diversity-based acquisition.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.config import Settings
from workbench.db.engine import session_scope
from workbench.db.models import Case
from workbench.faults import crash_once
from workbench.files import atomic_replace
from workbench.jobs.context import JobContext
from workbench.jobs.params import InferParams
from workbench.jobs.results import InferResult
from workbench.model.decoded_cache import settings_cache
from workbench.model.predictions import scored_case_ids, write_predictions
from workbench.model.registry import artifact_dir, load_version_model


def _pending(
    engine: Engine, version_id: int, splits: list[str], case_range: tuple[int, int] | None = None
) -> list[tuple[int, str, str, str, str]]:
    """Cases of ``splits`` (ids within ``case_range``, inclusive, when given) the version has not scored:
    (id, pre path, post path, pre sha256, post sha256)."""
    done = scored_case_ids(engine, version_id)
    q = select(Case.id, Case.pre_path, Case.post_path, Case.pre_sha256, Case.post_sha256)
    q = q.where(Case.split.in_(splits))
    if case_range is not None:
        q = q.where(Case.id.between(*case_range))
    with session_scope(engine) as s:
        rows = s.execute(q.order_by(Case.id)).all()
    return [tuple(row) for row in rows if row[0] not in done]  # type: ignore[misc]


def plan_shards(engine: Engine, version_id: int, splits: list[str], shard_size: int) -> list[tuple[int, int]]:
    """Split the cases the version still has to score into id ranges of at most ``shard_size`` cases."""
    ids = [row[0] for row in _pending(engine, version_id, splits)]
    return [(ids[i], ids[min(i + shard_size, len(ids)) - 1]) for i in range(0, len(ids), shard_size)]


def _save_embeddings(folder: Path, case_ids: list[int], embedding: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{case_ids[0]:09d}-{case_ids[-1]:09d}.npz"
    with atomic_replace(final, suffix=".tmp.npz") as tmp:  # np.savez would append .npz to another name
        np.savez(tmp, case_ids=np.asarray(case_ids, dtype=np.int64), embedding=embedding.astype(np.float32))


def load_embeddings(settings: Settings, version_id: int) -> dict[int, np.ndarray]:
    """Pooled embeddings a version's inference stored, by case id."""
    folder = artifact_dir(settings, version_id) / "embeddings"
    out: dict[int, np.ndarray] = {}
    for path in sorted(folder.glob("[0-9]*.npz")):
        with np.load(path) as data:
            for cid, vec in zip(data["case_ids"], data["embedding"], strict=True):
                out[int(cid)] = vec
    return out


def infer_version(
    engine: Engine,
    settings: Settings,
    version_id: int,
    splits: list[str],
    *,
    mc_samples: int = 8,
    batch_size: int = 32,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    case_range: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Score every not-yet-scored case of ``splits`` (within ``case_range`` for one shard of a round);
    returns counts (and ``cancelled`` when stopped). Chunks of ``infer_chunk_size`` cases are written
    once each (keyed on version and case), so a re-run after a kill resumes after the last chunk."""
    from workbench.model.features import FeatureCacheCancelled
    from workbench.model.inference import PredictionCancelled, predict_cached, predict_pairs

    pending = _pending(engine, version_id, splits, case_range)
    chunk_size = settings.infer_chunk_size
    total = len(pending)
    if total == 0:
        return {"model_version": version_id, "scored": 0, "skipped_existing": True}
    model = load_version_model(engine, version_id)
    cached = cached_predictor(engine, settings, version_id, should_cancel)
    decoded = None if cached is not None else settings_cache(settings.artifacts)
    emb_dir = artifact_dir(settings, version_id) / "embeddings"
    scored = 0
    for start in range(0, total, chunk_size):
        chunk = pending[start : start + chunk_size]

        def on_batch(event: dict[str, Any], base: int = start) -> None:
            if progress is not None:
                done = base + int(event.get("done", 0))
                progress(done / total, f"scored {done}/{total} pairs")

        pairs = [(row[1], row[2]) for row in chunk]
        try:
            if cached is not None:
                cfg, cache = cached
                out = predict_cached(
                    model,
                    cfg,
                    cache,
                    pairs,
                    mc_samples=mc_samples,
                    progress=on_batch,
                    should_cancel=should_cancel,
                    digests=[(row[3], row[4]) for row in chunk],
                )
            else:
                out = predict_pairs(
                    model,
                    pairs,
                    batch_size=batch_size,
                    mc_samples=mc_samples,
                    progress=on_batch,
                    should_cancel=should_cancel,
                    decoded_cache=decoded,
                )
        except (PredictionCancelled, FeatureCacheCancelled):
            return {"model_version": version_id, "scored": scored, "cancelled": True}
        ids = [row[0] for row in chunk]
        write_predictions(
            engine,
            version_id,
            ids,
            out["logit"],
            out["probability"],
            out["uncertainty"],
            out.get("mutual_information"),
        )
        if out.get("embedding") is not None:
            _save_embeddings(emb_dir, ids, np.asarray(out["embedding"]))
        scored += len(chunk)
        if case_range is not None:  # test only: the whole worker lost mid-shard, after its first chunk
            crash_once(settings, "shard-chunk", before=_kill_worker_parent)
    return {
        "model_version": version_id,
        "scored": scored,
        "splits": splits,
        "feature_cache": cached is not None,
        **({"case_range": list(case_range)} if case_range is not None else {}),
    }


def _kill_worker_parent() -> None:
    """SIGKILL the worker's main process (this task process's parent), so the whole worker is gone."""
    import os
    import signal

    os.kill(os.getppid(), signal.SIGKILL)


def cached_predictor(
    engine: Engine, settings: Settings, version_id: int, should_cancel: Callable[[], bool] | None = None
) -> tuple[Any, Any] | None:
    """(model config, feature cache) when the version was trained on cached frozen-backbone features;
    the cache's build (minutes over a large pool) honours ``should_cancel`` between batches."""
    from workbench.db.models import ModelVersion
    from workbench.model.config import ModelConfig
    from workbench.model.features import FeatureCache

    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        config = dict(version.config or {}) if version else {}
    if not (config.get("params") or {}).get("use_feature_cache"):
        return None
    cache = FeatureCache(Path(settings.artifacts) / "features", should_cancel=should_cancel)
    return ModelConfig.from_dict(config["model"]), cache


def infer_job(ctx: JobContext[InferParams]) -> InferResult:
    """Job handler (``infer`` kind)."""
    p = ctx.params
    return InferResult.of(
        infer_version(
            ctx.engine,
            ctx.settings,
            p.model_version,
            p.splits,
            mc_samples=p.mc_samples,
            batch_size=p.batch_size,
            progress=ctx.progress,
            should_cancel=ctx.should_cancel,
            case_range=p.case_range,
        )
    )
