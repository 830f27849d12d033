"""Two-stage scoring of a large pool: MC-dropout passes for a shortlist only.

Stage one scores the whole pool with one deterministic pass (inference with ``mc_samples=0``, through
the feature cache when the version has one). Stage two, run by the queue step, chooses the
**shortlist**: the pool cases the strategies of the mix could pick, and runs the MC-dropout passes
over those cases alone, storing their ``uncertainty``.

Shortlist rule, per strategy ``s`` of the mix with quota ``q_s`` (its share of the batch ``B``)::

    m_s = max(SHORTLIST_DEPTH * q_s, B + (SHORTLIST_FACTOR - 1) * q_s, SHORTLIST_FLOOR)

- ``near_threshold``, ``entropy``, ``likely_positive`` rank the pool by a deterministic score: their
  top ``m_s`` join the shortlist. The second term makes this exact: ``select_batch`` lets ``s`` reach
  at most rank ``B - q_s`` (cases other strategies took) ``+ SHORTLIST_FACTOR * q_s`` (the k-center
  candidates with embeddings), so every case ``s`` picks from the full pool is shortlisted.
- ``bald`` ranks by the MC uncertainty, unknown before stage two. The std of an MC probability is about
  p(1 - p) times the spread of the logit, largest near p = 0.5, so its proxies are the top ``m_s`` by
  entropy and by closeness to the operating threshold, plus ``m_s`` uniformly random cases (a high
  logit spread elsewhere can still surface).
- ``random`` and ``diversity`` choose from the whole pool without the uncertainty, so they add no
  cases: the queue step measures whatever they pick after the choice (at most ``B`` cases).
- ``tta_spread`` ranks by the spread over pair-consistent test-time views (flips), measured in the
  queue step for the shortlist only (same proxies as bald; :func:`tta_spreads`).

Strategies that need the uncertainty (:data:`NEEDS_UNCERTAINTY`) choose only among measured cases:
unmeasured ones carry :data:`UNMEASURED` (below every standard deviation, so ranked last), and
:func:`check_measured` refuses a batch where such a strategy picked one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sqlalchemy import Engine, bindparam, select, update

from workbench.active.strategies import (
    SHORTLIST_FACTOR,
    STRATEGIES,
    Candidates,
    Selected,
    base_strategy,
    quotas,
)
from workbench.config import Settings
from workbench.db.engine import session_scope
from workbench.db.models import Case, Prediction
from workbench.errors import ValidationError, WorkbenchError

SHORTLIST_DEPTH = 10  # cases shortlisted per case of a strategy's quota
SHORTLIST_FLOOR = 100  # fewest cases shortlisted per strategy, whatever its quota
UNMEASURED = -1.0  # the uncertainty a strategy sees for a case without MC passes (ranked last)
NEEDS_UNCERTAINTY = frozenset({"bald"})
_RANKED_BY_SCORE = ("near_threshold", "entropy", "likely_positive")
_BALD_PROXIES = ("near_threshold", "entropy")


def shortlist_depths(mix: Mapping[str, float], batch_size: int) -> dict[str, int]:
    """``m_s`` for each strategy of ``mix`` that adds cases and has a non-zero quota (see the module
    docstring)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
    return {
        name: max(SHORTLIST_DEPTH * q, batch_size + (SHORTLIST_FACTOR - 1) * q, SHORTLIST_FLOOR)
        for name, q in quotas(mix, batch_size).items()
        if q > 0 and (name in _RANKED_BY_SCORE or needs_uncertainty(name) or needs_tta(name))
    }


def needs_tta(name: str) -> bool:
    """Whether strategy ``name`` (or its sampled form) ranks by the TTA spread, which is measured for the
    shortlist only (by the same proxies as bald: a prediction that moves with the view sits near 0.5)."""
    return base_strategy(name) == "tta_spread"


def needs_uncertainty(name: str) -> bool:
    """Whether strategy ``name`` (sampled ones by their base, ``power:bald`` -> ``bald``) ranks by the
    MC uncertainty. A sampled score strategy (``power:near_threshold``) can draw any case, so it adds
    none to the shortlist: like random, its picks are measured right after the choice."""
    return base_strategy(name) in NEEDS_UNCERTAINTY


def choose_shortlist(
    candidates: Candidates, batch_size: int, mix: Mapping[str, float], seed: int = 0
) -> np.ndarray:
    """Indices into ``candidates`` (sorted) of the cases whose MC uncertainty the mix may need.

    ``seed`` drives bald's random slice with a generator of its own, so the batch's random audit
    draw is the same as without the shortlist stage.
    """
    n = len(candidates)
    rng = np.random.default_rng([seed, 16])
    scores: dict[str, np.ndarray] = {}
    chosen: list[np.ndarray] = []

    def top(name: str, m: int) -> np.ndarray:
        if name not in scores:
            scores[name] = STRATEGIES[name](candidates, rng).scores
        return np.argsort(-scores[name], kind="stable")[:m]  # select_batch's order, ties by pool order

    for name, m in shortlist_depths(mix, batch_size).items():
        if name in _RANKED_BY_SCORE:
            chosen.append(top(name, m))
        elif needs_uncertainty(name) or needs_tta(name):  # bald / tta_spread (or sampled): by proxies
            chosen.extend(top(proxy, m) for proxy in _BALD_PROXIES)
            chosen.append(rng.choice(n, size=min(m, n), replace=False))
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(chosen)).astype(np.int64)


