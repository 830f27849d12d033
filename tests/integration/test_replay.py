"""The simulator replays the production round: real workbenches, the round job, the labelling queue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from workbench.data.synth import generate_dataset
from workbench.db.engine import session_scope
from workbench.db.models import Job, Label, QueueItem
from workbench.errors import ValidationError
from workbench.experiments.replay import (
    ReplayConfig,
    check_replay,
    copy_workbench,
    read_cases,
    replay,
    requeue,
    strategy_mix,
)

TINY = {
    "model": {"input_size": [32, 32], "token_dim": 16, "heads": 2, "key_dim": 8, "cnn_width": 8},
    "train": {"phase1_batch": 8, "patience": 100, "learning_check": "warn"},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replay-data")
    summary = generate_dataset(
        root, n=160, positive_rate=0.25, seed=5, size=(40, 40), difficulty="easy", label_noise=0.05
    )
    return Path(summary.manifest)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ReplayConfig, dict]:
    cfg = ReplayConfig(
        dataset=data,
        out=tmp_path_factory.mktemp("replay-out"),
        seeds=[3],
        strategies=["default", "random"],
        initial=20,
        rounds=2,
        batch=6,
        epochs=2,
        overrides=TINY,
        mc_samples=4,
    )
    return cfg, replay(cfg)


def test_replay_runs_the_production_round_and_the_queue(run) -> None:  # type: ignore[no-untyped-def]
    cfg, out = run
    curves = out["curves"]
    assert out["scored_against"] == "truth"  # ground_truth.csv next to the manifest
    for name in cfg.strategies:
        mine = [r for r in curves if r["strategy"] == name]
        assert [r["round"] for r in mine] == [0, 1, 2]
        assert mine[-1]["queried"] == cfg.rounds * cfg.batch and mine[-1]["labels"] == cfg.initial + 12
        assert all(r.get("test_auprc") is not None for r in mine[1:])
    folder = cfg.out / "seed-3" / "default"
    from workbench.experiments.replay import _open

    wb = _open(folder)
    with session_scope(wb.engine) as s:
        rounds = s.scalars(select(Job).where(Job.kind == "round", Job.parent_id.is_(None))).all()
        labels = s.scalars(select(Label).where(Label.labeller == "oracle")).all()
        items = s.scalars(select(QueueItem).where(QueueItem.kind == "label")).all()
    wb.engine.dispose()
    assert len(rounds) == 2 and all(j.status == "succeeded" for j in rounds)  # the production job, twice
    assert len(labels) == 12 and all(i.status == "done" for i in items)  # answered through the queue
    text = (cfg.out / "summary.md").read_text()
    assert "95% t-interval over seeds" in text and "| default |" in text and "| random |" in text


def test_a_copied_round_requeued_with_the_same_mix_is_the_production_batch(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The replay's shortcut for round 1 of later strategies (copy, then rebuild the queue with the queue
    step's function) selects exactly the batch the production round queued, for the same mix and seed."""
    from workbench.experiments.replay import _open

    cfg, _ = run
    first = _open(cfg.out / "seed-3" / "_round1")
    with session_scope(first.engine) as s:
        job = s.scalars(select(Job).where(Job.kind == "round", Job.parent_id.is_(None))).one()
        produced = [
            (q.case_id, q.strategy)
            for q in s.scalars(
                select(QueueItem).where(QueueItem.kind == "label").order_by(QueueItem.priority.desc())
            )
        ]
        result = dict(job.result)
    copy = copy_workbench(first, tmp_path / "copy")
    assert requeue(copy, result, strategy_mix("default"), cfg, seed=3) == len(produced)
    with session_scope(copy.engine) as s:
        rebuilt = [
            (q.case_id, q.strategy)
            for q in s.scalars(
                select(QueueItem).where(QueueItem.kind == "label").order_by(QueueItem.priority.desc())
            )
        ]
    first.engine.dispose()
    copy.engine.dispose()
    assert rebuilt == produced and len(produced) == cfg.batch


