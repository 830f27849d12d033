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
from workbench.db.models import Case, ModelVersion, QueueItem, Round
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


def test_backbone_refresh_schedule_and_fresh_features(wb) -> None:  # type: ignore[no-untyped-def]
    """A frozen-backbone chain triggers the refresh by rounds and by label growth; the refreshed child's
    backbone has new weights, so its features are computed anew under its own cache folder and cached
    inference still equals the full model on the images (stale features of the parent would not)."""
    from workbench.model.backbone_refresh import refresh_decision
    from workbench.model.builder import backbones
    from workbench.model.features import FeatureCache, backbone_identity
    from workbench.model.inference import predict_pairs

    engine, settings = wb
    scratch = train_version(engine, settings, TrainParams(preset="cpu", epochs=1, overrides=TINY))[
        "model_version"
    ]
    frozen = train_version(
        engine,
        settings,
        TrainParams(preset="cpu", epochs=1, overrides=TINY, parent_version=scratch, use_feature_cache=True),
    )["model_version"]
    with session_scope(engine) as s:
        counts = s.get(ModelVersion, scratch).data_counts
    labelled = counts["train"]["n"] + counts.get("tune", {}).get("n", 0)
    assert not refresh_decision(engine, scratch, labelled, 3, 0.5).refresh  # nothing frozen yet
    kept = refresh_decision(engine, frozen, labelled, 3, 0.5)
    assert not kept.refresh and kept.frozen_rounds == 1 and kept.trained_in == scratch
    assert refresh_decision(engine, frozen, labelled, 2, 0.0).refresh  # the 2nd frozen round in a row
    grown = refresh_decision(engine, frozen, int(labelled * 1.5), 0, 0.5)
    assert grown.refresh and f"grew from {labelled} to {int(labelled * 1.5)}" in grown.reason

    refreshed = train_version(
        engine,
        settings,
        TrainParams(
            preset="cpu",
            epochs=1,
            fine_tune_epochs=1,
            phases=2,
            overrides=TINY,
            parent_version=frozen,
            use_feature_cache=True,
        ),
    )["model_version"]
    old_model, new_model = load_version_model(engine, frozen), load_version_model(engine, refreshed)
    old_id = backbone_identity(backbones(old_model)["pre"])
    new_id = backbone_identity(backbones(new_model)["pre"])
    assert old_id != new_id  # fine-tuned: another key, so no stale features are read
    assert not refresh_decision(engine, refreshed, labelled, 2, 0.0).refresh  # the refresh reset the count
    infer_version(engine, settings, refreshed, ["pool"], mc_samples=0)
    cache = FeatureCache(Path(settings.artifacts) / "features")
    assert any(cache.folder(new_id, (32, 32)).glob("*.npy"))
    with session_scope(engine) as s:
        pool = s.scalars(select(Case).where(Case.split == "pool").order_by(Case.id)).all()
    stored = load_predictions(engine, refreshed, "pool")
    full = predict_pairs(new_model, [(c.pre_path, c.post_path) for c in pool])
    np.testing.assert_allclose(stored.logit, full["logit"], atol=1e-4)


