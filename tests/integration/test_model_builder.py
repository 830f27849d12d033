"""Model configuration, weights resolution and the dual-input attention model (built for real, tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from workbench.errors import ValidationError
from workbench.model.builder import (
    HEAD_LAYER_NAMES,
    backbones,
    build_model,
    preprocess_fn,
    set_backbone_trainable,
)
from workbench.model.config import PRESETS, ModelConfig, TrainConfig, preset
from workbench.model.weights import IMAGENET_FILES, resolve_weights


def tiny_cfg(**changes) -> ModelConfig:
    base = {
        "backbone": "small_cnn",
        "input_size": [32, 32],
        "token_dim": 16,
        "heads": 2,
        "key_dim": 8,
        "dropout": 0.2,
        "shared_backbone": False,
        "weights": None,
        "cnn_width": 4,
    }
    base.update(changes)
    return ModelConfig.from_dict(base)


def random_inputs(cfg: ModelConfig, n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    w, h = cfg.input_size
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, (n, h, w, 3)).astype("float32") for k in ("pre", "post")}


def all_layer_names(model) -> list[str]:
    names = []
    for layer in model.layers:
        names.append(layer.name)
        if hasattr(layer, "layers"):
            names.extend(sub.name for sub in layer.layers)
    return names


# ----------------------------------------------------------------------------------------------- config


def test_config_json_round_trip_and_presets():
    for name in PRESETS:
        model_cfg, train_cfg = preset(name)
        again = ModelConfig.from_json(model_cfg.to_json())
        assert again == model_cfg and isinstance(again.input_size, tuple)
        assert TrainConfig.from_json(train_cfg.to_json()) == train_cfg
    card_model, card_train = preset("card")
    assert (card_model.backbone, card_model.input_size, card_model.weights) == (
        "resnet50",
        (224, 224),
        "imagenet",
    )
    assert not card_model.shared_backbone
    assert (card_train.phase1_epochs, card_train.phase1_batch, card_train.phase1_lr) == (30, 16, 1e-4)
    assert (card_train.phase2_epochs, card_train.phase2_batch, card_train.phase2_lr) == (20, 8, 1e-5)
    cpu_model, _ = preset("cpu")
    assert cpu_model.backbone == "small_cnn" and cpu_model.weights is None


@pytest.mark.parametrize(
    ("cls", "data", "field"),
    [
        (ModelConfig, {"backbone": "vgg99"}, "backbone"),
        (ModelConfig, {"input_size": [16, 16]}, "input_size"),
        (ModelConfig, {"dropout": 1.5}, "dropout"),
        (ModelConfig, {"token_dim": "big"}, "token_dim"),
        (ModelConfig, {"backbone": "small_cnn", "weights": "imagenet"}, "weights"),
        (TrainConfig, {"phases": 3}, "phases"),
        (TrainConfig, {"imbalance": "oversample"}, "imbalance"),
        (TrainConfig, {"phase2_lr": 0}, "phase2_lr"),
        (TrainConfig, {"augment": "yes"}, "augment"),
        (TrainConfig, {"epochs": 3}, "epochs"),
    ],
)
def test_config_validation_names_the_bad_field(cls, data, field):
    with pytest.raises(ValidationError, match=field):
        cls.from_dict(data)


def test_config_from_json_rejects_garbage():
    with pytest.raises(ValidationError, match="invalid JSON"):
        TrainConfig.from_json("{not json")
    with pytest.raises(ValidationError, match="preset"):
        preset("gpu-xl")


# ---------------------------------------------------------------------------------------------- weights


def test_imagenet_weights_missing_is_a_clear_error_and_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    file_name = IMAGENET_FILES["resnet50"]
    with pytest.raises(ValidationError) as info:
        resolve_weights("resnet50", "imagenet")
    message = str(info.value)
    assert file_name in message and str(tmp_path / "keras_home" / "models") in message
    assert "WORKBENCH_IMAGENET_WEIGHTS" in message
    # Building the model fails the same way, before Keras is asked for anything.
    cfg = ModelConfig.from_dict({"backbone": "resnet50", "input_size": [32, 32], "weights": "imagenet"})
    with pytest.raises(ValidationError, match=file_name):
        build_model(cfg)
    assert not (tmp_path / "keras_home" / "models" / file_name).exists()

    setting = tmp_path / "elsewhere" / "weights.h5"
    with pytest.raises(ValidationError, match="WORKBENCH_IMAGENET_WEIGHTS"):
        resolve_weights("resnet50", "imagenet", setting)


def test_imagenet_weights_found_in_keras_cache_or_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / IMAGENET_FILES["resnet50"]
    cached.parent.mkdir()
    cached.write_bytes(b"placeholder")
    assert resolve_weights("resnet50", "imagenet") == str(cached)
    other = tmp_path / "mine.h5"
    other.write_bytes(b"placeholder")
    assert resolve_weights("resnet50", "imagenet", str(other)) == str(other)
    assert resolve_weights("resnet50", str(other)) == str(other)
    assert resolve_weights("resnet50", None) is None
    with pytest.raises(ValidationError, match="does not exist"):
        resolve_weights("resnet50", str(tmp_path / "nope.h5"))


# -------------------------------------------------------------------------------------------- preprocess


def test_preprocess_channel_order_and_scaling():
    rgb = np.array([[[[255.0, 0.0, 0.0]]]], dtype="float32")  # one pure red pixel
    out = np.asarray(preprocess_fn("resnet50")(rgb.copy()))
    # caffe mode: RGB -> BGR, then ImageNet BGR means subtracted, no scaling.
    np.testing.assert_allclose(out[0, 0, 0], [0 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-5)
    small = np.asarray(preprocess_fn("small_cnn")(rgb.copy()))
    np.testing.assert_allclose(small[0, 0, 0], [1.0, -1.0, -1.0])
    with pytest.raises(ValidationError):
        preprocess_fn("alexnet")


# ------------------------------------------------------------------------------------------------- model


def test_model_structure_outputs_and_unique_names():
    cfg = tiny_cfg()
    model = build_model(cfg)
    assert set(model.input) == {"pre", "post"}
    names = all_layer_names(model)
    assert len(names) == len(set(names)), "layer names must be unique across both backbones"
    bbs = backbones(model)
    assert bbs["pre"] is not bbs["post"]
    assert all(layer.name.startswith("pre_") for layer in bbs["pre"].layers)
    assert all(layer.name.startswith("post_") for layer in bbs["post"].layers)
    for name in HEAD_LAYER_NAMES:
        model.get_layer(name)
    out = model.predict(random_inputs(cfg), verbose=0)
    assert out["logit"].shape == (3, 1) and out["probability"].shape == (3, 1)
    np.testing.assert_allclose(out["probability"], 1 / (1 + np.exp(-out["logit"])), rtol=1e-5)
    # Separate backbones really have separate weights.
    assert len(bbs["pre"].weights) == len(bbs["post"].weights)
    assert bbs["pre"].weights[0] is not bbs["post"].weights[0]

    shared = build_model(tiny_cfg(shared_backbone=True))
    sb = backbones(shared)
    assert sb["pre"] is sb["post"] and sb["pre"].name == "shared_backbone"
    assert shared.count_params() < model.count_params()


def test_keras_round_trip_in_process_and_in_fresh_process(tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg)
    x = random_inputs(cfg, n=4, seed=1)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    again = loaded.predict(x, verbose=0)
    np.testing.assert_array_equal(again["logit"], expected["logit"])
    np.testing.assert_array_equal(again["probability"], expected["probability"])

    np.save(tmp_path / "pre.npy", x["pre"])
    np.save(tmp_path / "post.npy", x["post"])
    script = (
        "import sys, numpy as np, keras\n"
        "d = sys.argv[1]\n"
        "m = keras.models.load_model(d + '/model.keras', safe_mode=True)\n"
        "out = m.predict({'pre': np.load(d + '/pre.npy'), 'post': np.load(d + '/post.npy')}, verbose=0)\n"
        "np.save(d + '/fresh_logit.npy', out['logit'])\n"
        "assert 'workbench' not in sys.modules\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "fresh_logit.npy"), expected["logit"], rtol=1e-6, atol=1e-6)


def test_cpu_preset_saves_as_legacy_h5(tmp_path):
    cfg, _ = preset("cpu")
    model = build_model(cfg)
    x = random_inputs(cfg, n=2, seed=2)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.h5"
    model.save(path, include_optimizer=False)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["logit"], expected["logit"], rtol=1e-6, atol=1e-6)


def test_card_preset_forward_backward_and_fine_tune_blocks():
    import tensorflow as tf

    cfg, _ = preset("card")
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "weights": None})
    model = build_model(cfg)
    names = all_layer_names(model)
    assert len(names) == len(set(names))
    assert "pre_conv1_conv" in {layer.name for layer in backbones(model)["pre"].layers}
    x = random_inputs(cfg, n=2, seed=3)
    y = tf.constant([[0.0], [1.0]])
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = keras.losses.BinaryCrossentropy(from_logits=True)(y, out["logit"])
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(g is not None for g in grads)
    assert any(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)

    assert set_backbone_trainable(model, "frozen") == 0
    assert not backbones(model)["pre"].trainable
    n_top = set_backbone_trainable(model, "top")
    pre = backbones(model)["pre"]
    assert n_top > 0
    assert pre.get_layer("pre_conv5_block3_3_conv").trainable
    assert not pre.get_layer("pre_conv4_block6_3_conv").trainable
    assert not pre.get_layer("pre_conv5_block3_3_bn").trainable
    with pytest.raises(ValidationError, match="fine_tune_from_block"):
        set_backbone_trainable(model, "top", "conv9_")


def test_config_dict_is_json_serialisable():
    cfg, train_cfg = preset("cpu")
    text = json.dumps({"model": cfg.to_dict(), "train": train_cfg.to_dict()})
    data = json.loads(text)
    assert ModelConfig.from_dict(data["model"]) == cfg
    assert Path(__file__).exists()


# ------------------------------------------------------------------------ subtle-lesion change path


def change_cfg(**changes) -> ModelConfig:
    base = {
        "shared_backbone": True,
        "input_norm": True,
        "cnn_blocks": 1,
        "change_tolerance": 3,
        "change_convs": [4, 8],
        "token_pool": 2,
    }
    base.update(changes)
    return tiny_cfg(**base)


def test_change_path_options_build_save_and_load_safely(tmp_path):
    cfg = change_cfg()
    assert ModelConfig.from_json(cfg.to_json()) == cfg and cfg.change_convs == (4, 8)
    model = build_model(cfg)
    for name in ("shared_input_norm", "pre_tolerance", "change_conv1", "change_conv2", "pre_token_pool"):
        assert name in all_layer_names(model)
    assert "shared_block2_conv1" not in all_layer_names(model)  # one block only
    x = random_inputs(cfg, n=2)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["logit"], expected["logit"], rtol=1e-5, atol=1e-6)


def test_cache_pays_counts_the_small_cnn_map_values_the_builder_builds():
    """features.cache_pays derives the map size without TensorFlow; it must match the real backbone."""
    from workbench.model.builder import feature_shape
    from workbench.model.features import small_cnn_map_values

    for changes in (
        {},
        {"cnn_blocks": 1, "whiteness_prior": True},
        {"cnn_blocks": 2, "cnn_width": 8, "input_size": [64, 48]},
        {"cnn_blocks": 3, "whiteness_prior": True, "input_size": [96, 96]},
        {"cnn_blocks": 4, "input_size": [57, 43]},
    ):
        cfg = change_cfg(**changes)
        h, w, c = feature_shape(cfg)
        assert small_cnn_map_values(cfg) == h * w * c, changes


def test_change_norm_puts_batch_norm_after_each_change_conv_and_saves_safely(tmp_path):
    cfg = change_cfg(change_norm=True)
    model = build_model(cfg)
    names = set(all_layer_names(model))
    for i in (1, 2):
        assert {f"change_conv{i}", f"change_conv{i}_bn", f"change_conv{i}_relu"} <= names
        assert not model.get_layer(f"change_conv{i}").use_bias  # the batch norm's offset replaces it
    assert "change_conv1_bn" not in all_layer_names(build_model(change_cfg()))
    x = random_inputs(cfg, n=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["logit"], model.predict(x, verbose=0)["logit"], rtol=1e-5, atol=1e-6
    )


def test_input_norm_cancels_exposure_and_white_balance_drift():
    cfg = change_cfg()
    model = build_model(cfg)
    x = random_inputs(cfg, n=2, seed=3)
    drifted = dict(x)
    # A per-channel gain and offset on the post shot only (exposure and white balance drift).
    drifted["post"] = x["post"] * np.array([1.3, 0.8, 1.1], "float32") + np.array(
        [0.2, -0.1, 0.05], "float32"
    )
    a = model.predict(x, verbose=0)["logit"]
    b = model.predict(drifted, verbose=0)["logit"]
    np.testing.assert_allclose(a, b, atol=2e-3)
    plain = build_model(change_cfg(input_norm=False))
    assert not np.allclose(
        plain.predict(x, verbose=0)["logit"], plain.predict(drifted, verbose=0)["logit"], atol=2e-3
    )


def test_change_tolerance_ignores_a_small_shift_between_the_shots():
    """post = pre moved by one feature cell: a plain difference sees change, the tolerant one none."""

    def max_interior_change(cfg: ModelConfig) -> float:
        model = build_model(cfg)
        sub = keras.Model(model.input, model.get_layer("post_minus_pre").output)
        rng = np.random.default_rng(0)
        pre = rng.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
        post = np.roll(pre, shift=2, axis=2)  # 2 px = 1 cell of the half-resolution map
        change = np.asarray(sub.predict({"pre": pre, "post": post}, verbose=0))
        return float(change[0, 2:-2, 2:-2].max())

    assert max_interior_change(change_cfg(change_tolerance=1, input_norm=False)) > 0.05
    assert max_interior_change(change_cfg(change_tolerance=3, input_norm=False)) <= 1e-5


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"change_tolerance": 4}, "change_tolerance"),
        ({"cnn_blocks": 5}, "cnn_blocks"),
        ({"change_convs": [4, 4, 4, 4, 4]}, "change_convs"),
        ({"change_convs": [0]}, "change_convs"),
        ({"input_norm": "yes"}, "input_norm"),
        ({"token_pool": 0}, "token_pool"),
    ],
)
def test_change_path_options_are_validated(changes, field):
    with pytest.raises(ValidationError, match=field):
        change_cfg(**changes)


def test_change_path_that_does_not_fit_the_feature_map_is_refused_by_name():
    # 32 px, four blocks: a 2x2 map; three pooled change convs need 8x8.
    with pytest.raises(ValidationError, match="change_convs"):
        build_model(change_cfg(cnn_blocks=4, change_convs=[4, 4, 4], token_pool=1))
    with pytest.raises(ValidationError, match="token_pool"):
        build_model(change_cfg(cnn_blocks=4, change_convs=[], token_pool=4))


def test_whiteness_prior_marks_white_low_saturation_tissue(tmp_path):
    cfg = change_cfg(whiteness_prior=True, change_convs=[4])
    model = build_model(cfg)
    backbone = backbones(model)["pre"]
    pink = np.array([0.7, 0.1, 0.2], "float32")  # preprocessed RGB in [-1, 1]
    image = np.broadcast_to(pink, (1, 32, 32, 3)).copy()
    image[0, :, :8] = (-0.9, -0.9, -0.9)  # dark background
    image[0, 12:20, 12:20] = (0.8, 0.75, 0.75)  # a whitish patch
    image[0, 24:30, 20:26] = (1.0, 1.0, 1.0)  # a specular highlight (glare)
    maps = np.asarray(backbone(image))
    whiteness, glare = maps[0, ..., -3], maps[0, ..., -1]  # the prior's channels come last
    assert glare[13, 11] > 0.5 and glare[8, 8] == 0.0, "glare is the saturated spot, not the white patch"
    assert whiteness[8, 8] > whiteness[13, 11] + 0.3, "glare must not count as whitening"
    assert whiteness[8, 8] > whiteness[3, 12] + 0.3, "white patch must stand out from pink tissue"
    assert whiteness[8, 8] > whiteness[3, 1] + 0.3, "and from the dark background"
    # The initialised kernels survive a save and a safe-mode load.
    model.save(tmp_path / "w.keras")
    again = backbones(keras.models.load_model(tmp_path / "w.keras", safe_mode=True))["pre"]
    np.testing.assert_allclose(np.asarray(again(image)), maps, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValidationError, match="whiteness_prior"):
        tiny_cfg(backbone="resnet50", weights=None, whiteness_prior=True)


def test_align_shots_is_carried_by_the_model_name_through_a_safe_save(tmp_path):
    from workbench.model.builder import aligns_shots, backbone_from_model

    plain, aligned = build_model(tiny_cfg()), build_model(tiny_cfg(align_shots=True))
    assert not aligns_shots(plain) and aligns_shots(aligned)
    assert backbone_from_model(aligned) == backbone_from_model(plain) == "small_cnn"
    aligned.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert aligns_shots(loaded) and backbone_from_model(loaded) == "small_cnn"
    assert ModelConfig.from_json(tiny_cfg(align_shots=True).to_json()).align_shots is True
