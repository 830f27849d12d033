"""Training, feature cache and inference on a handful of real tiny image pairs (32x32)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from workbench.data.images import sha256_file
from workbench.errors import ValidationError
from workbench.model.builder import build_model
from workbench.model.config import ModelConfig, TrainConfig
from workbench.model.features import FeatureCache, build_head_model, graft_head, pair_features
from workbench.model.inference import PredictionCancelled, predict_pairs
from workbench.model.training import compute_class_weights, save_atomic, train

MODEL = {
    "backbone": "small_cnn",
    "input_size": [32, 32],
    "token_dim": 8,
    "heads": 2,
    "key_dim": 4,
    "dropout": 0.3,
    "shared_backbone": True,
    "weights": None,
    "cnn_width": 4,
}
TRAIN = {
    "phases": 1,
    "phase1_epochs": 2,
    "phase1_batch": 4,
    "phase1_lr": 1e-3,
    "phase2_epochs": 1,
    "phase2_batch": 4,
    "phase2_lr": 1e-4,
    "patience": 5,
    "seed": 7,
    "augment": True,
    "deterministic": True,
}


def cfgs(model: dict | None = None, train_: dict | None = None) -> tuple[ModelConfig, TrainConfig]:
    return ModelConfig.from_dict({**MODEL, **(model or {})}), TrainConfig.from_dict(
        {**TRAIN, **(train_ or {})}
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """16 pairs of 40x40 PNGs; positives (every 4th) have a white square in post only."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    pairs, labels = [], []
    for i in range(16):
        pre = rng.integers(90, 160, (40, 40, 3), dtype=np.uint8)
        post = pre.copy()
        label = int(i % 4 == 0)
        if label:
            y, x = rng.integers(5, 28, 2)
            post[y : y + 8, x : x + 8] = 250
        d = root / f"c{i:02d}"
        d.mkdir()
        Image.fromarray(pre).save(d / "pre.png")
        Image.fromarray(post).save(d / "post.png")
        pairs.append((str(d / "pre.png"), str(d / "post.png")))
        labels.append(label)
    return {
        "root": root,
        "train": pairs[:12],
        "y_train": labels[:12],
        "val": pairs[12:],
        "y_val": labels[12:],
    }


def test_class_weights_from_counts():
    labels = [0] * 8 + [1] * 2
    weights = compute_class_weights(labels)
    n, n0, n1 = 10, 8, 2
    assert weights == pytest.approx({0: n / (2 * n0), 1: n / (2 * n1)})
    # Each class carries half of the total weight.
    assert weights[0] * n0 == pytest.approx(weights[1] * n1)
    with pytest.raises(ValidationError, match="class 1"):
        compute_class_weights([0, 0, 0])