def test_a_round_on_schedule_refreshes_the_backbone(wb) -> None:  # type: ignore[no-untyped-def]
    """Through the round job (in process): with WORKBENCH_BACKBONE_REFRESH_ROUNDS=1 the warm-started
    round adds the fine-tuning phase and reports why; with the schedule off it keeps the backbone frozen."""
    from workbench.actors import LOCAL_OPERATOR
    from workbench.jobs.runner import run_job
    from workbench.jobs.submit import submit_job
    from workbench.rounds import round_summary

    engine, settings = wb
    params = {
        "train": {"preset": "cpu", "epochs": 1, "fine_tune_epochs": 1, "overrides": TINY},
        "batch_size": 3,
        "methods": ["temperature"],
        "policy": "max_f1",
        "mc_samples": 0,
    }

    def round_result(round_params: dict = params, **schedule: float) -> dict:
        job = submit_job(
            engine, "round", round_params, requester=LOCAL_OPERATOR, send=lambda *_: "in-process"
        )
        view = run_job(engine, settings.model_copy(update=schedule), job, "test-worker")
        assert view is not None and view.status == "succeeded", view.error if view else None
        return view.result or {}

    first = round_result()
    assert first["backbone"] is None  # nothing to warm-start from: trained end to end
    with session_scope(engine) as s:
        ranker = s.get(Round, first["round"]).report["queue"]["ranker"]
    assert ranker["asked"] == "auto" and ranker["ranker"] in ("version", "baseline") and ranker["note"]
    # the round passes its ranker to the queue step: forced to the baseline, every pick says so
    kept = round_result(
        {**params, "ranker": "baseline"}, backbone_refresh_rounds=0, backbone_refresh_growth=0.0
    )
    assert kept["backbone"]["refresh"] is False
    with session_scope(engine) as s:
        assert s.get(Round, kept["round"]).report["queue"]["ranker"]["ranker"] == "baseline"
        reasons = s.scalars(select(QueueItem.reason).where(QueueItem.round_id == kept["round"])).all()
    assert reasons and all(r.startswith("baseline ranker (asked for") for r in reasons)
    assert round_summary(engine, kept["round"], stopping=False)["ranked_by"]["ranker"] == "baseline"
    refreshed = round_result(backbone_refresh_rounds=1)
    assert refreshed["backbone"]["refresh"] is True and "every 1 rounds" in refreshed["backbone"]["reason"]
    with session_scope(engine) as s:
        phases = {
            v: s.get(ModelVersion, v).config["train"]["phases"]
            for v in (kept["model_version"], refreshed["model_version"])
        }
        cached = s.get(ModelVersion, kept["model_version"]).config["params"]["use_feature_cache"]
    assert phases == {kept["model_version"]: 1, refreshed["model_version"]: 2}
    # TINY keeps the preset's 4-block map (2x2x64 values against a 32x32x3 image): the warm-started round
    # trained the head on cached features (model.features.cache_pays)
    assert cached is True

    # A 1-block map with whiteness channels (as large as the image): caching would not pay, so the round
    # warm-started from such a version trains the head on the images, and still follows the schedule.
    fine = {**TINY, "model": {**TINY["model"], "cnn_blocks": 1, "whiteness_prior": True, "input_norm": True}}
    fine_params = {**params, "train": {**params["train"], "overrides": fine}}
    round_result({**fine_params, "warm_start": False})
    on_images = round_result(fine_params, backbone_refresh_rounds=0, backbone_refresh_growth=0.0)
    assert on_images["backbone"]["refresh"] is False and "head only" in on_images["backbone"]["reason"]
    with session_scope(engine) as s:
        version = s.get(ModelVersion, on_images["model_version"])
        assert version.config["params"]["use_feature_cache"] is False
        assert version.metrics["training"]["used_feature_cache"] is False


def test_small_training_sets_get_a_floor_of_optimizer_steps(wb) -> None:  # type: ignore[no-untyped-def]
    """Phase 1's epochs and patience are raised to the configured optimizer steps when the preset's
    epochs are used (recorded with the version), and taken as is with an explicit --epochs."""
    import math

    from workbench.model.config import preset, run_configs

    engine, settings = wb
    floor = {"phase1_epochs": 1, "min_steps": 12, "min_patience_steps": 12}
    params = TrainParams(
        preset="cpu", overrides={"model": TINY["model"], "train": {**TINY["train"], **floor}}
    )
    epoch_ends: list[float] = []

    def on_progress(fraction: float, _message: str, epoch_end: bool) -> None:
        if epoch_end:
            epoch_ends.append(fraction)

    version = train_version(engine, settings, params, progress=on_progress)["model_version"]
    with session_scope(engine) as s:
        row = s.get(ModelVersion, version)
        record, runs, fit = (
            row.metrics["training"]["step_floor"],
            row.metrics["training"]["epochs_run"],
            row.data_counts,
        )
    steps = math.ceil(fit["train"]["n"] / 8)
    assert record == {
        "steps_per_epoch": steps,
        "epochs": max(1, math.ceil(12 / steps)),
        "patience": max(100, math.ceil(12 / steps)),
    }
    assert runs == record["epochs"] > 1  # patience 100 never stops it: every raised epoch ran
    assert epoch_ends[0] == pytest.approx(1 / record["epochs"])  # progress counts the raised epochs
    cpu = preset("cpu")[1]
    assert (cpu.min_steps, cpu.min_patience_steps) == (600, 180)
    explicit = run_configs(TrainParams(preset="cpu", epochs=3))[1]
    assert (explicit.phase1_epochs, explicit.min_steps, explicit.min_patience_steps) == (3, 0, 0)


