"""The queue's ranker on a real import (real synthetic image files, SQLite and PostgreSQL): ``auto``
ranks the pool by the non-learned baseline when a calibrated version ranks validation worse, keeps the
version when it ranks as well; ``version`` reads no image; the CLI refuses an unknown ranker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from factories import label_of, make_version
from workbench.active.building import build_queue
from workbench.calibration.service import calibrate_version
from workbench.config import Settings, get_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import session_scope
from workbench.db.models import Case, QueueItem
from workbench.errors import WorkbenchError
from workbench.evaluation.baseline import cache_dir, fit_baseline, score_cases
from workbench.model.predictions import write_predictions


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 easy pairs (the baseline separates them), 30% positive, 40% of them unlabelled (pool)."""
    root = tmp_path_factory.mktemp("ranker") / "data"
    generate_dataset(root, n=80, positive_rate=0.3, seed=5, size=(48, 48), unlabelled_fraction=0.4)
    return root / "manifest.csv"


def _calibrated_version(engine: Engine, val_logit_of_label: float, seed: int) -> tuple[int, list[int]]:
    """A ready, calibrated version: val logits ``val_logit_of_label * y`` plus noise, random pool logits.
    Returns the version and the unlabelled pool cases it scored."""
    rng = np.random.default_rng(seed)
    with session_scope(engine) as s:
        by_split = s.execute(select(Case.id, Case.split)).all()
    val = [c for c, split in by_split if split == "val"]
    pool = [c for c, split in by_split if split == "pool"]
    pool = [c for c, y in zip(pool, label_of(engine, pool), strict=True) if np.isnan(y)]
    version = make_version(engine)
    y_val = label_of(engine, val)
    assert 0 < np.nansum(y_val) < np.sum(~np.isnan(y_val))  # both classes to compare on
    z = val_logit_of_label * np.nan_to_num(y_val) + rng.normal(0, 0.1, len(val))
    write_predictions(engine, version, val, z, 1 / (1 + np.exp(-z)), None)
    zp = rng.normal(0, 1, len(pool))
    write_predictions(engine, version, pool, zp, 1 / (1 + np.exp(-zp)), None)
    calibrate_version(engine, version, ["identity"], "max_f1", n_boot=20)
    return version, pool


def _items(engine: Engine) -> list[tuple[int, str, float, str]]:
    with session_scope(engine) as s:
        return [
            tuple(row)
            for row in s.execute(
                select(QueueItem.case_id, QueueItem.strategy, QueueItem.score, QueueItem.reason).where(
                    QueueItem.kind == "label"
                )
            )
        ]


def test_auto_ranks_by_the_baseline_when_the_version_ranks_validation_worse(
    engine: Engine, db_url: str, data: Path, tmp_path: Path
) -> None:
    import_source(engine, data)
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    version, pool = _calibrated_version(engine, -4.0, seed=1)  # ranks validation upside down

    out = build_queue(engine, settings, version, 6, mix={"likely_positive": 0.5, "bald": 0.5}, seed=2)
    ranker = out["ranker"]
    assert ranker["ranker"] == "baseline" and ranker["asked"] == "auto"
    assert ranker["baseline_auprc"] > ranker["version_auprc"] and ranker["n"] > 0
    assert "bald need a model's passes" in out["mix_note"]  # the baseline has no MC passes
    assert " on val (n=" in out["baseline_threshold_note"]
    items = _items(engine)
    assert out["queued"] == len(items) == 6 and {i[0] for i in items} <= set(pool)
    assert all(i[3].startswith("baseline ranker (val AUPRC baseline") for i in items)
    # the likely-positive picks are the top of the baseline fitted on the train/pool labels
    prob = score_cases(engine, settings, fit_baseline(engine, settings, splits=("train", "pool")), pool)
    by_case = dict(zip(pool, prob, strict=True))
    top = [i for i in items if i[1] == "likely_positive"]
    assert top and all(i[2] == pytest.approx(by_case[i[0]]) for i in top)  # scored by the baseline
    assert min(i[2] for i in top) >= float(np.median(prob))