def selection_uncertainty(stored: np.ndarray) -> np.ndarray | None:
    """The uncertainty the strategies see: None when no case has one, else NaN -> :data:`UNMEASURED`."""
    stored = np.asarray(stored, dtype=np.float64)
    if np.isnan(stored).all():
        return None
    return np.where(np.isnan(stored), UNMEASURED, stored)


def check_measured(batch: list[Selected], candidates: Candidates) -> None:
    """Refuse a batch where a strategy that needs the uncertainty (or the TTA spread) picked a case
    without it."""
    position = {int(c): i for i, c in enumerate(candidates.case_ids)}
    unmeasured = [
        sel.case_id
        for sel in batch
        if candidates.uncertainty is not None
        and needs_uncertainty(sel.strategy)
        and candidates.uncertainty[position[sel.case_id]] == UNMEASURED
    ]
    if candidates.tta_spread is not None:
        no_tta = [
            sel.case_id
            for sel in batch
            if needs_tta(sel.strategy) and candidates.tta_spread[position[sel.case_id]] == UNMEASURED
        ]
        if no_tta:
            raise WorkbenchError(f"tta_spread picked cases {no_tta[:5]} whose TTA spread was not measured")
    if unmeasured:
        measured = int((candidates.uncertainty != UNMEASURED).sum())
        raise WorkbenchError(
            f"only {measured} of {len(candidates)} pool cases have an MC-dropout uncertainty, too few for "
            f"the mix's {', '.join(sorted(NEEDS_UNCERTAINTY))} share: queue with mc_samples > 0 "
            "(two-stage scoring) or run inference with MC-dropout passes"
        )


def _pairs_of(engine: Engine, ids: list[int]) -> list[tuple[str, str]]:
    """(pre, post) image paths of the shortlisted cases ``ids``, in that order."""
    with session_scope(engine) as s:
        paths = {
            cid: (pre, post)
            for cid, pre, post in s.execute(
                select(Case.id, Case.pre_path, Case.post_path).where(Case.id.in_(ids))
            )
        }
    missing = [cid for cid in ids if cid not in paths]
    if missing:
        raise WorkbenchError(f"cases {missing[:5]} of the shortlist no longer exist")
    return [paths[cid] for cid in ids]


def mc_uncertainty(
    engine: Engine,
    settings: Settings,
    version_id: int,
    case_ids: np.ndarray,
    mc_samples: int,
    *,
    seed: int = 0,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MC-dropout std of the probability and BALD mutual information (bits) of ``case_ids`` (in that
    order), from the same passes, through the feature cache when the version was trained on it, else
    on the images."""
    from workbench.model.inference import predict_cached, predict_pairs
    from workbench.model.registry import load_version_model
    from workbench.model.scoring import cached_predictor

    if mc_samples < 2:
        raise ValidationError(f"mc_samples must be at least 2 to measure a spread, got {mc_samples}")
    ids = [int(c) for c in case_ids]
    if not ids:
        return np.zeros(0), np.zeros(0)
    pairs = _pairs_of(engine, ids)
    model = load_version_model(engine, version_id)
    cached = cached_predictor(engine, settings, version_id, should_cancel)
    options: dict[str, Any] = {"mc_samples": mc_samples, "should_cancel": should_cancel, "seed": seed}
    if cached is not None:
        cfg, cache = cached
        out = predict_cached(model, cfg, cache, pairs, **options)
    else:
        out = predict_pairs(model, pairs, **options)
    return (
        np.asarray(out["uncertainty"], dtype=np.float64),
        np.asarray(out["mutual_information"], dtype=np.float64),
    )


def tta_spreads(
    engine: Engine,
    settings: Settings,
    version_id: int,
    case_ids: np.ndarray,
    should_cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """TTA spread of ``case_ids`` (in that order): the full model on the images under each view of
    ``inference.TTA_VIEWS`` (not stored: measured when a mix asks for it)."""
    from workbench.model.decoded_cache import settings_cache
    from workbench.model.inference import predict_tta
    from workbench.model.registry import load_version_model

    ids = [int(c) for c in case_ids]
    if not ids:
        return np.zeros(0)
    model = load_version_model(engine, version_id)
    return predict_tta(
        model,
        _pairs_of(engine, ids),
        decoded_cache=settings_cache(settings.artifacts),
        should_cancel=should_cancel,
    )


def store_uncertainty(
    engine: Engine,
    version_id: int,
    case_ids: np.ndarray,
    uncertainty: np.ndarray,
    mutual_information: np.ndarray,
) -> int:
    """Write the MC std and BALD mutual information of the version's stored predictions of
    ``case_ids`` (one bulk UPDATE)."""
    if not len(case_ids) == len(uncertainty) == len(mutual_information):
        raise ValidationError(
            f"{len(case_ids)} case ids but {len(uncertainty)} uncertainties and "
            f"{len(mutual_information)} mutual informations"
        )
    if len(case_ids) == 0:
        return 0
    table = Prediction.__table__
    stmt = (
        update(table)
        .where(table.c.model_version_id == bindparam("b_version"), table.c.case_id == bindparam("b_case"))
        .values(uncertainty=bindparam("b_unc"), mutual_information=bindparam("b_mi"))
    )
    rows = [
        {"b_version": version_id, "b_case": int(c), "b_unc": float(u), "b_mi": float(m)}
        for c, u, m in zip(case_ids, uncertainty, mutual_information, strict=True)
    ]
    with session_scope(engine) as s:
        s.execute(stmt, rows)
    return len(rows)
