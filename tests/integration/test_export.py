"""Export bundle, model card, standalone prediction and promotion, on a REAL tiny trained model.

One module-scoped workbench (SQLite) imports 30 synthetic pairs, trains a tiny small_cnn at 32x32 for
one epoch, scores every labelled split, calibrates and exports; the tests then check the bundle
against the workbench's own stored predictions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select

from factories import TINY_TRAIN, exported_tiny_bundle
from workbench.actors import LOCAL_OPERATOR
from workbench.calibration.service import calibrated_probabilities
from workbench.config import Settings
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Calibration, Case, Evaluation, Label, ModelVersion, Prediction, Promotion
from workbench.db.schema import upgrade
from workbench.errors import ConflictError, NotFoundError, PermissionDenied, ValidationError, WorkbenchError
from workbench.evaluation.report import evaluate
from workbench.export.bundle import BundleInfo, export_bundle
from workbench.export.card import render_card
from workbench.export.facts import collect_facts
from workbench.export.predict import load_bundle
from workbench.export.promotion import best_by_rule, current_best, promote, resolve_version
from workbench.users import add_user

TINY = TINY_TRAIN

METRIC_WORDS = re.compile(
    r"\b(AUROC|AUPRC|ECE|Brier|NLL|Sensitivity|Specificity|Accuracy|Precision|Recall|F1)\b", re.IGNORECASE
)


@dataclass
class Workbench:
    engine: Engine
    settings: Settings
    version_id: int
    info: BundleInfo
    root: Path


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    root = tmp_path_factory.mktemp("export")
    engine, settings, version_id, info = exported_tiny_bundle(root, n_boot=100)
    yield Workbench(engine, settings, version_id, info, root)
    engine.dispose()


def _stored(wb: Workbench, split: str | None = None) -> list[tuple[Case, Prediction]]:
    """(case, stored prediction) of the exported version, optionally on one split."""
    with session_scope(wb.engine) as s:
        q = (
            select(Case, Prediction)
            .join(Prediction, Prediction.case_id == Case.id)
            .where(Prediction.model_version_id == wb.version_id)
            .order_by(Case.id)
        )
        if split:
            q = q.where(Case.split == split)
        return [(c, p) for c, p in s.execute(q).all()]


def _preprocessed(case: Case, size: tuple[int, int] = (32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """The pair as the model sees it, built from the workbench's own decode and preprocessing."""
    from workbench.model.builder import preprocess_fn
    from workbench.model.pipeline import load_pair

    prep = preprocess_fn("small_cnn")
    pre, post = load_pair(case.pre_path, case.post_path, size)
    return (
        np.asarray(prep(pre.astype(np.float32)), np.float32)[None],
        np.asarray(prep(post.astype(np.float32)), np.float32)[None],
    )


def metric_lines_without_context(text: str) -> list[str]:
    """Lines that show a metric word and a number (other than the metric's own name) but no '(n='."""
    bad = []
    for line in text.splitlines():
        if METRIC_WORDS.search(line) and re.search(r"\d", METRIC_WORDS.sub("", line)) and "(n=" not in line:
            bad.append(line)
    return bad


# ------------------------------------------------------------------------------------------------
# Bundle contents