def test_aligned_model_trains_and_infers_on_aligned_pairs_and_refuses_the_feature_cache(wb) -> None:  # type: ignore[no-untyped-def]
    """``model.align_shots``: training, stored inference and the model's own pipeline all align the shots;
    asking for the per-image feature cache is refused before any version row is written."""
    from workbench.errors import ValidationError
    from workbench.model.builder import aligns_shots
    from workbench.model.inference import predict_pairs
    from workbench.model.pipeline import load_arrays

    engine, settings = wb
    aligned = {**TINY, "model": {**TINY["model"], "align_shots": True}}
    with session_scope(engine) as s:
        before = len(s.scalars(select(ModelVersion)).all())
    with pytest.raises(ValidationError, match="use_feature_cache"):
        train_version(
            engine, settings, TrainParams(preset="cpu", epochs=1, overrides=aligned, use_feature_cache=True)
        )
    with session_scope(engine) as s:
        assert len(s.scalars(select(ModelVersion)).all()) == before
        pool = s.scalars(select(Case).where(Case.split == "pool").order_by(Case.id)).all()
    version = train_version(engine, settings, TrainParams(preset="cpu", epochs=1, overrides=aligned))
    model = load_version_model(engine, version["model_version"])
    assert aligns_shots(model)
    infer_version(engine, settings, version["model_version"], ["pool"], mc_samples=0)
    stored = load_predictions(engine, version["model_version"], "pool")
    pairs = [(c.pre_path, c.post_path) for c in pool]
    np.testing.assert_allclose(stored.logit, predict_pairs(model, pairs)["logit"], atol=1e-4)
    # ... which is the model on aligned pixels, not on the pairs as decoded
    from workbench.model.builder import preprocess_fn

    prep = preprocess_fn("small_cnn")
    outputs = {}
    for align in (True, False):
        pre, post = load_arrays(pairs, (32, 32), align=align)
        x = {"pre": prep(pre.astype("float32")), "post": prep(post.astype("float32"))}
        outputs[align] = np.asarray(model.predict(x, verbose=0)["logit"]).ravel()
    np.testing.assert_allclose(stored.logit, outputs[True], atol=1e-4)
    assert np.abs(outputs[True] - outputs[False]).max() > 1e-4
    # backbone maps through the feature-cache path (relabelling reads them): pre from the aligned shot
    from workbench.model.builder import backbones
    from workbench.model.config import ModelConfig
    from workbench.model.features import pair_features

    with session_scope(engine) as s:
        cfg = ModelConfig.from_dict(s.get(ModelVersion, version["model_version"]).config["model"])
    maps = pair_features(model, cfg, Path(settings.artifacts) / "features", pairs)
    pre, post = load_arrays(pairs, (32, 32), align=True)
    bbs = backbones(model)
    np.testing.assert_allclose(
        maps["pre_features"], np.asarray(bbs["pre"](prep(pre.astype("float32")))), atol=1e-5
    )
    np.testing.assert_allclose(
        maps["post_features"], np.asarray(bbs["post"](prep(post.astype("float32")))), atol=1e-5
    )


def test_switching_align_shots_between_rounds_warm_starts_a_model_that_says_what_it_was_trained_on(
    wb,
) -> None:  # type: ignore[no-untyped-def]
    """A child of an unaligned parent trained with ``align_shots`` (and the reverse) is saved under the
    child's configuration, so its inference aligns exactly when its training did; the round decides on
    the feature cache from the run's own configuration too."""
    from workbench.model.builder import aligns_shots
    from workbench.rounds import _cache_pays_for

    engine, settings = wb
    aligned = {**TINY, "model": {**TINY["model"], "align_shots": True}}
    parent = train_version(engine, settings, TrainParams(preset="cpu", epochs=1, overrides=TINY))[
        "model_version"
    ]
    child = train_version(
        engine, settings, TrainParams(preset="cpu", epochs=1, overrides=aligned, parent_version=parent)
    )["model_version"]
    grandchild = train_version(
        engine, settings, TrainParams(preset="cpu", epochs=1, overrides=TINY, parent_version=child)
    )["model_version"]
    flags = [aligns_shots(load_version_model(engine, v)) for v in (parent, child, grandchild)]
    assert flags == [False, True, False]
    with session_scope(engine) as s:
        assert s.get(ModelVersion, child).parent_id == parent
    assert _cache_pays_for(engine, parent, TrainParams(preset="cpu", overrides=TINY))
    assert not _cache_pays_for(engine, parent, TrainParams(preset="cpu", overrides=aligned))
    assert not _cache_pays_for(engine, child, TrainParams(preset="cpu", overrides=aligned))
