"""Queue building: the last step of a round. Picks the batch experts should label next.

Candidates are pool cases with no current label and no open labelling item, scored by a calibrated
model version (its operating threshold, MC-dropout uncertainty and pooled embeddings). With
``mc_samples > 0`` the queue step runs the second stage of two-stage scoring (``active.shortlist``):
MC-dropout passes over a shortlist of the pool only, before the choice. Optional extras: second reads of expert-labelled cases near the threshold, and relabel candidates, labelled
train/pool cases whose label out-of-fold scores contradict (possible label errors, ``active.relabel``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from workbench.active.guided import guided_mix
from workbench.active.labelling_queue import OPEN_STATUSES, enqueue_in
from workbench.active.ranker import choose_ranker
from workbench.active.relabel import relabel_suspects
from workbench.active.shortlist import (
    UNMEASURED,
    check_measured,
    choose_shortlist,
    mc_uncertainty,
    needs_tta,
    selection_uncertainty,
    store_uncertainty,
    tta_spreads,
)
from workbench.active.strategies import DEFAULT_MIX, Candidates, Selected, select_batch
from workbench.calibration.service import calibrated_probabilities
from workbench.config import Settings
from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Label, ModelVersion, QueueItem, Round
from workbench.defaults import DEFAULT_POLICY, DEFAULT_RANKER
from workbench.errors import WorkbenchError
from workbench.jobs.context import JobContext
from workbench.jobs.params import QueueParams
from workbench.jobs.results import QueueResult
from workbench.model.predictions import load_predictions
from workbench.model.scoring import load_embeddings


def _policy(engine: Engine, version_id: int) -> str:
    """The policy the version's operating threshold was chosen by (the baseline ranker uses it too)."""
    with session_scope(engine) as s:
        return get_version(s, version_id).threshold_policy or DEFAULT_POLICY


def _operating_threshold(engine: Engine, version_id: int) -> float:
    with session_scope(engine) as s:
        version = get_version(s, version_id)
        if version.status != "ready":
            from workbench.model.learning_check import not_ready_message

            raise WorkbenchError(not_ready_message(version_id, version.status, version.error))
        if version.threshold is None:
            raise WorkbenchError(
                f"model version {version_id} has no operating threshold: run `workbench calibrate {version_id}`"
            )
        return float(version.threshold)


def pool_candidates(engine: Engine, settings: Settings, version_id: int) -> Candidates:
    """Unlabelled pool cases without an open labelling item, with calibrated scores of ``version_id``.

    A case without a stored uncertainty carries ``shortlist.UNMEASURED`` (None when no case has one).
    """
    threshold = _operating_threshold(engine, version_id)
    preds = load_predictions(engine, version_id, "pool")
    with session_scope(engine) as s:
        open_items = set(
            s.scalars(
                select(QueueItem.case_id).where(
                    QueueItem.kind == "label", QueueItem.status.in_(OPEN_STATUSES)
                )
            )
        )
    keep = np.isnan(preds.label) & ~np.isin(preds.case_ids, list(open_items))
    if not keep.any():
        return Candidates(np.zeros(0, dtype=np.int64), np.zeros(0), threshold)
    ids = preds.case_ids[keep]
    prob = calibrated_probabilities(engine, version_id, preds.logit[keep])
    unc = preds.uncertainty[keep]
    info = None if preds.mutual_information is None else preds.mutual_information[keep]
    emb_by_case = load_embeddings(settings, version_id)
    embeddings = None
    if emb_by_case and all(int(c) in emb_by_case for c in ids):
        embeddings = np.stack([emb_by_case[int(c)] for c in ids])
    return Candidates(
        case_ids=ids,
        prob=prob,
        threshold=threshold,
        uncertainty=selection_uncertainty(unc),
        mutual_information=None if info is None else selection_uncertainty(info),
        embeddings=embeddings,
    )


def _expert_labelled(
    engine: Engine, version_id: int, threshold: float, band: float, limit: int
) -> list[Selected]:
    """Cases labelled by exactly one expert whose calibrated probability lies within ``band`` of the threshold."""
    if limit <= 0:
        return []
    preds = load_predictions(engine, version_id, "pool")
    if preds.n == 0:
        return []
    prob = calibrated_probabilities(engine, version_id, preds.logit)
    with session_scope(engine) as s:
        readers: dict[int, set[str]] = {}
        for cid, who in s.execute(
            select(Label.case_id, Label.labeller).where(Label.source == "expert", Label.value.is_not(None))
        ):
            readers.setdefault(cid, set()).add(who)
    out = []
    order = np.argsort(np.abs(prob - threshold))
    for i in order:
        cid = int(preds.case_ids[i])
        if abs(prob[i] - threshold) > band:
            break
        if len(readers.get(cid, ())) == 1:
            out.append(
                Selected(
                    cid,
                    "second_read",
                    float(-abs(prob[i] - threshold)),
                    f"second read: p={prob[i]:.2f} within {band:.2f} of threshold {threshold:.2f}",
                )
            )
        if len(out) >= limit:
            break
    return out