def test_bundle_files_match_the_database(wb: Workbench) -> None:
    b = wb.info.path
    assert wb.info.zip_path is not None and wb.info.zip_path.is_file()
    # model.h5 is promised by the README (a legacy copy for other tools): a bundle without it is a bug.
    required = (
        "model.keras",
        "model.h5",
        "calibration.json",
        "threshold.json",
        "preprocessing.json",
        "README.md",
    )
    for name in required:
        assert (b / name).is_file(), name
    assert (b / "saved_model" / "saved_model.pb").is_file()
    assert not list(b.parent.glob(".tmp-*")), "temporary build folder left behind"
    manifest = json.loads((b / "manifest.json").read_text())
    on_disk = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    from workbench.files import sha256_file

    for name, entry in manifest["files"].items():
        assert sha256_file(b / name) == entry["sha256"], name
    assert manifest["h5"] == {"written": True, "reason": None} and wb.info.h5_written

    with session_scope(wb.engine) as s:
        version = s.get(ModelVersion, wb.version_id)
        cal = s.get(Calibration, version.calibration_id)
        n_labels = len(s.scalars(select(Label)).all())
        assert manifest["files"]["model.keras"]["sha256"] == version.artifact_sha256
        assert manifest["training_data_counts"] == version.data_counts
        threshold = json.loads((b / "threshold.json").read_text())
        assert threshold["value"] == pytest.approx(version.threshold)
        assert threshold["policy"] == version.threshold_policy
        assert threshold["chosen_on"]["split"] == "val"
        assert "wilson_low" in threshold["chosen_on"]["sensitivity"]
        calibration = json.loads((b / "calibration.json").read_text())
        assert calibration["method"] == cal.method
        assert calibration["parameters"] == cal.params
        assert calibration["fitted_on"] == {"split": "val", "n": cal.n_fit, "positives": cal.positives_fit}
    prep = json.loads((b / "preprocessing.json").read_text())
    assert prep["backbone"] == "small_cnn" and prep["input_size"] == {"width": 32, "height": 32}
    assert manifest["lineage"][0]["model_version"] == wb.version_id
    assert sum(manifest["label_counts"]["by_source"]["import"].values()) == n_labels
    assert manifest["created_by"] == "operator:local" and manifest["model_version"] == wb.version_id