def test_auto_keeps_a_version_that_ranks_validation_as_well_and_version_reads_no_image(
    engine: Engine, db_url: str, data: Path, tmp_path: Path
) -> None:
    import_source(engine, data)
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    version, pool = _calibrated_version(engine, 6.0, seed=3)  # ranks validation perfectly

    out = build_queue(engine, settings, version, 4, mix={"likely_positive": 1.0}, seed=2)
    assert out["ranker"]["ranker"] == "version" and out["ranker"]["version_auprc"] == 1.0
    assert not any(i[3].startswith("baseline ranker") for i in _items(engine))

    assert any(cache_dir(settings).rglob("*.npy"))  # auto computed the baseline to compare with
    forced = Settings(home=tmp_path / "other-home", database_url=db_url)
    out = build_queue(engine, forced, version, 2, mix={"likely_positive": 1.0}, ranker="version")
    assert out["ranker"]["ranker"] == "version" and out["ranker"]["note"] == "asked for"
    assert out["ranker"]["version_auprc"] is None and out["queued"] == 2
    assert not cache_dir(forced).exists()  # no baseline feature was computed: no image was read


def test_queue_build_command_takes_and_checks_the_ranker(
    engine: Engine, db_url: str, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench_cli import app

    import_source(engine, data)
    version, _ = _calibrated_version(engine, -4.0, seed=1)
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", db_url)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    bad = runner.invoke(app, ["queue", "build", str(version), "--ranker", "oracle"])
    assert bad.exit_code != 0 and "ranker" in bad.output and "'auto', 'version' or 'baseline'" in bad.output
    assert _items(engine) == []  # nothing queued
    res = runner.invoke(app, ["queue", "build", str(version), "--batch-size", "3", "--ranker", "baseline"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ranker"]["ranker"] == "baseline" and len(_items(engine)) == 3


def test_auto_falls_back_to_the_version_when_a_pool_pair_no_longer_decodes(
    engine: Engine, db_url: str, data: Path, tmp_path: Path
) -> None:
    import shutil

    own = tmp_path / "data"  # a copy: the module's files stay intact for the other tests
    shutil.copytree(data.parent, own)
    import_source(engine, own / data.name)
    version, pool = _calibrated_version(engine, -4.0, seed=1)  # the baseline wins validation
    with session_scope(engine) as s:
        broken = s.get(Case, pool[0])
        assert Path(broken.post_path).is_relative_to(own)
        Path(broken.post_path).write_bytes(b"not an image")  # after import: the sha no longer matches
    fresh = Settings(home=tmp_path / "fresh-home", database_url=db_url)  # nothing cached
    out = build_queue(engine, fresh, version, 3, mix={"likely_positive": 1.0})
    assert out["ranker"]["ranker"] == "version" and out["queued"] == 3
    assert "baseline could not score the pool" in out["ranker"]["note"]
    assert not any(i[3].startswith("baseline ranker") for i in _items(engine))
    with pytest.raises(WorkbenchError, match=broken.external_id):
        build_queue(engine, fresh, version, 3, ranker="baseline")


def test_auto_without_both_classes_in_validation_keeps_the_version_before_reading_an_image(
    engine: Engine, db_url: str, data: Path, tmp_path: Path
) -> None:
    from workbench.active.ranker import choose_ranker

    import_source(engine, data)
    with session_scope(engine) as s:
        val = [c for c, split in s.execute(select(Case.id, Case.split)).all() if split == "val"]
    negatives = [c for c, y in zip(val, label_of(engine, val), strict=True) if y == 0]
    version = make_version(engine)  # its validation predictions hold no positive case
    z = np.random.default_rng(0).normal(0, 1, len(negatives))
    write_predictions(engine, version, negatives, z, 1 / (1 + np.exp(-z)), None)
    settings = Settings(home=tmp_path / "home", database_url=db_url)

    choice, ranking = choose_ranker(engine, settings, version, "auto")
    assert choice.ranker == "version" and ranking is None
    assert choice.note == f"validation has {len(negatives)} labelled, 0 positive: nothing to compare on"
    assert not cache_dir(settings).exists()  # no baseline feature was computed: no image was read
    forced, ranking = choose_ranker(engine, settings, version, "baseline")  # asked for: no comparison needed
    assert forced.ranker == "baseline" and ranking is not None and cache_dir(settings).exists()
