"""The decoded image cache and the inference path fed from it, on real JPEG files and a real tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy.special import expit

from workbench.data.images import load_rgb
from workbench.errors import ValidationError
from workbench.model.builder import build_model
from workbench.model.config import ModelConfig
from workbench.model.decoded_cache import DecodedCache, encode_entry, file_digest, settings_cache
from workbench.model.inference import mc_spread, mc_statistics, predict_pairs
from workbench.model.pipeline import decoded_batches, make_dataset

SIZE = (32, 24)  # (width, height): not square, so a swapped axis would show
MODEL = ModelConfig.from_dict(
    {
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
)


def write_jpeg(path: Path, seed: int, shape: tuple[int, int] = (60, 50)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path, quality=90)
    return path


@pytest.fixture
def pairs(tmp_path: Path) -> list[tuple[str, str]]:
    folder = tmp_path / "images"
    folder.mkdir()
    return [
        (
            str(write_jpeg(folder / f"{i}-pre.jpg", 2 * i)),
            str(write_jpeg(folder / f"{i}-post.jpg", 2 * i + 1)),
        )
        for i in range(7)
    ]


def test_hit_returns_the_decoder_pixels_and_reads_the_stored_entry(pairs, tmp_path):
    cache = DecodedCache(tmp_path / "cache")
    path = Path(pairs[0][0])
    first = cache.load(path, SIZE)
    expected = load_rgb(path, size=SIZE)
    np.testing.assert_array_equal(first, expected)
    entry = cache.entry_path(file_digest(path), SIZE)
    assert entry.is_file() and entry.parent.parent.name.startswith("32x24-")
    again = cache.load(path, SIZE)
    np.testing.assert_array_equal(again, expected)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.repaired) == (1, 1, 0)
    assert again.shape == (24, 32, 3) and again.dtype == np.uint8
    other_size = cache.load(path, (16, 16))  # another input size is another entry, not the stored one
    assert other_size.shape == (16, 16, 3) and cache.stats.misses == 2


def test_a_file_with_new_content_gets_a_new_entry(pairs, tmp_path):
    cache = DecodedCache(tmp_path / "cache")
    path = Path(pairs[0][0])
    old = cache.load(path, SIZE)
    old_entry = cache.entry_path(file_digest(path), SIZE)
    write_jpeg(path, seed=99)
    os.utime(path, ns=(1, 1))  # a rewrite within one timestamp tick and of the same size is not detected
    new = cache.load(path, SIZE)
    np.testing.assert_array_equal(new, load_rgb(path, size=SIZE))
    assert not np.array_equal(new, old)
    assert cache.entry_path(file_digest(path), SIZE) != old_entry and old_entry.is_file()
    assert cache.stats.misses == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1] + bytes([data[-1] ^ 0x01]),  # one flipped bit in the pixels
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"not an entry",
        lambda data: encode_entry(np.zeros((24, 31, 3), np.uint8)),  # intact, but of another size
    ],
    ids=["bit-flip", "truncated", "garbage", "wrong-size"],
)
def test_a_damaged_entry_is_decoded_again_and_rewritten(pairs, tmp_path, damage):
    cache = DecodedCache(tmp_path / "cache")
    path = Path(pairs[1][1])
    expected = cache.load(path, SIZE)
    entry = cache.entry_path(file_digest(path), SIZE)
    entry.write_bytes(damage(entry.read_bytes()))
    np.testing.assert_array_equal(cache.load(path, SIZE), expected)
    assert cache.stats.repaired == 1
    np.testing.assert_array_equal(cache.load(path, SIZE), expected)  # rewritten intact: now a hit
    assert cache.stats.hits == 1


def test_concurrent_fills_leave_intact_entries_and_no_temporary_files(pairs, tmp_path):
    cache = DecodedCache(tmp_path / "cache")
    doubled = pairs * 4  # every image requested by several threads at once
    batches = list(decoded_batches(doubled, SIZE, batch_size=5, loader=cache.load, workers=8))
    got = np.concatenate([b["pre"] for b in batches])
    expected = np.stack([load_rgb(Path(p), size=SIZE) for p, _ in doubled])
    np.testing.assert_array_equal(got, expected)
    stored = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(stored) == 2 * len(pairs) and all(
        p.suffix == ".u8" and not p.name.startswith(".") for p in stored
    )


def test_refusals():
    with pytest.raises(ValidationError, match="local folder"):
        DecodedCache("s3://bucket/decoded")
    assert settings_cache("s3://bucket/artifacts") is None
    assert settings_cache("/srv/artifacts").root == Path("/srv/artifacts/decoded")
    with pytest.raises(ValidationError, match="batch_size"):
        next(decoded_batches([], SIZE, batch_size=0))


def test_predictions_equal_with_and_without_the_cache_and_the_training_pipeline(pairs, tmp_path):
    model = build_model(MODEL)
    cache = DecodedCache(tmp_path / "cache")
    plain = predict_pairs(model, pairs, batch_size=3)
    cold = predict_pairs(model, pairs, batch_size=3, decoded_cache=cache)
    warm = predict_pairs(model, pairs, batch_size=3, decoded_cache=cache)
    assert cache.stats.misses == 2 * len(pairs) and cache.stats.hits == 2 * len(pairs)
    expected = np.concatenate(
        [
            model.predict(batch, verbose=0)["logit"].ravel()
            for batch in make_dataset(pairs, None, input_size=(32, 32), backbone="small_cnn", batch_size=3)
        ]
    )
    for out in (plain, cold, warm):
        np.testing.assert_allclose(out["logit"], expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out["probability"], expit(out["logit"]))
    np.testing.assert_array_equal(warm["embedding"], plain["embedding"])


def test_mc_passes_are_one_draw_per_seed_equal_to_the_loop_over_the_same_masks():
    model = build_model(MODEL)
    logit_layer = model.get_layer("logit")
    rng = np.random.default_rng(0)
    emb = tf.constant(rng.uniform(0, 2, (5, MODEL.token_dim)).astype(np.float32))
    seed = tf.constant([3, 1], tf.int32)
    spread = mc_spread(emb, logit_layer, 0.3, 8, seed).numpy()
    np.testing.assert_array_equal(spread, mc_spread(emb, logit_layer, 0.3, 8, seed).numpy())
    assert not np.allclose(spread, mc_spread(emb, logit_layer, 0.3, 8, tf.constant([4, 1])).numpy())

    # The loop it replaces: one pass at a time with the same kept units.
    keep = tf.random.stateless_uniform((8, *emb.shape), seed=seed).numpy() >= 0.3
    kernel, bias = (w.numpy() for w in logit_layer.weights)
    passes = [expit((emb.numpy() * k / 0.7) @ kernel + bias).ravel() for k in keep]
    np.testing.assert_allclose(spread, np.std(passes, axis=0), rtol=1e-5, atol=1e-7)

    no_dropout = mc_spread(emb, logit_layer, 0.0, 8, seed).numpy()
    np.testing.assert_allclose(no_dropout, 0, atol=1e-6)  # no dropout, no spread (float32 rounding)


def test_mc_uncertainty_is_deterministic_for_a_seed_and_leaves_the_logits(pairs):
    model = build_model(MODEL)
    plain = predict_pairs(model, pairs, batch_size=4)
    first = predict_pairs(model, pairs, batch_size=4, mc_samples=8, seed=5)
    again = predict_pairs(model, pairs, batch_size=4, mc_samples=8, seed=5)
    other = predict_pairs(model, pairs, batch_size=4, mc_samples=8, seed=6)
    np.testing.assert_array_equal(first["uncertainty"], again["uncertainty"])
    assert not np.array_equal(first["uncertainty"], other["uncertainty"])
    np.testing.assert_array_equal(first["logit"], plain["logit"])
    assert first["uncertainty"].shape == (len(pairs),) and (first["uncertainty"] > 0).all()


def test_mc_statistics_on_hand_computed_samples():
    """Two MC samples 0.2 and 0.8: std 0.3, BALD information 1 - H(0.2) = 0.27807 bits; samples that
    agree at 0.5 are as unsure as can be (entropy 1 bit) but carry no information; near-certain
    samples stay finite."""
    probs = tf.constant([[0.2, 0.5, 1.0], [0.8, 0.5, 1.0]], tf.float32)
    std, info = (v.numpy() for v in mc_statistics(probs))
    h02 = -(0.2 * np.log2(0.2) + 0.8 * np.log2(0.8))
    np.testing.assert_allclose(std, [0.3, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(info, [1.0 - h02, 0.0, 0.0], atol=1e-9)
    assert abs(info[0] - 0.27807) < 1e-5


def test_tta_spread_is_zero_for_flip_symmetric_pairs_and_the_view_std_otherwise(pairs, tmp_path):
    """A pair of uniform images looks the same under every flip: spread 0. Random images: the spread is
    the std over the four views' probabilities, computed here by hand through the plain model call."""
    from workbench.model.inference import TTA_VIEWS, _view, predict_tta

    model = build_model(MODEL)
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(flat)
    assert predict_tta(model, [(str(flat), str(flat))])[0] == pytest.approx(0.0, abs=1e-7)
    spread = predict_tta(model, pairs[:3], batch_size=2)
    batch = next(decoded_batches(pairs[:3], (32, 32), 3))
    probs = []
    for name in TTA_VIEWS:
        view = {k: np.ascontiguousarray(_view(v, name)) for k, v in batch.items()}
        probs.append(expit(predict_pairs_logits(model, view)))
    np.testing.assert_allclose(spread, np.std(probs, axis=0), atol=1e-6)
    assert (spread > 0).all()


def predict_pairs_logits(model, batch):  # type: ignore[no-untyped-def]
    """The logit of uint8 batches through the training preprocessing and a plain model call."""
    from workbench.model.builder import preprocess_fn

    prep = preprocess_fn("small_cnn")
    x = {k: prep(v.astype(np.float32)) for k, v in batch.items()}
    return np.asarray(model(x, training=False)["logit"]).reshape(-1).astype(np.float64)
