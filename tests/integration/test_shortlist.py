"""Two-stage scoring: the shortlist the mix may pick from, MC passes for it alone, and the queue."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select

from factories import TINY_TRAIN, insert_cases, make_cases, make_version, predict_with_temperature
from workbench.active import shortlist
from workbench.active.building import build_queue, pool_candidates
from workbench.active.shortlist import (
    SHORTLIST_FACTOR,
    UNMEASURED,
    choose_shortlist,
    shortlist_depths,
    store_uncertainty,
)
from workbench.active.strategies import Candidates, Selected, select_batch
from workbench.calibration.service import calibrate_version
from workbench.config import Settings, get_settings
from workbench.db.engine import session_scope
from workbench.db.models import QueueItem
from workbench.errors import WorkbenchError
from workbench.model.predictions import load_predictions, write_predictions

MIX = {"near_threshold": 0.3, "entropy": 0.2, "likely_positive": 0.2, "bald": 0.2, "random": 0.1}


def _pool(n: int, seed: int, embeddings: bool) -> Candidates:
    """A synthetic pool whose MC spread is p(1 - p): the same logit spread for every case, the case in
    which the entropy proxy ranks exactly like bald (with uneven spreads it only mostly does)."""
    rng = np.random.default_rng(seed)
    prob = rng.beta(0.5, 3.0, n)
    return Candidates(
        case_ids=np.arange(1, n + 1),
        prob=prob,
        threshold=0.3,
        uncertainty=prob * (1 - prob),
        embeddings=rng.normal(size=(n, 4)) if embeddings else None,
    )


def test_depth_rule_follows_batch_and_mix() -> None:
    depths = shortlist_depths(MIX, 200)
    # near_threshold: quota 60 -> 10 x 60; bald: quota 40 -> max(400, 200 + 2 x 40, 100); random adds none.
    assert depths == {
        "near_threshold": 600,
        "entropy": 400,
        "likely_positive": 400,
        "bald": 400,
    }
    assert shortlist_depths({"near_threshold": 1.0}, 5) == {"near_threshold": 100}  # the floor
    assert shortlist_depths({"near_threshold": 0.9, "likely_positive": 0.1}, 50)["likely_positive"] == max(
        100, 50 + (SHORTLIST_FACTOR - 1) * 5
    )


@pytest.mark.parametrize("embeddings", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortlist_holds_every_pick_of_the_ranked_strategies_from_the_full_pool(
    embeddings: bool, seed: int
) -> None:
    """With the uncertainties known everywhere, the full-pool batch's non-random picks are all shortlisted."""
    pool = _pool(20_000, seed, embeddings)
    batch = select_batch(pool, 200, MIX, np.random.default_rng(seed))
    short = set(pool.case_ids[choose_shortlist(pool, 200, MIX, seed)].tolist())
    ranked_picks = {sel.case_id for sel in batch if sel.strategy != "random"}
    assert ranked_picks <= short
    assert len(short) <= sum(d * (3 if s == "bald" else 1) for s, d in shortlist_depths(MIX, 200).items())
    assert len(short) < len(pool) // 5  # the MC stage scores a small slice of the pool


def test_random_and_diversity_add_no_cases() -> None:
    pool = _pool(5_000, 0, True)
    assert choose_shortlist(pool, 20, {"random": 0.5, "diversity": 0.5}).size == 0
    near = choose_shortlist(pool, 20, {"near_threshold": 1.0})
    assert set(near) == set(
        np.argsort(np.abs(pool.prob - pool.threshold), kind="stable")[:200]
    )  # 10 x quota 20


