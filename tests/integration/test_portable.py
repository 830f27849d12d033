"""The bundle's portable model (model.onnx, run without TensorFlow) and the SavedModel's serve_images signature.

One module-scoped workbench (SQLite) trains a tiny cpu-preset model at 32x32, calibrates and exports it;
200 further synthetic pairs (JPEG, 100x90, so decoding uses a reduced DCT scale and a resize) are
predicted with the Keras model, the ONNX model, a fresh process without TensorFlow, the CLI and a fresh
``tf.saved_model.load`` of ``serve_images``. Full-size presets are converted separately, untrained.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factories import TINY_TRAIN, exported_tiny_bundle
from workbench.calibration.calibrators import calibrator_from_json
from workbench.data.synth import generate_dataset
from workbench.errors import WorkbenchError
from workbench.export.bundle import BundleInfo
from workbench.export.portable import ONNX_FILE, OnnxModel, load_inputs, preprocess_numpy, write_onnx
from workbench.export.predict import load_bundle

TINY = TINY_TRAIN
N_PAIRS = 200
PROB_TOL = 1e-4


@dataclass
class Exported:
    info: BundleInfo
    pairs: list[tuple[str, str]]
    csv: Path
    root: Path


def _pairs(manifest: Path) -> list[tuple[str, str]]:
    with manifest.open(newline="") as fh:
        return [
            (str(manifest.parent / r["pre_path"]), str(manifest.parent / r["post_path"]))
            for r in csv.DictReader(fh)
        ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("portable")
    engine, settings, version_id, info = exported_tiny_bundle(root, n_boot=50)
    engine.dispose()
    more = generate_dataset(
        root / "pairs",
        n=N_PAIRS,
        positive_rate=0.3,
        size=(100, 90),
        image_format="jpg",
        difficulty="easy",
        seed=5,
    )
    return Exported(info, _pairs(more.manifest), more.manifest, root)


@pytest.fixture(scope="module")
def keras_rows(exported: Exported) -> list[dict]:
    return load_bundle(exported.info.path).predict_pairs(exported.pairs)


def _midpoint_threshold(p: np.ndarray) -> float:
    """A threshold in the middle of the scores (half the cases on each side): decisions are stressed."""
    s = np.sort(p)
    return float((s[len(s) // 2 - 1] + s[len(s) // 2]) / 2)


# ------------------------------------------------------------------------------------------------
# The bundle and the ONNX runtime


def test_bundle_lists_the_onnx_model_and_the_image_signature(exported: Exported) -> None:
    b = exported.info.path
    manifest = json.loads((b / "manifest.json").read_text())
    from workbench.files import sha256_file

    assert manifest["files"][ONNX_FILE]["sha256"] == sha256_file(b / ONNX_FILE)
    assert manifest["onnx"]["written"] is True and manifest["onnx"]["reason"] is None
    assert manifest["onnx"]["max_logit_difference"] < 1e-4 and manifest["onnx"]["converter"].startswith(
        "tf2onnx"
    )
    assert (
        exported.info.onnx["written"]
        and exported.info.files[ONNX_FILE] == manifest["files"][ONNX_FILE]["sha256"]
    )
    assert set(manifest["serving"]["signatures"]) == {"serve", "serve_images"}
    card = (b / "README.md").read_text()
    assert "`model.onnx`" in card and "--runtime onnx" in card and "serve_images" in card


def test_numpy_preprocessing_is_bit_identical_to_preprocess_fn() -> None:
    import tensorflow as tf

    from workbench.model.builder import preprocess_fn

    x = np.random.default_rng(0).integers(0, 256, (3, 17, 13, 3)).astype(np.float32)
    for backbone in ("small_cnn", "resnet50", "mobilenet_v2", "efficientnetb0"):
        want = np.asarray(preprocess_fn(backbone)(tf.constant(x)))
        np.testing.assert_array_equal(preprocess_numpy(x, backbone), want, err_msg=backbone)


def test_numpy_inputs_equal_the_tf_pipeline_inputs(exported: Exported) -> None:
    """End-to-end decode parity: the TF input pipeline and the NumPy path build identical tensors."""
    from workbench.model.pipeline import make_dataset

    pairs = exported.pairs[:40]
    ours = load_inputs(pairs, (32, 32), "small_cnn")
    batches = list(
        make_dataset(pairs, None, input_size=(32, 32), backbone="small_cnn", batch_size=16, cache=False)
    )
    for side in ("pre", "post"):
        theirs = np.concatenate([np.asarray(b[side]) for b in batches])
        np.testing.assert_array_equal(ours[side], theirs)


def test_onnx_runtime_matches_keras_on_200_pairs(exported: Exported, keras_rows: list[dict]) -> None:
    keras_bundle = load_bundle(exported.info.path)
    onnx_bundle = load_bundle(exported.info.path, runtime="onnx")
    assert onnx_bundle.runtime == "onnx" and isinstance(onnx_bundle.model, OnnxModel)
    rows = onnx_bundle.predict_pairs(exported.pairs)
    assert len(rows) == len(keras_rows) == N_PAIRS
    raw = np.array(
        [[r["raw_probability"], k["raw_probability"]] for r, k in zip(rows, keras_rows, strict=True)]
    )
    cal = np.array(
        [
            [r["calibrated_probability"], k["calibrated_probability"]]
            for r, k in zip(rows, keras_rows, strict=True)
        ]
    )
    assert np.max(np.abs(raw[:, 0] - raw[:, 1])) <= PROB_TOL
    assert np.max(np.abs(cal[:, 0] - cal[:, 1])) <= PROB_TOL
    assert [r["decision"] for r in rows] == [k["decision"] for k in keras_rows]

    # Model parity on the same preprocessed tensors, at a threshold that splits the scores in half.
    x = load_inputs(exported.pairs, (32, 32), "small_cnn")
    z_keras = np.asarray(keras_bundle.model(x, training=False)["logit"], np.float64).reshape(-1)
    z_onnx = onnx_bundle.model.logits(x)
    p_keras, p_onnx = 1 / (1 + np.exp(-z_keras)), 1 / (1 + np.exp(-z_onnx))
    assert np.max(np.abs(p_keras - p_onnx)) <= PROB_TOL
    t = _midpoint_threshold(p_keras)
    assert np.array_equal(p_keras >= t, p_onnx >= t)

    zipped = load_bundle(exported.info.zip_path, runtime="onnx")  # the zip's temp folder is gone by now
    assert zipped.predict_pair(*exported.pairs[0])["raw_probability"] == pytest.approx(
        rows[0]["raw_probability"]
    )


def test_onnx_prediction_runs_in_a_process_without_tensorflow(
    exported: Exported, keras_rows: list[dict], tmp_path: Path
) -> None:
    code = (
        "import json, sys\n"
        "from workbench.export.predict import load_bundle\n"
        "bundle = load_bundle(sys.argv[1], runtime='onnx')\n"
        "rows = bundle.predict_csv(sys.argv[2])\n"
        "print(json.dumps({'rows': rows, 'tensorflow': 'tensorflow' in sys.modules,\n"
        "                  'keras': 'keras' in sys.modules}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(exported.info.path), str(exported.csv)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["tensorflow"] is False and got["keras"] is False
    rows = got["rows"]
    assert len(rows) == N_PAIRS
    for row, ref in zip(rows, keras_rows, strict=True):
        assert abs(row["calibrated_probability"] - ref["calibrated_probability"]) <= PROB_TOL
        assert row["decision"] == ref["decision"]


def test_cli_predict_runtime_onnx_and_its_refusals(
    exported: Exported, keras_rows: list[dict], tmp_path: Path
) -> None:
    from conftest import run_cli

    env = {"WORKBENCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # must not be touched
    pre, post = exported.pairs[0]
    res = run_cli(
        "predict",
        str(exported.info.path),
        "--pre",
        pre,
        "--post",
        post,
        "--json",
        "--runtime",
        "onnx",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert abs(out["raw_probability"] - keras_rows[0]["raw_probability"]) <= PROB_TOL
    assert out["decision"] == keras_rows[0]["decision"]

    res = run_cli(
        "predict", str(exported.info.path), "--pre", pre, "--post", post, "--runtime", "tflite", env=env
    )
    assert res.returncode == 1 and "--runtime must be one of keras, onnx" in res.stderr

    # A bundle without model.onnx (older export, or a failed conversion) says so and points to keras.
    copy = tmp_path / "no_onnx"
    shutil.copytree(exported.info.path, copy)
    (copy / ONNX_FILE).unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][ONNX_FILE]
    manifest["onnx"] = {"written": False, "reason": "conversion to ONNX failed (test)"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("predict", str(copy), "--pre", pre, "--post", post, "--runtime", "onnx", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert (
        "model.onnx: not in this bundle (conversion to ONNX failed (test)); use --runtime keras" in res.stderr
    )

    # A modified model.onnx is refused like any other file.
    shutil.rmtree(copy)
    shutil.copytree(exported.info.path, copy)
    data = bytearray((copy / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(WorkbenchError, match=r"model\.onnx: sha256 mismatch"):
        load_bundle(copy, runtime="onnx")


def test_write_onnx_records_a_failure_and_leaves_no_file(tmp_path: Path) -> None:
    from workbench.model.builder import build_model
    from workbench.model.config import ModelConfig

    model = build_model(
        ModelConfig.from_dict({**TINY["overrides"]["model"], "backbone": "small_cnn", "weights": None})
    )
    bad_probe = {"pre": np.zeros((1, 8, 8, 3), np.float32), "post": np.zeros((1, 8, 8, 3), np.float32)}
    entry = write_onnx(model, tmp_path / ONNX_FILE, bad_probe)
    assert entry["written"] is False and entry["reason"].startswith("conversion to ONNX failed")
    assert not (tmp_path / ONNX_FILE).exists()


def _preset_parity(preset: str, overrides: dict, pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    """Convert the untrained preset model and compare ONNX with Keras on the same preprocessed tensors."""
    from workbench.export.bundle import _probe_inputs
    from workbench.model.builder import build_model
    from workbench.model.config import ModelConfig
    from workbench.model.config import preset as get_preset

    cfg, _ = get_preset(preset)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    model = build_model(cfg)
    entry = write_onnx(model, tmp_path / ONNX_FILE, _probe_inputs(model, cfg.backbone))
    assert entry["written"], entry["reason"]
    x = load_inputs(pairs, tuple(cfg.input_size), cfg.backbone)
    z_keras = np.concatenate(
        [
            np.asarray(
                model({k: v[i : i + 50] for k, v in x.items()}, training=False)["logit"], np.float64
            ).reshape(-1)
            for i in range(0, len(pairs), 50)
        ]
    )
    z_onnx = OnnxModel(tmp_path / ONNX_FILE).logits(x)
    p_keras, p_onnx = 1 / (1 + np.exp(-z_keras)), 1 / (1 + np.exp(-z_onnx))
    assert np.max(np.abs(p_keras - p_onnx)) <= PROB_TOL
    t = _midpoint_threshold(p_keras)
    assert np.array_equal(p_keras >= t, p_onnx >= t)


def test_onnx_parity_cpu_preset_at_full_size(exported: Exported, tmp_path: Path) -> None:
    _preset_parity("cpu", {}, exported.pairs, tmp_path)


# The card preset (two ResNet50 backbones and the cross-attention) converts too, but tf2onnx needs about
# 18 GB of memory for it: more than a test process can add on this 24 GB machine. Its parity (2.8e-6 on
# 200 pairs) and throughput are measured in a process of their own by bench/bench_runtimes.py.


# ------------------------------------------------------------------------------------------------
# serve_images: decoding, calibrators, and the whole signature against workbench predict


def _image_zoo(root: Path) -> list[Path]:
    """Every kind of file load_rgb reads that the graph decoder claims to read the same way."""
    from images_factory import exif_rotated, mode_image, rgb

    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)

    def smooth(w: int, h: int) -> np.ndarray:
        base = Image.fromarray(rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8))
        noise = rng.integers(-20, 20, (h, w, 3))
        return np.clip(
            np.asarray(base.resize((w, h), Image.Resampling.BICUBIC)).astype(int) + noise, 0, 255
        ).astype(np.uint8)

    files = [rgb(root / "rand.png", 1, (61, 47)), exif_rotated(root / "exif6.jpg", 2)]
    files += [mode_image(root / f"{m.replace(';', '')}.png", m, 4) for m in ("L", "I;16", "RGBA", "P")]
    files.append(mode_image(root / "cmyk.jpg", "CMYK", 5))
    Image.fromarray(smooth(70, 50)).save(root / "plain.bmp")
    files.append(root / "plain.bmp")
    mpo = Image.fromarray(smooth(400, 300))
    mpo.save(root / "camera.mpo.jpg", format="MPO", save_all=True, append_images=[mpo.rotate(10)])
    files.append(root / "camera.mpo.jpg")
    for w, h in ((640, 480), (33, 300), (250, 180), (20, 20)):
        arr = smooth(w, h)
        Image.fromarray(arr).save(root / f"s{w}x{h}.jpg", quality=85)
        Image.fromarray(arr).save(root / f"s{w}x{h}.png")
        files += [root / f"s{w}x{h}.jpg", root / f"s{w}x{h}.png"]
    Image.fromarray(smooth(400, 300)).save(root / "progressive.jpg", progressive=True, quality=80)
    Image.fromarray(smooth(300, 200)[..., 0]).save(root / "grey.jpg", quality=90)
    Image.merge(
        "LA", [Image.fromarray(smooth(90, 70)[..., 0]), Image.fromarray(smooth(90, 70)[..., 1])]
    ).save(root / "la.png")
    Image.fromarray(smooth(120, 90)).convert("P").save(root / "p_trns.png", transparency=3)
    Image.fromarray(smooth(64, 64)[..., 0] > 128).save(root / "bilevel.png")
    files += [root / n for n in ("progressive.jpg", "grey.jpg", "la.png", "p_trns.png", "bilevel.png")]
    for o in range(1, 9):
        img = Image.fromarray(smooth(160, 100))
        exif = img.getexif()
        exif[0x0112] = o
        img.save(root / f"orient{o}.jpg", "JPEG", exif=exif.tobytes(), quality=90)
        files.append(root / f"orient{o}.jpg")
    return files


def test_graph_decoder_equals_load_rgb(tmp_path: Path) -> None:
    import tensorflow as tf

    from workbench.data.images import load_rgb
    from workbench.export.serving import decode_rgb

    files = _image_zoo(tmp_path)
    for size in ((32, 32), (96, 96), (57, 43)):
        fn = tf.function(lambda b, size=size: decode_rgb(b, *size))
        for path in files:
            got = fn(tf.constant(path.read_bytes())).numpy()
            np.testing.assert_array_equal(got, load_rgb(path, size), err_msg=f"{path.name} at {size}")


CALIBRATORS = {
    "identity": {"method": "identity", "format_version": 2, "prior_offset": 0.4, "params": {}},
    "temperature": {
        "method": "temperature",
        "format_version": 2,
        "prior_offset": -0.3,
        "params": {"weight": 0.62},
    },
    "platt": {
        "method": "platt",
        "format_version": 2,
        "prior_offset": 0.0,
        "params": {"weight": 1.7, "bias": -0.45},
    },
    "beta": {
        "method": "beta",
        "format_version": 2,
        "prior_offset": 0.2,
        "params": {"a": 0.8, "b": 1.3, "c": 0.1},
    },
    "isotonic": {
        "method": "isotonic",
        "format_version": 2,
        "prior_offset": 0.1,
        "params": {
            "x": [-6.0, -1.5, -1.5, -0.2, 0.3, 0.3, 2.0, 9.0],
            "y": [0.0, 0.05, 0.1, 0.1, 0.4, 0.55, 0.8, 1.0],
        },
    },
    "isotonic_v1": {
        "method": "isotonic",
        "format_version": 1,
        "params": {"x": [0.01, 0.2, 0.5, 0.5, 0.9], "y": [0.0, 0.1, 0.3, 0.6, 0.95]},
    },
    "histogram": {
        "method": "histogram",
        "format_version": 2,
        "params": {"edges": list(np.linspace(0, 1, 6)), "values": [0.02, 0.1, 0.1, 0.5, 0.9]},
    },
    "bbq": {
        "method": "bbq",
        "format_version": 2,
        "params": {
            "weights": [0.3, 0.7],
            "models": [
                {"edges": list(np.linspace(0, 1, 4)), "values": [0.05, 0.4, 0.9]},
                {"edges": [0.0, 0.1, 0.35, 0.5, 0.8, 1.0], "values": [0.0, 0.2, 0.2, 0.6, 0.97]},
            ],
        },
    },
}


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_calibrator_tf_equals_numpy(name: str) -> None:
    import tensorflow as tf

    from workbench.export.serving import calibrator_tf

    params = CALIBRATORS[name]
    cal = calibrator_from_json(params)
    knots = np.asarray(params["params"].get("x", []), np.float64)
    z = np.concatenate([np.linspace(-40, 40, 4001), knots, knots + 0.1, [0.0, -1e-12, 36.5, -36.5]])
    if params.get("format_version") == 2 and name.startswith("isotonic"):
        z = np.concatenate([z, knots + params["prior_offset"]])  # exactly on the table's knots
    got = tf.function(calibrator_tf(params))(tf.constant(z, tf.float64)).numpy()
    np.testing.assert_allclose(got, cal.transform(z), rtol=0, atol=1e-12)


def _serve_images(saved_model: Path, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Run serve_images from a fresh tf.saved_model.load, in batches of 50 encoded pairs."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model)).signatures["serve_images"]
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(pairs), 50):
        chunk = pairs[i : i + 50]
        res = fn(
            pre=tf.constant([Path(p).read_bytes() for p, _ in chunk]),
            post=tf.constant([Path(q).read_bytes() for _, q in chunk]),
        )
        for k, v in res.items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def test_serve_images_matches_workbench_predict(exported: Exported, keras_rows: list[dict]) -> None:
    import tensorflow as tf

    sig = tf.saved_model.load(str(exported.info.path / "saved_model")).signatures["serve_images"]
    assert set(sig.structured_input_signature[1]) == {"pre", "post"}
    assert set(sig.structured_outputs) == {"logit", "calibrated_probability", "decision"}
    out = _serve_images(exported.info.path / "saved_model", exported.pairs)
    want = np.array([r["calibrated_probability"] for r in keras_rows])
    assert out["calibrated_probability"].dtype == np.float64
    assert np.max(np.abs(out["calibrated_probability"] - want)) <= PROB_TOL
    assert np.max(np.abs(out["logit"] - np.array([r["logit"] for r in keras_rows]))) <= 1e-4
    assert [d.decode() for d in out["decision"]] == [r["decision"] for r in keras_rows]


@pytest.mark.parametrize("name", ["identity", "temperature", "platt", "isotonic", "histogram", "bbq", "beta"])
def test_serve_images_each_calibrator(
    name: str, exported: Exported, keras_rows: list[dict], tmp_path: Path
) -> None:
    """serve_images with each calibrator inside the graph, against workbench predict's NumPy calibrator,
    at a threshold that splits the 200 calibrated probabilities in half."""
    from workbench.export.bundle import _write_saved_model

    params = CALIBRATORS[name]
    z = np.array([r["logit"] for r in keras_rows])
    want = calibrator_from_json(params).transform(z)
    threshold = _midpoint_threshold(want)
    model = load_bundle(exported.info.path).model
    _write_saved_model(
        model, tmp_path / "sm", backbone="small_cnn", calibration_parameters=params, threshold=threshold
    )
    out = _serve_images(tmp_path / "sm", exported.pairs)
    assert np.max(np.abs(out["calibrated_probability"] - want)) <= PROB_TOL
    assert np.array_equal(out["decision"] == b"positive", want >= threshold)


def test_aligned_model_bundle_aligns_in_both_runtimes_and_has_no_image_signature(
    exported: Exported, tmp_path: Path
) -> None:
    """A model trained with ``model.align_shots``: preprocessing.json says so, the Keras and ONNX runtimes
    both align the shots (same probabilities as the workbench's stored predictions), and the SavedModel
    offers no in-graph ``serve_images`` (alignment runs outside the graph)."""
    from factories import exported_tiny_bundle
    from workbench.export.serving import SIGNATURE
    from workbench.model.predictions import load_predictions

    engine, _, version_id, info = exported_tiny_bundle(
        tmp_path / "aligned", n_boot=20, model={"align_shots": True}
    )
    preprocessing = json.loads((info.path / "preprocessing.json").read_text())
    assert preprocessing["align_shots"] is True and "align_pre" in preprocessing["alignment"]
    serving = json.loads((info.path / "manifest.json").read_text())["serving"]
    assert SIGNATURE not in serving["signatures"] and SIGNATURE in serving["note"]
    card = (info.path / "README.md").read_text()
    assert "Shot alignment: the pre image is registered onto the post image" in card
    assert "it has no `serve_images` signature" in card
    assert "Shot alignment: none" in (exported.info.path / "README.md").read_text()
    stored = load_predictions(engine, version_id, "test")
    from sqlalchemy import select

    from workbench.db.engine import session_scope
    from workbench.db.models import Case

    with session_scope(engine) as s:
        cases = s.execute(
            select(Case.id, Case.pre_path, Case.post_path).where(Case.id.in_(stored.case_ids.tolist()))
        ).all()
    engine.dispose()
    by_id = {c.id: (c.pre_path, c.post_path) for c in cases}
    pairs = [by_id[int(c)] for c in stored.case_ids]
    for runtime in ("keras", "onnx"):
        logits = load_bundle(info.path, runtime=runtime).logits(pairs)
        np.testing.assert_allclose(logits, stored.logit, atol=1e-4)
    unaligned = load_inputs(pairs, (32, 32), "small_cnn", align=False)
    z_plain = OnnxModel(info.path / ONNX_FILE).logits(unaligned)
    assert np.abs(z_plain - stored.logit).max() > 1e-4
    # and the unaligned bundle of this module says the opposite
    plain = json.loads((exported.info.path / "preprocessing.json").read_text())
    assert plain["align_shots"] is False