def test_bad_replays_are_refused(data: Path, tmp_path: Path) -> None:
    base = {"dataset": data, "out": tmp_path, "seeds": [0]}
    for bad, match in (
        ({"seeds": []}, "at least one seed"),
        ({"strategies": ["default", "default"]}, "distinct"),
        ({"strategies": ["nonsense"]}, "unknown strategy"),
        ({"batch": 0}, "batch must be >= 1"),
        ({"reader_noise": 0.7}, "reader_noise"),
    ):
        with pytest.raises(ValidationError, match=match):
            check_replay(ReplayConfig(**{**base, **bad}))
    cases, against = read_cases(data)
    assert against == "truth" and len(cases) == 160
    recorded = np.array([c.recorded for c in cases])
    truth = np.array([c.truth for c in cases])
    assert (recorded != truth).sum() == round(0.05 * 160)  # the oracle answers with what the reader said


def test_cli_replay_bad_input_is_one_line(data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workbench_cli import app

    for args, said in (
        (["-s", "magic"], "error: unknown strategy 'magic'"),
        (["--overrides", "{nope"], "error: --overrides is not JSON"),
        (["--reader-noise", "0.9"], "error: reader_noise must be in [0, 0.5)"),
    ):
        res = CliRunner().invoke(app, ["replay", str(data), "--out", str(tmp_path / "o"), *args])
        assert res.exit_code == 1, res.output
        assert res.stderr.strip().startswith(said) and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_after_a_round_that_did_not_learn_random_queues_unlabelled_pool_cases(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The replay's fallback for random: n unlabelled pool cases, never val/test or labelled ones, each
    saying why; the same stream gives the same picks."""
    from workbench.active.cold_start import unlabelled_pool
    from workbench.db.models import Case
    from workbench.experiments.replay import _open, queue_random

    cfg, _ = run
    first = _open(cfg.out / "seed-3" / "_round1")
    picks = []
    for k in range(2):
        wb = copy_workbench(first, tmp_path / f"copy{k}")
        before = {row[0] for row in unlabelled_pool(wb.engine)}
        assert queue_random(wb, 5, np.random.default_rng(7), round_id=1) == 5
        with session_scope(wb.engine) as s:
            rows = s.execute(
                select(QueueItem.case_id, QueueItem.reason, Case.split)
                .join(Case, Case.id == QueueItem.case_id)
                .where(QueueItem.strategy == "random", QueueItem.round_id == 1)
                .where(QueueItem.case_id.in_(before))  # not the round's own random audit slice
            ).all()
        wb.engine.dispose()
        assert len(rows) == 5 and {c for c, _, _ in rows} <= before and {sp for _, _, sp in rows} == {"pool"}
        assert all("did not learn" in r for _, r, _ in rows)
        picks.append(sorted(c for c, _, _ in rows))
    first.engine.dispose()
    assert picks[0] == picks[1]


def test_after_a_round_that_did_not_learn_the_default_gets_the_production_guided_batch(
    run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """What the round queues after a version that did not learn (``active.guided``) replaces the copied
    round's batch for every strategy but random: pool cases only, each reason naming the baseline."""
    from workbench.active.cold_start import unlabelled_pool
    from workbench.active.guided import GUIDED_PREFIX
    from workbench.db.models import Case
    from workbench.experiments.replay import _open, requeue_unlearned

    cfg, _ = run
    first = _open(cfg.out / "seed-3" / "_round1")
    wb = copy_workbench(first, tmp_path / "copy")
    first.engine.dispose()
    before = {row[0] for row in unlabelled_pool(wb.engine)}
    with session_scope(wb.engine) as s:
        round_items = list(
            s.scalars(select(QueueItem.case_id).where(QueueItem.round_id == 1, QueueItem.kind == "label"))
        )
    mix = strategy_mix("default")
    assert requeue_unlearned(wb, 1, "default", mix, cfg, 3, np.random.default_rng(7)) == cfg.batch
    with session_scope(wb.engine) as s:
        rows = s.execute(
            select(QueueItem.case_id, QueueItem.reason, Case.split)
            .join(Case, Case.id == QueueItem.case_id)
            .where(QueueItem.round_id == 1, QueueItem.kind == "label")
        ).all()
    wb.engine.dispose()
    assert len(rows) == cfg.batch and {sp for _, _, sp in rows} == {"pool"}
    assert all(r.startswith(GUIDED_PREFIX) for _, r, _ in rows)  # the copied round's own batch is gone
    # chosen from the unlabelled pool as it stood once the round's own batch was removed
    assert {c for c, _, _ in rows} - before <= set(round_items)