def test_store_uncertainty_writes_only_the_given_cases(engine: Engine) -> None:
    version = make_version(engine)
    pool = insert_cases(engine, 6)
    z = np.linspace(-2, 2, 6)
    write_predictions(engine, version, pool, z, 1 / (1 + np.exp(-z)), None)
    other = make_version(engine)
    write_predictions(engine, other, pool, z, 1 / (1 + np.exp(-z)), None)
    assert (
        store_uncertainty(engine, version, np.array(pool[1:3]), np.array([0.25, 0.5]), np.array([0.1, 0.2]))
        == 2
    )
    stored = load_predictions(engine, version, "pool")
    np.testing.assert_array_equal(stored.uncertainty, [np.nan, 0.25, 0.5, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(stored.mutual_information, [np.nan, 0.1, 0.2, np.nan, np.nan, np.nan])
    assert np.isnan(load_predictions(engine, other, "pool").uncertainty).all()  # keyed by version and case


def test_bald_chooses_only_among_measured_cases(engine: Engine) -> None:
    """Stored MC results for some pool cases only: bald picks among them by the stored mutual
    information (not the std, which ranks them the other way) and says so; too few is a clear error."""
    cases = make_cases(engine, {"val": 120, "test": 40})
    version = make_version(engine)
    predict_with_temperature(engine, version, cases["val"] + cases["test"], 1.0, seed=3)
    pool = insert_cases(engine, 40)
    z = np.linspace(-3, 3, 40)
    write_predictions(engine, version, pool, z, 1 / (1 + np.exp(-z)), None)
    calibrate_version(engine, version, ["temperature"], "max_f1", n_boot=20)
    store_uncertainty(
        engine, version, np.array(pool[:3]), np.array([0.01, 0.02, 0.03]), np.array([0.30, 0.05, 0.20])
    )
    assert pool_candidates(engine, get_settings(), version).uncertainty is not None
    with pytest.raises(WorkbenchError, match="only 3 of 40 pool cases have an MC-dropout uncertainty"):
        build_queue(engine, get_settings(), version, 5, mix={"bald": 1.0}, ranker="version")
    result = build_queue(engine, get_settings(), version, 2, mix={"bald": 1.0}, ranker="version")
    with session_scope(engine) as s:
        items = s.execute(select(QueueItem.case_id, QueueItem.reason).where(QueueItem.kind == "label")).all()
    assert result["queued"] == 2 and {c for c, _ in items} == {pool[0], pool[2]}  # largest information
    assert all("BALD mutual information" in r and "stored MC-dropout passes" in r for _, r in items), items


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny trained, calibrated version whose pool was scored by one deterministic pass (no MC)."""
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset
    from workbench.db.engine import create_db_engine
    from workbench.db.schema import upgrade
    from workbench.jobs.params import TrainParams
    from workbench.model.registry import train_version
    from workbench.model.scoring import infer_version

    root: Path = tmp_path_factory.mktemp("shortlist")
    settings = Settings(home=root / "home", database_url=f"sqlite:///{root / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        root / "data",
        n=120,
        positive_rate=0.3,
        seed=5,
        size=(48, 48),
        unlabelled_fraction=0.5,
        difficulty="easy",
    )
    import_source(engine, data.manifest)
    version = train_version(engine, settings, TrainParams.parse(TINY_TRAIN))["model_version"]
    infer_version(engine, settings, version, ["pool", "val", "test"], mc_samples=0)
    calibrate_version(engine, version, ["temperature"], "max_f1", n_boot=20)
    yield engine, settings, version
    engine.dispose()


def test_two_stage_queue_measures_the_shortlist_and_draws_the_batch_from_it(scored, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine, settings, version = scored
    monkeypatch.setattr(shortlist, "SHORTLIST_FLOOR", 4)  # a 60-case pool: keep the shortlist a slice of it
    monkeypatch.setattr(shortlist, "SHORTLIST_DEPTH", 2)
    mix = {"near_threshold": 0.5, "bald": 0.5}
    before = pool_candidates(engine, settings, version)
    assert before.uncertainty is None  # the deterministic pass stored no uncertainty
    expected = set(before.case_ids[choose_shortlist(before, 4, mix, seed=0)].tolist())
    assert 0 < len(expected) < len(before)

    result = build_queue(engine, settings, version, 4, mix=mix, mc_samples=4, ranker="version")

    stored = load_predictions(engine, version, "pool")
    measured = set(stored.case_ids[~np.isnan(stored.uncertainty)].tolist())
    with session_scope(engine) as s:
        items = s.execute(
            select(QueueItem.case_id, QueueItem.strategy).where(QueueItem.kind == "label")
        ).all()
    picked = {cid for cid, _ in items}
    assert result["queued"] == 4 and result["shortlist"]["measured"] == len(expected)
    assert picked <= expected  # every strategy of this mix chooses from the shortlist
    assert measured == expected  # MC passes ran for the shortlist alone ...
    assert np.all(stored.uncertainty[~np.isnan(stored.uncertainty)] >= 0)  # ... and stored real spreads
    after = pool_candidates(engine, settings, version)
    assert after.uncertainty is not None and (after.uncertainty == UNMEASURED).sum() == len(before) - len(
        expected
    )


def test_picks_outside_the_shortlist_are_measured_after_the_choice(scored, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The random audit share is drawn over the whole pool; what it picks gets its MC passes afterwards,
    so every queued case shows an uncertainty to the labeller."""
    engine, settings, version = scored
    monkeypatch.setattr(shortlist, "SHORTLIST_FLOOR", 2)
    monkeypatch.setattr(shortlist, "SHORTLIST_DEPTH", 1)
    with session_scope(engine) as s:
        earlier = set(s.scalars(select(QueueItem.case_id)))
    result = build_queue(
        engine,
        settings,
        version,
        6,
        mix={"random": 0.5, "likely_positive": 0.5},
        seed=3,
        mc_samples=4,
        ranker="version",
    )
    with session_scope(engine) as s:
        picked = set(s.scalars(select(QueueItem.case_id))) - earlier
    stored = load_predictions(engine, version, "pool")
    unc = dict(zip(stored.case_ids.tolist(), stored.uncertainty.tolist(), strict=True))
    assert len(picked) == 6 and all(not np.isnan(unc[c]) for c in picked), (
        result["shortlist"],
        {c: unc[c] for c in picked},
    )
    assert result["shortlist"]["measured"] + result["shortlist"]["measured_after_choice"] >= 1


def test_sampled_strategies_in_the_shortlist() -> None:
    """power:bald is shortlisted like bald (by its proxies) and refused on unmeasured picks; a sampled
    score strategy adds no cases (it can draw any case: measured after the choice, like random)."""
    from workbench.active.shortlist import check_measured

    depths = shortlist_depths({"power:bald": 0.5, "power:near_threshold": 0.5}, 20)
    assert set(depths) == {"power:bald"}
    pool = _pool(400, seed=2, embeddings=False)
    assert len(choose_shortlist(pool, 20, {"power:bald": 1.0})) >= depths["power:bald"]
    unmeasured = dataclasses.replace(pool, uncertainty=np.full(len(pool), UNMEASURED))
    picked = [Selected(int(pool.case_ids[0]), "power:bald", 0.0, "test")]
    with pytest.raises(WorkbenchError, match="MC-dropout uncertainty"):
        check_measured(picked, unmeasured)
    check_measured([Selected(int(pool.case_ids[0]), "power:near_threshold", 0.0, "test")], unmeasured)


def test_tta_spread_is_measured_for_the_shortlist_and_ranks_the_batch(scored, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A mix with tta_spread: the queue step measures the TTA spread of its shortlist (full model, four
    pair-consistent views), picks among those cases, and says so in the reason."""
    engine, settings, version = scored
    monkeypatch.setattr(shortlist, "SHORTLIST_FLOOR", 6)
    monkeypatch.setattr(shortlist, "SHORTLIST_DEPTH", 2)
    before = pool_candidates(engine, settings, version)
    chosen = set(before.case_ids[choose_shortlist(before, 3, {"tta_spread": 1.0}, seed=1)].tolist())
    result = build_queue(engine, settings, version, 3, mix={"tta_spread": 1.0}, seed=1, ranker="version")
    assert result["queued"] == 3 and result["shortlist"]["tta_measured"] == len(chosen) < len(before)
    with session_scope(engine) as s:
        items = s.execute(
            select(QueueItem.case_id, QueueItem.reason).where(QueueItem.strategy == "tta_spread")
        ).all()
    assert len(items) == 3 and {c for c, _ in items} <= chosen
    assert all("over 4 pair-consistent views" in r for _, r in items), items
