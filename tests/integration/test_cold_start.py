"""``workbench queue cold-start``: TypiClust picks from the unlabelled pool of a real import (real
synthetic image files, SQLite and PostgreSQL), queued as label items; never a val/test case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from workbench.config import get_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import session_scope
from workbench.db.models import Case, QueueItem, Round


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small hard pairs, half without a label (those land in the pool)."""
    root = tmp_path_factory.mktemp("cold") / "data"
    generate_dataset(
        root, n=40, positive_rate=0.2, seed=2, size=(48, 48), unlabelled_fraction=0.5, difficulty="hard"
    )
    return root


def _cli(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str):  # type: ignore[no-untyped-def]
    from workbench_cli import app

    monkeypatch.setenv("WORKBENCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["queue", "cold-start", *args])


def test_cold_start_queues_typical_pool_cases_only(
    engine: Engine, db_url: str, synth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_source(engine, synth / "manifest.csv")
    with session_scope(engine) as s:
        splits = dict(s.execute(select(Case.id, Case.split)).all())
    pool = [c for c, split in splits.items() if split == "pool"]
    assert len(pool) >= 10 and any(split in ("val", "test") for split in splits.values())

    res = _cli(monkeypatch, db_url, "--n", "4")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["queued"] == 4
    with session_scope(engine) as s:
        items = s.execute(
            select(QueueItem.case_id, QueueItem.kind, QueueItem.strategy, QueueItem.reason)
        ).all()
    assert len(items) == 4 and {splits[i.case_id] for i in items} == {"pool"}
    assert {(i.kind, i.strategy) for i in items} == {("label", "cold_start")}
    assert all("cold start (TypiClust): most typical of cluster" in i.reason for i in items)

    res = _cli(monkeypatch, db_url, "--n", "0")
    assert res.exit_code != 0 and "must be at least 1, got 0" in res.output
    left = len(pool) - 4  # queued cases are no longer candidates
    res = _cli(monkeypatch, db_url, "--n", str(left + 1))
    assert res.exit_code != 0 and f"the pool holds {left} unlabelled case(s)" in res.output
    assert _cli(monkeypatch, db_url, "--n", str(left)).exit_code == 0  # every remaining case
    res = _cli(monkeypatch, db_url, "--n", "1")
    assert res.exit_code != 0 and "no unlabelled pool cases" in res.output
    with session_scope(engine) as s:
        queued = list(s.scalars(select(QueueItem.case_id)))
    assert sorted(queued) == sorted(pool)


# --- the baseline-guided batch (``active.guided``): what a round that did not learn leaves the labellers


def _guided_data(root: Path, positive_rate: float, seed: int) -> Path:
    generate_dataset(
        root,
        n=80,
        positive_rate=positive_rate,
        seed=seed,
        size=(48, 48),
        unlabelled_fraction=0.4,
        difficulty="hard",
    )
    return root / "manifest.csv"


def test_guided_batch_ranks_pool_cases_by_the_baseline_fitted_on_the_labels(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    import numpy as np

    from workbench.active.guided import GUIDED_PREFIX, queue_guided
    from workbench.config import Settings
    from workbench.data.labels import training_labels
    from workbench.evaluation.baseline import fit_baseline, score_cases

    import_source(engine, _guided_data(tmp_path / "data", 0.3, seed=4))
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    labels = training_labels(engine, splits=("train", "pool"))
    out = queue_guided(engine, settings, 6, seed=1)
    assert out["queued"] == 6 and out["strategy"] == "baseline_guided" and "fallback" not in out
    assert out["fitted_on"] == {"split": "train+pool", "n": len(labels), "positives": sum(labels.values())}
    assert "by policy" in out["threshold_note"] and " on val (n=" in out["threshold_note"]
    with session_scope(engine) as s:
        splits = dict(s.execute(select(Case.id, Case.split)).all())
        items = s.execute(
            select(QueueItem.case_id, QueueItem.strategy, QueueItem.score, QueueItem.reason).where(
                QueueItem.kind == "label"
            )
        ).all()
    assert len(items) == 6 and {splits[i.case_id] for i in items} == {"pool"}  # never val/test/labelled
    assert not {i.case_id for i in items} & set(labels)
    assert {i.strategy for i in items} <= {"near_threshold", "likely_positive", "random"}
    assert all(i.reason.startswith(GUIDED_PREFIX + f", fitted on {len(labels)} labels") for i in items)
    # the likely-positive picks are the baseline's own high scores over the unlabelled pool
    pool = [c for c, sp in splits.items() if sp == "pool" and c not in labels]
    prob = score_cases(engine, settings, fit_baseline(engine, settings, splits=("train", "pool")), pool)
    top = [i.score for i in items if i.strategy == "likely_positive"]
    assert top and min(top) >= float(np.median(prob))

    # a mix that needs a network's passes runs as the default mix, and says so
    out = queue_guided(engine, settings, 2, mix={"bald": 0.5, "random": 0.5}, seed=1)
    assert out["queued"] == 2 and "bald need a model's passes" in out["mix_note"]
    # a fixed policy is the threshold as given (no validation labels needed)
    out = queue_guided(engine, settings, 1, policy="fixed:0.25", seed=3)
    assert out["threshold"] == 0.25 and out["threshold_note"] == "0.250 by policy fixed:0.25"


def test_queue_guided_command(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench_cli import app

    import_source(engine, _guided_data(tmp_path / "data", 0.3, seed=4))
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", db_url)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()

    def guided(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(app, ["queue", "guided", *args])

    for args, said in (
        (["--n", "0"], "must be at least 1, got 0"),
        (["--n", "3", "--policy", "sensitivity>=2"], "invalid threshold policy 'sensitivity>=2'"),
        (["--n", "3", "--mix", '{"near_threshold": 0.7}'], "sum to 1"),
    ):
        res = guided(*args)
        assert res.exit_code != 0 and said in res.output, (args, res.output)
    with session_scope(engine) as s:  # nothing was queued by the refused calls
        assert not s.scalars(select(QueueItem.id).where(QueueItem.kind == "label")).all()
    res = guided("--n", "3", "--policy", "max_f1", "--seed", "2")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (
        out["queued"] == 3
        and out["strategy"] == "baseline_guided"
        and "policy max_f1" in out["threshold_note"]
    )


def test_guided_batch_falls_back_to_the_cold_start_without_enough_labels_of_a_class(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    from workbench.active.guided import MIN_PER_CLASS, queue_guided
    from workbench.config import Settings
    from workbench.data.labels import training_labels

    import_source(engine, _guided_data(tmp_path / "data", 0.02, seed=5))
    positives = sum(training_labels(engine, splits=("train", "pool")).values())
    assert positives < MIN_PER_CLASS
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    with session_scope(engine) as s:  # the round this batch belongs to (a round that did not learn)
        s.add(Round(number=1, status="did_not_learn"))
    out = queue_guided(engine, settings, 3, seed=0, round_id=1)
    assert out["queued"] == 3 and f"fewer than {MIN_PER_CLASS} of a class" in out["fallback"]
    with session_scope(engine) as s:
        items = s.execute(
            select(QueueItem.strategy, QueueItem.round_id).where(QueueItem.kind == "label")
        ).all()
    assert {tuple(i) for i in items} == {("cold_start", 1)} and len(items) == 3  # tied to the round
    # a redelivered round finds its batch and adds none, and says who chose it
    again = queue_guided(engine, settings, 3, seed=0, round_id=1)
    assert again == {"queued": 0, "already_queued": 3, "strategy": "cold_start"}
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(QueueItem).where(QueueItem.kind == "label")) == 3


def test_the_current_round_is_one_that_did_not_learn_but_queued_a_batch(
    engine: Engine, tmp_path: Path
) -> None:
    """The Label page's progress follows the round whose items labellers are working through."""
    from workbench.active.labelling_queue import enqueue
    from workbench.active.strategies import Selected
    from workbench.read.rounds import current_round

    import_source(engine, _guided_data(tmp_path / "data", 0.3, seed=4))
    with session_scope(engine) as s:
        s.add_all(
            [
                Round(number=1, status="labelling"),
                Round(number=2, status="did_not_learn"),
                Round(number=3, status="did_not_learn"),  # queued nothing (an empty pool, say)
            ]
        )
        pool = list(s.scalars(select(Case.id).where(Case.split == "pool").limit(2)))
        ids = dict(s.execute(select(Round.number, Round.id)).all())
    assert current_round(engine).number == 1
    enqueue(engine, [Selected(c, "likely_positive", 0.9, "guided") for c in pool], round_id=ids[2])
    assert current_round(engine).number == 2