def test_train_reports_each_epoch_saves_model_and_repeats_with_same_seed(data, tmp_path):
    model_cfg, train_cfg = cfgs()
    events: list[dict] = []
    out = tmp_path / "a" / "model.keras"
    first = train(
        model_cfg,
        train_cfg,
        data["train"],
        data["y_train"],
        data["val"],
        data["y_val"],
        out,
        progress=events.append,
    )
    assert not first.cancelled and Path(first.out_path) == out and out.is_file()
    epoch_events = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epoch_events] == [1, 2]
    assert all(e["phase"] == 1 and e["epochs"] == 2 and "loss" in e and "val_loss" in e for e in epoch_events)
    assert first.epochs_run == 2 and first.best_epoch in (1, 2)
    assert first.imbalance == "class_weight"
    assert first.class_weight == pytest.approx(compute_class_weights(data["y_train"]))
    assert set(first.val_metrics) >= {"loss", "auroc", "auprc"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.keras"]  # no temp files left

    second = train(
        model_cfg, train_cfg, data["train"], data["y_train"], data["val"], data["y_val"], tmp_path / "b.keras"
    )
    assert second.val_metrics == first.val_metrics
    assert second.history == first.history

    # The saved model predicts what training evaluated on the validation split.
    model = keras.models.load_model(out)
    pred = predict_pairs(model, data["val"], batch_size=3)
    from workbench.model.training import evaluate_logits

    assert evaluate_logits(np.array(data["y_val"]), pred["logit"])["loss"] == pytest.approx(
        first.val_metrics["loss"], rel=1e-4
    )


def test_cancel_stops_training_and_writes_no_file(data, tmp_path):
    model_cfg, train_cfg = cfgs(train_={"phase1_epochs": 5})
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    events: list[dict] = []
    out = tmp_path / "cancelled.keras"
    result = train(
        model_cfg,
        train_cfg,
        data["train"],
        data["y_train"],
        data["val"],
        data["y_val"],
        out,
        progress=events.append,
        should_cancel=should_cancel,
    )
    assert result.cancelled and result.out_path is None
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert result.epochs_run <= 1 and calls["n"] == 2


def test_balanced_and_focal_are_recorded_and_two_phases_run(data, tmp_path):
    model_cfg, train_cfg = cfgs(
        train_={"imbalance": "focal", "phases": 2, "phase1_epochs": 1, "augment": False}
    )
    focal = train(
        model_cfg, train_cfg, data["train"], data["y_train"], data["val"], data["y_val"], tmp_path / "f.keras"
    )
    assert focal.class_weight is None and focal.focal_alpha == pytest.approx(9 / 12)
    assert set(focal.history) == {"phase1", "phase2"} and focal.epochs_run == 2

    model_cfg, train_cfg = cfgs(train_={"imbalance": "balanced", "phase1_epochs": 1, "augment": False})
    balanced = train(
        model_cfg, train_cfg, data["train"], data["y_train"], data["val"], data["y_val"], tmp_path / "b.keras"
    )
    assert balanced.imbalance == "balanced" and balanced.class_weight is None and balanced.focal_alpha is None


def test_warm_start_with_feature_cache_grafts_head_into_full_model(data, tmp_path):
    model_cfg, train_cfg = cfgs(train_={"phase1_epochs": 2})
    parent = build_model(model_cfg)
    parent_path = save_atomic(parent, tmp_path / "parent.keras")
    cache_dir = tmp_path / "cache"
    result = train(
        model_cfg,
        train_cfg,
        data["train"],
        data["y_train"],
        data["val"],
        data["y_val"],
        tmp_path / "child.keras",
        parent_model_path=parent_path,
        feature_cache=cache_dir,
    )
    assert result.used_feature_cache and not result.cancelled
    distinct = {sha256_file(Path(p)) for pair in data["train"] + data["val"] for p in pair}
    assert len(distinct) < 32  # negatives' post files are byte copies of their pre files
    cached = list(cache_dir.rglob("*.npy"))
    assert len(cached) == len(distinct)  # every distinct image once (shared backbone)

    child = keras.models.load_model(result.out_path)
    # Backbone untouched (frozen), head changed.
    np.testing.assert_array_equal(
        child.get_layer("shared_backbone").get_weights()[0],
        parent.get_layer("shared_backbone").get_weights()[0],
    )
    assert not np.array_equal(
        child.get_layer("logit").get_weights()[0], parent.get_layer("logit").get_weights()[0]
    )
    # The head model on cached features predicts what the full model predicts on images.
    head = build_head_model(model_cfg)
    assert graft_head(child, head) > 5
    feats = pair_features(child, model_cfg, FeatureCache(cache_dir), data["val"])
    head_logit = head.predict(feats, verbose=0)["logit"].ravel()
    full_logit = predict_pairs(child, data["val"], batch_size=4)["logit"]
    np.testing.assert_allclose(head_logit, full_logit, rtol=1e-4, atol=1e-4)
    assert len(list(cache_dir.rglob("*.npy"))) == len(distinct)  # second use hit the cache


def test_predict_pairs_mc_dropout_embedding_and_cancel(data):
    model_cfg, _ = cfgs()
    model = build_model(model_cfg)
    plain = predict_pairs(model, data["val"], batch_size=3)
    assert plain["uncertainty"] is None
    assert plain["embedding"].shape == (4, model_cfg.token_dim)
    x = {"pre": [], "post": []}
    from workbench.model.pipeline import make_dataset

    for batch in make_dataset(data["val"], None, input_size=(32, 32), backbone="small_cnn", batch_size=4):
        expected = model.predict(batch, verbose=0)
    np.testing.assert_allclose(plain["probability"], expected["probability"].ravel(), rtol=1e-5, atol=1e-6)
    assert x  # inputs were built through the same pipeline

    seen: list[dict] = []
    mc = predict_pairs(model, data["val"], batch_size=3, mc_samples=8, progress=seen.append)
    np.testing.assert_allclose(mc["probability"], plain["probability"], rtol=1e-6)  # BN/means untouched
    assert mc["uncertainty"].shape == (4,) and (mc["uncertainty"] >= 0).all()
    assert mc["uncertainty"].max() > 0
    assert [e["done"] for e in seen] == [3, 4]
    with pytest.raises(PredictionCancelled):
        predict_pairs(model, data["val"], batch_size=2, should_cancel=lambda: True)