def _relabel_candidates(engine: Engine, settings: Settings, version_id: int, limit: int) -> list[Selected]:
    """Labelled train/pool cases whose given label looks wrong, ranked out of fold (``active.relabel``)."""
    return [
        Selected(sus.case_id, "relabel", 1.0 - sus.quality, sus.reason)
        for sus in relabel_suspects(engine, settings, version_id, limit)
    ]


def build_queue(
    engine: Engine,
    settings: Settings,
    version_id: int,
    batch_size: int,
    *,
    round_id: int | None = None,
    mix: Mapping[str, float] | None = None,
    second_reads: int = 0,
    second_read_band: float = 0.1,
    relabel: int = 0,
    seed: int = 0,
    mc_samples: int = 0,
    ranker: str = DEFAULT_RANKER,
) -> dict[str, Any]:
    """Queue a mixed batch of pool cases (plus optional second reads and relabels); returns counts.

    ``mc_samples > 0`` (at least 2): two-stage scoring. The shortlist's cases without a stored
    uncertainty get that many MC-dropout passes before the choice, the picks still without one after
    it, and the uncertainties are stored (see ``active.shortlist``); 0 uses what inference stored.
    ``ranker`` picks the scorer the pool is ranked by (``active.ranker``: ``auto`` compares the version
    with the non-learned baseline on validation). With the baseline, MC passes and TTA do not apply:
    a mix that needs them is replaced by the default mix. Second reads and relabels use the version.
    The batch is written in one transaction. A round's batch is queued once: when ``round_id``
    already has items (an earlier attempt of the round's queue step committed them and was then
    killed), they are returned as they are (``already_queued``) and nothing is added.
    """
    if mc_samples == 1 or mc_samples < 0:
        raise WorkbenchError(f"mc_samples must be 0 (stored uncertainty) or at least 2, got {mc_samples}")
    if round_id is not None:
        with session_scope(engine) as s:
            earlier = _round_batch(s, version_id, round_id)
        if earlier is not None:
            return earlier
    candidates = pool_candidates(engine, settings, version_id)
    if len(candidates) == 0:
        raise WorkbenchError(
            f"no unlabelled pool cases scored by model version {version_id}: "
            f"import more cases or run `workbench submit infer {version_id}`"
        )
    mix = mix or DEFAULT_MIX
    size = min(batch_size, len(candidates))
    choice, ranking = choose_ranker(engine, settings, version_id, ranker)
    version_threshold = candidates.threshold  # second reads and the report use the version's own scale
    pool_mean = float(np.mean(candidates.prob))  # the calibrated estimate of the pool's base rate
    ranked: dict[str, Any] = {"ranker": choice.to_json()}
    if ranking is not None:
        try:
            candidates, ranked["baseline_threshold_note"] = ranking.candidates(
                engine, settings, candidates.case_ids, _policy(engine, version_id)
            )
        except (WorkbenchError, OSError) as exc:  # a pool pair that no longer decodes
            if ranker == "baseline":
                raise
            ranking = None
            why = f"{choice.note}; the baseline could not score the pool, the version ranks it: {exc}"
            ranked["ranker"] = {**choice.to_json(), "ranker": "version", "note": why}
    if ranking is not None:
        mix, mix_note = guided_mix(mix)
        mc_samples = 0
        if mix_note:
            ranked["mix_note"] = mix_note
    shortlist: dict[str, Any] = {}
    tta = any(needs_tta(name) for name in mix)
    chosen = choose_shortlist(candidates, size, mix, seed) if mc_samples or tta else None
    if mc_samples:
        candidates, shortlist = _measure(engine, settings, version_id, candidates, chosen, mc_samples, seed)
    if tta:  # the TTA spread of the shortlist: the full model under each pair-consistent view
        spread = np.full(len(candidates), UNMEASURED)
        spread[chosen] = tta_spreads(engine, settings, version_id, candidates.case_ids[chosen])
        candidates = dataclasses.replace(candidates, tta_spread=spread)
        shortlist["tta_measured"] = int(len(chosen))
    rng = np.random.default_rng(seed)
    batch = select_batch(candidates, size, mix, rng)
    check_measured(batch, candidates)
    if ranking is not None:
        batch = [dataclasses.replace(sel, reason=f"{choice.reason}: {sel.reason}") for sel in batch]
    if mc_samples:
        picked = np.flatnonzero(np.isin(candidates.case_ids, [sel.case_id for sel in batch]))
        candidates, after = _measure(engine, settings, version_id, candidates, picked, mc_samples, seed)
        shortlist["measured_after_choice"] = after["measured"]
    extra_second = _expert_labelled(engine, version_id, version_threshold, second_read_band, second_reads)
    relabels = _relabel_candidates(engine, settings, version_id, relabel)
    with session_scope(engine) as s:
        if round_id is not None:
            s.execute(select(Round.id).where(Round.id == round_id).with_for_update())
            earlier = _round_batch(s, version_id, round_id)
            if earlier is not None:  # a concurrent attempt got there first
                return earlier
        label_ids = enqueue_in(s, batch, round_id=round_id, kind="label")
        second_ids = (
            enqueue_in(s, extra_second, round_id=round_id, kind="second_read") if extra_second else []
        )
        relabel_ids = enqueue_in(s, relabels, round_id=round_id, kind="relabel") if relabels else []
    by_strategy = dict(Counter(sel.strategy for sel in batch))
    return {
        "model_version": version_id,
        "queued": len(label_ids),
        "by_strategy": by_strategy,
        "second_reads": len(second_ids),
        "relabels": len(relabel_ids),
        "threshold": version_threshold,
        "pool_candidates": len(candidates),
        "pool_mean_probability": pool_mean,
        **ranked,
        **({"shortlist": shortlist} if shortlist else {}),
    }