def test_fresh_process_keras_load_reproduces_stored_prediction(wb: Workbench, tmp_path: Path) -> None:
    case, pred = _stored(wb, "test")[0]
    pre, post = _preprocessed(case)
    np.save(tmp_path / "pre.npy", pre)
    np.save(tmp_path / "post.npy", post)
    code = (
        "import json, sys\n"
        "import numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1], safe_mode=True, compile=False)\n"
        "out = m({'pre': np.load(sys.argv[2]), 'post': np.load(sys.argv[3])}, training=False)\n"
        "print(json.dumps({'logit': float(np.asarray(out['logit'])[0, 0]),\n"
        "                  'probability': float(np.asarray(out['probability'])[0, 0]),\n"
        "                  'workbench_loaded': any(k.startswith('workbench') for k in sys.modules)}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(wb.info.path / "model.keras"),
            str(tmp_path / "pre.npy"),
            str(tmp_path / "post.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["workbench_loaded"] is False
    assert got["probability"] == pytest.approx(pred.probability, abs=1e-5)
    assert got["logit"] == pytest.approx(pred.logit, abs=1e-4)


def test_model_h5_round_trips_to_the_keras_model(wb: Workbench) -> None:
    """The shipped model.h5 loads (here, in the test: the workbench never loads it) and computes what
    model.keras computes."""
    import keras

    keras_model = keras.models.load_model(wb.info.path / "model.keras", safe_mode=True, compile=False)
    h5_model = keras.models.load_model(wb.info.path / "model.h5", compile=False)
    inputs = [_preprocessed(case) for case, _ in _stored(wb)[:4]]
    x = {"pre": np.concatenate([p for p, _ in inputs]), "post": np.concatenate([q for _, q in inputs])}
    want = np.asarray(keras_model(x, training=False)["logit"])
    got = np.asarray(h5_model(x, training=False)["logit"])
    assert want.shape == (4, 1) and np.allclose(got, want, atol=1e-5), (got, want)


def _rehashed_copy(wb: Workbench, target: Path, name: str, data: bytes) -> Path:
    """A copy of the bundle whose file ``name`` holds ``data``, with manifest.json updated to match (so
    only what the file holds, not its checksum, decides what loading does)."""
    from workbench.files import sha256_file

    shutil.copytree(wb.info.path, target)
    (target / name).write_bytes(data)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"][name]["sha256"] = sha256_file(target / name)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_a_bundle_model_holding_a_lambda_layer_is_refused_not_run(wb: Workbench, tmp_path: Path) -> None:
    import keras

    from conftest import run_cli

    marker = tmp_path / "lambda-ran"
    path = str(marker)
    pre, post = keras.Input((32, 32, 3), name="pre"), keras.Input((32, 32, 3), name="post")
    hidden = keras.layers.Lambda(lambda t: t * 0.0 + float(len(open(path, "w").name) > 0))(pre)  # noqa: SIM115
    logit = keras.layers.Dense(1, name="logit")(keras.layers.GlobalAveragePooling2D()(hidden + post))
    evil = keras.Model(
        {"pre": pre, "post": post}, {"logit": logit, "probability": keras.activations.sigmoid(logit)}
    )
    evil.save(tmp_path / "evil.keras")
    marker.unlink()  # building the model ran the lambda once; loading must not run it again
    bundle = _rehashed_copy(wb, tmp_path / "evil", "model.keras", (tmp_path / "evil.keras").read_bytes())

    with pytest.raises(
        WorkbenchError, match=r"model\.keras: refused: the model holds executable Python code"
    ):
        load_bundle(bundle)
    case, _ = _stored(wb, "test")[0]
    res = run_cli("predict", str(bundle), "--pre", case.pre_path, "--post", case.post_path)
    assert res.returncode == 1 and "refused: the model holds executable Python code" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists(), "the Lambda layer's code ran"


def test_prediction_never_loads_model_h5(wb: Workbench, tmp_path: Path) -> None:
    """A model.h5 that no Keras could load (checksum updated) changes nothing: prediction uses model.keras."""
    bundle = _rehashed_copy(wb, tmp_path / "junk-h5", "model.h5", b"not an HDF5 file")
    case, pred = _stored(wb, "test")[0]
    out = load_bundle(bundle).predict_pair(case.pre_path, case.post_path)
    assert out["raw_probability"] == pytest.approx(pred.probability, abs=1e-5)


def test_load_bundle_predicts_like_the_workbench(wb: Workbench, tmp_path: Path) -> None:
    bundle = load_bundle(wb.info.path)
    assert bundle.model_version == wb.version_id
    pairs = _stored(wb)[:3]
    with session_scope(wb.engine) as s:
        threshold = s.get(ModelVersion, wb.version_id).threshold
    for case, pred in pairs:
        out = bundle.predict_pair(case.pre_path, case.post_path)
        assert out["raw_probability"] == pytest.approx(pred.probability, abs=1e-5)
        assert out["logit"] == pytest.approx(pred.logit, abs=1e-4)
        expected_cal = float(calibrated_probabilities(wb.engine, wb.version_id, np.array([pred.logit]))[0])
        assert out["calibrated_probability"] == pytest.approx(expected_cal, abs=1e-5)
        assert out["threshold"] == pytest.approx(threshold)
        assert out["decision"] == ("positive" if out["calibrated_probability"] >= threshold else "negative")

    # A CSV with paths relative to its own folder, as documented.
    lines = ["case_id,pre_path,post_path"]
    for case, _ in pairs:
        lines.append(
            f"{case.external_id},{os.path.relpath(case.pre_path, tmp_path)},{os.path.relpath(case.post_path, tmp_path)}"
        )
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    rows = bundle.predict_csv(tmp_path / "pairs.csv")
    assert [r["case_id"] for r in rows] == [c.external_id for c, _ in pairs]
    for row, (_, pred) in zip(rows, pairs, strict=True):
        assert row["raw_probability"] == pytest.approx(pred.probability, abs=1e-5)

    # The zip holds the same bundle.
    zipped = load_bundle(wb.info.zip_path)
    case, pred = pairs[0]
    assert zipped.predict_pair(case.pre_path, case.post_path)["raw_probability"] == pytest.approx(
        pred.probability, abs=1e-5
    )


def test_predict_csv_rejects_bad_input(wb: Workbench, tmp_path: Path) -> None:
    bundle = load_bundle(wb.info.path)
    (tmp_path / "bad.csv").write_text("pre,post\na.png,b.png\n")
    with pytest.raises(ValidationError, match="missing column"):
        bundle.predict_csv(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("pre_path,post_path\nnope/pre.png,nope/post.png\n")
    with pytest.raises(ValidationError, match="not found"):
        bundle.predict_csv(tmp_path / "gone.csv")


def test_saved_model_serves_the_same_numbers(wb: Workbench) -> None:
    import tensorflow as tf

    served = tf.saved_model.load(str(wb.info.path / "saved_model"))
    signature = served.signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"pre", "post"}
    assert set(signature.structured_outputs) == {"logit", "probability"}
    for case, pred in _stored(wb, "val")[:2]:
        pre, post = _preprocessed(case)
        out = served.serve(pre=tf.constant(pre), post=tf.constant(post))
        assert float(out["probability"][0, 0]) == pytest.approx(pred.probability, abs=1e-5)
        assert float(out["logit"][0, 0]) == pytest.approx(pred.logit, abs=1e-4)
        by_sig = signature(pre=tf.constant(pre), post=tf.constant(post))
        assert float(by_sig["probability"][0, 0]) == pytest.approx(pred.probability, abs=1e-5)


def test_modified_or_incomplete_bundle_is_refused(wb: Workbench, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(wb.info.path, copy)
    model = copy / "model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(WorkbenchError, match=r"model\.keras: sha256 mismatch \(bundle modified\?\)"):
        load_bundle(copy)

    shutil.rmtree(copy)
    shutil.copytree(wb.info.path, copy)
    (copy / "threshold.json").unlink()
    with pytest.raises(WorkbenchError, match=r"threshold\.json: missing"):
        load_bundle(copy)

    shutil.rmtree(copy)
    shutil.copytree(wb.info.path, copy)
    (copy / "saved_model" / "variables" / "extra.bin").write_bytes(b"x")
    with pytest.raises(WorkbenchError, match=r"saved_model/variables/extra\.bin: not listed"):
        load_bundle(copy)


# ------------------------------------------------------------------------------------------------
# Model card


def test_model_card_names_split_on_every_metric_line(wb: Workbench) -> None:
    text = (wb.info.path / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    import yaml  # a dev dependency: a missing one fails here, never skips

    meta = yaml.safe_load(front)
    assert meta["library_name"] == "keras" and meta["license"] and "tags" in meta and meta["pipeline_tag"]

    for section in (
        "## Model Details",
        "### Direct Use",
        "### Downstream Use",
        "### Out-of-Scope Use",
        "## Bias, Risks, and Limitations",
        "## Recommendations",
        "## How to Get Started",
        "## Training Details",
        "## Operating Threshold",
        "## Evaluation",
        "### Threshold sweep",
        "### Confusion matrix",
        "### Calibration",
    ):
        assert section in body, section
    assert "regulatory approval" in body and "non-cervical" in body
    assert 'keras.models.load_model("model.keras"' in body and "workbench predict" in body

    # The checker itself catches an out-of-context metric line.
    assert metric_lines_without_context("- AUROC 0.91\n- F1 at threshold 0.5 test (n=3, 1 positive)") == [
        "- AUROC 0.91"
    ]
    assert metric_lines_without_context(body) == []

    with session_scope(wb.engine) as s:
        version = s.get(ModelVersion, wb.version_id)
        cal = s.get(Calibration, version.calibration_id)
        ev = s.scalar(
            select(Evaluation).where(
                Evaluation.model_version_id == wb.version_id,
                Evaluation.split == "test",
                Evaluation.method == cal.method,
            )
        )
        assert ev is not None
        ctx = f"test (n={ev.n}, {ev.positives} positive)"
        sweep = ev.report["sweep"]
    # ONE named split: every Results / sweep / confusion line uses the test split's context.
    results = body.split("### Results", 1)[1].split("###", 1)[0]
    assert all(ctx in line for line in results.splitlines() if line.startswith("- "))
    assert sum(1 for line in body.splitlines() if line.startswith(f"| {ctx} | ")) >= len(sweep) + 2
    assert f"| uncalibrated (raw) | {ctx} |" in body
    assert f"| {cal.method} (selected) | {ctx} |" in body


def test_model_card_says_when_a_split_has_no_evaluation(wb: Workbench) -> None:
    facts = collect_facts(wb.engine, wb.version_id)
    facts["evaluations"] = {}
    text = render_card(facts, h5={"written": False, "reason": "not tried"})
    evaluation = text.split("## Evaluation", 1)[1].split("## Technical", 1)[0]
    assert "`test`: no evaluation stored" in evaluation and "`val`: no evaluation stored" in evaluation
    assert not re.search(r"AUROC|AUPRC|Sensitivity", evaluation)
    assert "NOT written: not tried" in text
    assert metric_lines_without_context(text) == []


CARD_SECTIONS = [
    "## Model Details",
    "## Uses",
    "## Bias, Risks, and Limitations",
    "## Recommendations",
    "## How to Get Started",
    "## Training Details",
    "## Operating Threshold",
    "## Evaluation",
    "## Technical Specifications",
]


def test_model_card_reads_the_model_facts_from_the_config_description(wb: Workbench) -> None:
    """The card comes from the shipped template, keeps every section, and states the backbone,
    fusion and preprocessing facts from the model config's description (not restated in the card)."""
    from importlib import resources

    from workbench.export.card import TEMPLATE
    from workbench.model.config import ModelConfig
    from workbench.model.description import describe

    assert resources.files("workbench.export").joinpath("templates", TEMPLATE).is_file()
    facts = collect_facts(wb.engine, wb.version_id)
    facts["config"]["model"].update(backbone="mobilenet_v2", dropout=0.25, token_dim=12, input_size=[40, 36])
    facts["backbone"] = "mobilenet_v2"
    text = render_card(facts)
    desc = describe(ModelConfig.from_dict(facts["config"]["model"]))
    assert [line for line in text.splitlines() if line.startswith("## ")] == CARD_SECTIONS
    assert text.startswith("---\nlicense: mit\n") and f"# {desc.title} for pre/post-stain" in text
    assert "- Normalise with `keras.applications.mobilenet_v2.preprocess_input`;" in text
    assert (
        f"- Fusion: {desc.fusion}." in text
        and "token dimension 12" in desc.fusion
        and "dropout 0.25" in desc.fusion
    )
    assert "resized to 40x36 (width x height)" in text and f"- Architecture: {desc.architecture}." in text


# ------------------------------------------------------------------------------------------------
# Export refusals


def test_export_refuses_labeller_and_non_empty_target(wb: Workbench, tmp_path: Path) -> None:
    add_user(wb.engine, "lab_export", "password123", "labeller")
    with pytest.raises(PermissionDenied, match="only an admin may export"):
        export_bundle(wb.engine, wb.settings, wb.version_id, tmp_path / "b", actor="lab_export")
    assert not (tmp_path / "b").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not empty"):
        export_bundle(wb.engine, wb.settings, wb.version_id, full, actor=LOCAL_OPERATOR)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".tmp-*"))


# ------------------------------------------------------------------------------------------------
# Promotion and the selection rule (rows only, no model)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Engine:
    eng = create_db_engine(sqlite_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def _version_with_val_eval(
    engine: Engine, y: np.ndarray, p: np.ndarray, status: str = "ready", calibrated: bool = True
) -> tuple[int, float]:
    """A version with (optionally) a selected calibration and its validation evaluation of ``p``."""
    from factories import make_version

    vid = make_version(engine, status=status)
    report = evaluate(y, p, split="val", n_boot=50)
    with session_scope(engine) as s:
        if calibrated:
            cal = Calibration(model_version_id=vid, method="temperature", params={"method": "temperature"})
            s.add(cal)
            s.flush()
            s.get(ModelVersion, vid).calibration_id = cal.id
        s.add(
            Evaluation(
                model_version_id=vid,
                split="val",
                method="temperature",
                n=report.n,
                positives=report.positives,
                report=report.to_dict(),
            )
        )
    return vid, float(report.auprc.value)


def test_promote_requires_admin_and_records_who_when_why(sqlite_engine: Engine) -> None:
    from factories import make_version

    ready, other = make_version(sqlite_engine), make_version(sqlite_engine)
    failed = make_version(sqlite_engine, status="failed")
    add_user(sqlite_engine, "lab1", "password123", "labeller")
    add_user(sqlite_engine, "boss", "password123", "admin")
    assert current_best(sqlite_engine) is None
    with pytest.raises(WorkbenchError, match="none has been promoted"):
        resolve_version(sqlite_engine, None)
    with pytest.raises(PermissionDenied):
        promote(sqlite_engine, ready, "lab1", "looks good")
    with pytest.raises(WorkbenchError, match="failed"):
        promote(sqlite_engine, failed, "boss", "why not")
    with pytest.raises(NotFoundError):
        promote(sqlite_engine, 9999, "boss", "ghost")
    with pytest.raises(ValidationError, match="reason"):
        promote(sqlite_engine, ready, "boss", "  ")
    assert current_best(sqlite_engine) is None

    promote(sqlite_engine, ready, "boss", "best validation AUPRC")
    assert current_best(sqlite_engine) == ready
    promote(sqlite_engine, other, LOCAL_OPERATOR, "newer labels")
    assert current_best(sqlite_engine) == other == resolve_version(sqlite_engine, None)
    assert resolve_version(sqlite_engine, ready) == ready
    with session_scope(sqlite_engine) as s:
        rows = s.scalars(select(Promotion).order_by(Promotion.id)).all()
        assert [(r.model_version_id, r.promoted_by, r.reason) for r in rows] == [
            (ready, "boss", "best validation AUPRC"),
            (other, "operator:local", "newer labels"),
        ]
        assert all(r.created_at is not None for r in rows)


def test_best_by_rule_picks_higher_validation_auprc(sqlite_engine: Engine) -> None:
    with pytest.raises(WorkbenchError, match="no model version qualifies"):
        best_by_rule(sqlite_engine)
    rng = np.random.default_rng(3)
    y = np.array([0] * 16 + [1] * 4)
    good = np.clip(0.15 + 0.6 * y + rng.normal(0, 0.15, y.size), 0.01, 0.99)
    weak = np.clip(0.3 + 0.15 * y + rng.normal(0, 0.25, y.size), 0.01, 0.99)
    perfect = np.where(y == 1, 0.9, 0.1)
    v_weak, auprc_weak = _version_with_val_eval(sqlite_engine, y, weak)
    v_good, auprc_good = _version_with_val_eval(sqlite_engine, y, good)
    # Better-looking but not eligible: not ready, or not calibrated.
    _version_with_val_eval(sqlite_engine, y, perfect, status="failed")
    v_uncal, _ = _version_with_val_eval(sqlite_engine, y, perfect, calibrated=False)
    assert auprc_good != auprc_weak
    winner = v_good if auprc_good > auprc_weak else v_weak
    chosen, why = best_by_rule(sqlite_engine)
    assert chosen == winner
    assert "validation AUPRC" in why and "val (n=20, 4 positive)" in why
    assert f"v{v_uncal}" in why.split("Not considered", 1)[1]


# ------------------------------------------------------------------------------------------------
# The CLI as a user runs it: `workbench predict` needs only the bundle (no database, no settings)


def test_workbench_predict_cli_matches_stored_prediction_and_refuses_tampering(
    wb: Workbench, tmp_path: Path
) -> None:
    import json as _json

    from conftest import run_cli

    case, pred = _stored(wb, "test")[0]
    env = {"WORKBENCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # unusable: must not be touched
    res = run_cli(
        "predict", str(wb.info.path), "--pre", case.pre_path, "--post", case.post_path, "--json", env=env
    )
    assert res.returncode == 0, res.stderr
    out = _json.loads(res.stdout.strip().splitlines()[-1])
    assert abs(out["raw_probability"] - pred.probability) < 1e-5
    assert out["decision"] in ("positive", "negative")
    copy = tmp_path / "tampered"
    shutil.copytree(wb.info.path, copy)
    model = copy / "model.keras"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    res = run_cli("predict", str(copy), "--pre", case.pre_path, "--post", case.post_path, env=env)
    assert res.returncode == 1
    assert "model.keras: sha256 mismatch" in res.stderr and "Traceback" not in res.stderr


def test_export_removes_build_folders_a_killed_export_left(wb: Workbench, tmp_path: Path) -> None:
    """A SIGKILLed export cannot clean up: the next export to that folder removes its abandoned build
    (untouched for an hour), and leaves a recent one, which may be a live export's, alone."""
    import os
    import time

    from workbench.export.bundle import ABANDONED_BUILD_S

    abandoned, live, other = (tmp_path / n for n in (".tmp-b-dead", ".tmp-b-live", ".tmp-c-dead"))
    for folder in (abandoned, live, other):
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"half")
    old = time.time() - ABANDONED_BUILD_S - 60
    for folder in (abandoned, other):
        os.utime(folder, (old, old))
    export_bundle(wb.engine, wb.settings, wb.version_id, tmp_path / "b", actor=LOCAL_OPERATOR)
    assert (tmp_path / "b" / "manifest.json").exists()
    assert not abandoned.exists() and live.exists()
    assert other.exists()  # another target's build is not this export's business
