"""Warm-started training on cached frozen-backbone features, and inference through the same cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from workbench.config import Settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Case, ModelVersion
from workbench.db.schema import upgrade
from workbench.jobs.params import TrainParams
from workbench.model.predictions import load_predictions
from workbench.model.registry import load_version_model, train_version
from workbench.model.scoring import infer_version

TINY = {
    "model": {"input_size": [32, 32], "token_dim": 16, "heads": 2, "key_dim": 8, "cnn_width": 8},
    # plumbing on too little data to learn from: the learning check is recorded, not enforced
    "train": {"phase1_batch": 8, "patience": 100, "learning_check": "warn"},
}


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("warm")
    settings = Settings(home=root / "home", database_url=f"sqlite:///{root / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        root / "data",
        n=60,
        positive_rate=0.25,
        seed=2,
        size=(48, 48),
        unlabelled_fraction=0.3,
        difficulty="easy",
    )
    import_source(engine, data.manifest)
    yield engine, settings
    engine.dispose()


def test_warm_start_uses_feature_cache_and_cached_inference_matches_full_model(wb) -> None:  # type: ignore[no-untyped-def]
    engine, settings = wb
    parent = train_version(engine, settings, TrainParams(preset="cpu", epochs=2, overrides=TINY))[
        "model_version"
    ]
    child = train_version(
        engine,
        settings,
        TrainParams(preset="cpu", epochs=2, overrides=TINY, parent_version=parent, use_feature_cache=True),
    )["model_version"]
    with session_scope(engine) as s:
        version = s.get(ModelVersion, child)
        assert version.parent_id == parent and version.status == "ready"
        assert version.metrics["training"]["used_feature_cache"] is True
        pool = s.scalars(select(Case).where(Case.split == "pool").order_by(Case.id)).all()
    cache_root = Path(settings.artifacts) / "features"
    assert any(cache_root.rglob("*.npy"))  # features were cached once per image
    result = infer_version(engine, settings, child, ["pool"], mc_samples=4)
    assert result["feature_cache"] is True and result["scored"] == len(pool)
    stored = load_predictions(engine, child, "pool")
    # The same numbers as the full model run on the images.
    from workbench.model.inference import predict_pairs

    full = predict_pairs(load_version_model(engine, child), [(c.pre_path, c.post_path) for c in pool])
    np.testing.assert_allclose(stored.logit, full["logit"], atol=1e-4)
    assert np.all(stored.uncertainty >= 0)