def _measure(
    engine: Engine,
    settings: Settings,
    version_id: int,
    candidates: Candidates,
    indices: np.ndarray,
    mc_samples: int,
    seed: int,
) -> tuple[Candidates, dict[str, int]]:
    """MC passes for the cases at ``indices`` that have no uncertainty yet; stores them (one UPDATE)
    and returns the candidates with them filled in, and the counts."""
    unc = candidates.uncertainty
    if unc is None:
        unc = np.full(len(candidates), UNMEASURED)
    info = candidates.mutual_information
    if info is None:
        info = np.full(len(candidates), UNMEASURED)
    todo = indices[unc[indices] == UNMEASURED]
    if todo.size:
        ids = candidates.case_ids[todo]
        spread, information = mc_uncertainty(engine, settings, version_id, ids, mc_samples, seed=seed)
        store_uncertainty(engine, version_id, ids, spread, information)
        unc, info = unc.copy(), info.copy()
        unc[todo], info[todo] = spread, information
    counts = {"size": int(indices.size), "measured": int(todo.size)}
    return dataclasses.replace(candidates, uncertainty=unc, mutual_information=info), counts


def _round_batch(s: Session, version_id: int, round_id: int) -> dict[str, Any] | None:
    """The counts of the batch already queued for ``round_id``; None when it has none yet."""
    items = s.execute(select(QueueItem.kind, QueueItem.strategy).where(QueueItem.round_id == round_id)).all()
    if not items:
        return None
    by_strategy: dict[str, int] = {}
    for kind, strategy in items:
        if kind == "label":
            by_strategy[strategy] = by_strategy.get(strategy, 0) + 1
    return {
        "model_version": version_id,
        "queued": sum(by_strategy.values()),
        "by_strategy": by_strategy,
        "second_reads": sum(kind == "second_read" for kind, _ in items),
        "relabels": sum(kind == "relabel" for kind, _ in items),
        "threshold": s.scalar(select(ModelVersion.threshold).where(ModelVersion.id == version_id)),
        "pool_candidates": None,
        "pool_mean_probability": None,
        "already_queued": True,
    }


def build_queue_job(ctx: JobContext[QueueParams]) -> QueueResult:
    """Job handler (``queue`` kind)."""
    p = ctx.params
    options = p.model_dump(
        include={"round_id", "mix", "second_reads", "relabel", "seed", "mc_samples", "ranker"}
    )
    return QueueResult.of(build_queue(ctx.engine, ctx.settings, p.model_version, p.batch_size, **options))
