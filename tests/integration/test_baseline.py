"""The non-learned baseline: real synthetic image files imported into a fresh SQLite workbench, no mocks.

One module-scoped workbench imports 160 easy synthetic pairs (25% positive, 50:20:30 splits, so the
test split has about a dozen positives); model versions are rows with stored predictions (no model
needs to be trained to exercise the comparison).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from tests.factories import make_cases, make_version
from workbench.config import Settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Evaluation
from workbench.db.schema import upgrade
from workbench.errors import ValidationError, WorkbenchError
from workbench.evaluation.baseline import (
    PairRef,
    cache_dir,
    evaluate_baseline,
    features_for,
    labelled_split,
    pair_features,
    paired_difference,
)
from workbench.evaluation.baseline_verdict import baseline_lines, flag_verdict
from workbench.evaluation.version import attach_baseline, evaluate_version
from workbench.evaluation.whitening import FEATURE_NAMES
from workbench.model.predictions import write_predictions
from workbench.users import add_user

N_BOOT = 200


@dataclass
class Workbench:
    engine: Engine
    settings: Settings
    home: Path
    data: Path


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    root = tmp_path_factory.mktemp("baseline")
    settings = Settings(home=root / "home")
    settings.ensure_home()
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    kw = {"difficulty": "easy"} if "difficulty" in generate_dataset.__code__.co_varnames else {}
    data = generate_dataset(root / "data", n=160, positive_rate=0.25, seed=4, size=(96, 96), **kw)
    import_source(engine, data.manifest, proportions={"train": 0.5, "val": 0.2, "test": 0.3})
    yield Workbench(engine, settings, settings.home, root / "data")
    engine.dispose()


def _cli(wb: Workbench, monkeypatch: pytest.MonkeyPatch, *args: str):  # type: ignore[no-untyped-def]
    from workbench_cli import app

    monkeypatch.setenv("WORKBENCH_HOME", str(wb.home))
    return CliRunner().invoke(app, list(args))


def _version_with_predictions(wb: Workbench, quality: float, seed: int = 0) -> int:
    """A ready version whose test predictions separate the classes by ``quality`` (0: pure noise)."""
    ids, y = labelled_split(wb.engine, "test")
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, ids.size) + quality * (2 * y - 1)
    p = 1 / (1 + np.exp(-z))
    vid = make_version(wb.engine)
    write_predictions(wb.engine, vid, ids.tolist(), z, p, None)
    return vid


# ------------------------------------------------------------------------------------------------


def test_baseline_separates_easy_synthetic_data_and_names_split_n_positives(wb: Workbench) -> None:
    result = evaluate_baseline(wb.engine, wb.settings, "test", n_boot=N_BOOT)
    ids, y = labelled_split(wb.engine, "test")
    assert (result["split"], result["n"], result["positives"]) == ("test", ids.size, int(y.sum()))
    assert result["positives"] >= 8
    assert result["fitted_on"]["split"] == "train" and result["fitted_on"]["positives"] > 0
    auroc, auprc = result["auroc"], result["auprc"]
    assert auroc["value"] > 0.85, result
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert auprc["low"] <= auprc["value"] <= auprc["high"]
    assert auprc["value"] > y.mean()  # above prevalence
    text = "\n".join(baseline_lines(result))
    assert f"test (n={ids.size}, {int(y.sum())} positive)" in text
    json.dumps(result)  # JSON-safe


def test_features_are_cached_per_pair_and_read_back(wb: Workbench, tmp_path: Path) -> None:
    ids, _ = labelled_split(wb.engine, "test")
    from workbench.evaluation.baseline import case_refs

    refs = case_refs(wb.engine, ids[:3].tolist())
    other = Settings(home=wb.home, artifact_root=str(tmp_path / "artifacts"))
    x = features_for(refs, other, workers=1)
    assert x.shape == (3, len(FEATURE_NAMES)) and np.isfinite(x).all()
    files = sorted(cache_dir(other).rglob("*.npy"))
    assert [f.stem for f in files] == sorted(r.pair_sha256 for r in refs)
    assert not list(cache_dir(other).rglob("*.tmp"))
    # A cached vector is used instead of decoding: plant a marker vector and read it back.
    marker = np.arange(len(FEATURE_NAMES), dtype=np.float64)
    np.save(files[0], marker)
    again = features_for(refs, other, workers=1)
    row = [r.pair_sha256 for r in refs].index(files[0].stem)
    np.testing.assert_array_equal(again[row], marker)
    # A corrupt cache file is recomputed, not trusted.
    files[0].write_bytes(b"not numpy")
    np.testing.assert_allclose(features_for(refs, other, workers=1)[row], x[row])


def test_features_ignore_exposure_drift_and_work_on_png_and_small_images(
    wb: Workbench, tmp_path: Path
) -> None:
    from PIL import Image

    case = next(p for p in (wb.data / "cases").iterdir() if p.is_dir())
    pre = np.asarray(Image.open(next(case.glob("pre.*"))).convert("RGB"), dtype=np.float32)
    post = np.asarray(Image.open(next(case.glob("post.*"))).convert("RGB"), dtype=np.float32)
    Image.fromarray(pre.astype(np.uint8)).save(tmp_path / "pre.png")
    Image.fromarray(post.astype(np.uint8)).save(tmp_path / "post.png")
    # Post 15% darker with a blue-ish white-balance shift: per-channel median normalisation cancels it.
    drift = np.clip(post * np.array([0.8, 0.85, 0.95]), 0, 255).astype(np.uint8)
    Image.fromarray(drift).save(tmp_path / "post_drift.png")
    base = pair_features(tmp_path / "pre.png", tmp_path / "post.png")
    shifted = pair_features(tmp_path / "pre.png", tmp_path / "post_drift.png")
    assert np.isfinite(base).all()
    linear = [i for i, name in enumerate(FEATURE_NAMES) if not name.startswith("log_")]
    np.testing.assert_allclose(shifted[linear], base[linear], atol=0.03)
    logs = [i for i, name in enumerate(FEATURE_NAMES) if name.startswith("log_")]
    np.testing.assert_allclose(np.exp(shifted[logs]), np.exp(base[logs]), atol=0.005)  # fractions of tissue
    Image.fromarray(pre.astype(np.uint8)).resize((64, 64)).save(tmp_path / "small_pre.jpg")
    Image.fromarray(post.astype(np.uint8)).resize((64, 64)).save(tmp_path / "small_post.jpg")
    assert np.isfinite(pair_features(tmp_path / "small_pre.jpg", tmp_path / "small_post.jpg")).all()
    with pytest.raises(ValidationError, match="baseline: case c1"):
        features_for(
            [PairRef(1, "c1", str(tmp_path / "nope.png"), str(tmp_path / "post.png"), "ab" * 32)], None
        )


def test_paired_difference_and_flag_rule() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    good = np.clip(0.5 + 0.4 * (2 * y - 1) + rng.normal(0, 0.2, 300), 0, 1)
    weak = np.clip(0.5 + 0.05 * (2 * y - 1) + rng.normal(0, 0.2, 300), 0, 1)
    diff = paired_difference(y, good, weak, n_boot=300)
    assert diff["auroc"]["delta"] > 0.2 and diff["auroc"]["low"] > 0
    assert flag_verdict(diff["auroc"])[0] is False
    worse = paired_difference(y, weak, good, n_boot=300)
    assert worse["auroc"]["delta"] < 0 and flag_verdict(worse["auroc"])[0] is True
    same = paired_difference(y, good, good, n_boot=300)
    assert same["auroc"]["delta"] == 0 and flag_verdict(same["auroc"])[0] is True  # below the margin
    assert flag_verdict({"delta": 0.1, "low": -0.01, "high": 0.2}) == (
        True,
        "the paired 95% interval of the AUROC difference includes 0",
    )
    assert flag_verdict({"delta": None})[0] is None


def test_evaluate_cli_shows_the_baseline_and_flags_a_model_worse_than_it(
    wb: Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    vid = _version_with_predictions(wb, quality=0.0)  # noise: far worse than the baseline
    res = _cli(wb, monkeypatch, "evaluate", str(vid), "--split", "test")
    assert res.exit_code == 0, res.output
    ids, y = labelled_split(wb.engine, "test")
    ctx = f"test (n={ids.size}, {int(y.sum())} positive)"
    lines = res.stdout.splitlines()
    base = [ln for ln in lines if "Baseline (non-learned" in ln]
    assert len(base) == 1 and base[0].startswith(ctx) and "fitted on train (n=" in base[0]
    assert any(ln.startswith(f"{ctx}: Model minus baseline (paired") for ln in lines)
    flag = [ln for ln in lines if ln.startswith("FLAG")]
    assert len(flag) == 1 and ctx in flag[0] and "does NOT clearly beat the baseline" in flag[0]
    # The stored report carries the baseline with its split, n, positives and intervals.
    with session_scope(wb.engine) as s:
        ev = s.scalar(select(Evaluation).where(Evaluation.model_version_id == vid))
        b = ev.report["baseline"]
    assert (b["split"], b["n"], b["positives"]) == ("test", ids.size, int(y.sum()))
    assert b["auroc"]["low"] is not None and b["comparison"]["flagged"] is True
    cmp = b["comparison"]["auroc"]
    assert cmp["delta"] < 0 and cmp["low"] <= cmp["delta"] <= cmp["high"]
    # --json has it too; --no-baseline leaves it out.
    res = _cli(wb, monkeypatch, "evaluate", str(vid), "--json")
    assert json.loads(res.stdout)["baseline"]["comparison"]["flagged"] is True
    res = _cli(wb, monkeypatch, "evaluate", str(vid), "--no-baseline")
    assert res.exit_code == 0 and "Baseline" not in res.stdout and "FLAG" not in res.stdout


def test_baseline_cli_prints_metrics_for_a_split(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _cli(wb, monkeypatch, "baseline", "--split", "val", "--n-boot", "100")
    assert res.exit_code == 0, res.output
    ids, y = labelled_split(wb.engine, "val")
    assert f"val (n={ids.size}, {int(y.sum())} positive): Baseline" in res.stdout
    assert "AUROC" in res.stdout and "[" in res.stdout


def test_bad_input_is_one_line(wb: Workbench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    res = _cli(wb, monkeypatch, "baseline", "--split", "nope")
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: split must be one of train, val, test, got 'nope'"
    # A workbench without labelled train cases: one line naming the problem, before any decoding.
    home = tmp_path / "empty"
    home.mkdir()
    eng = create_db_engine(f"sqlite:///{home / 'workbench.db'}")
    upgrade(eng)
    make_cases(eng, {"test": 6, "pool": 4})
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    from workbench_cli import app

    res = CliRunner().invoke(app, ["baseline"])
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: baseline: the train split has no labelled cases to fit on"
    make_cases(eng, {"train": 5}, positive_rate=0.0)
    res = CliRunner().invoke(app, ["baseline"])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "needs labelled positive and negative cases" in res.stderr
    with pytest.raises(WorkbenchError, match=r"it has 5 labelled \(0 positive\)"):
        evaluate_baseline(eng, None, "train")
    eng.dispose()


def test_unavailable_baseline_does_not_break_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cases whose files are gone: the evaluation still comes back, with one line saying why."""
    home = tmp_path / "h"
    home.mkdir()
    eng = create_db_engine(f"sqlite:///{home / 'workbench.db'}")
    upgrade(eng)
    cases = make_cases(eng, {"train": 20, "test": 20}, positive_rate=0.4, seed=2)
    vid = make_version(eng)
    p = np.linspace(0.1, 0.9, 20)
    write_predictions(eng, vid, cases["test"], np.log(p / (1 - p)), p, None)
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    from workbench_cli import app

    res = CliRunner().invoke(app, ["evaluate", str(vid)])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if "baseline" in ln)
    assert "(n=20," in line and "not available" in line and "file not found" in line
    eng.dispose()


def test_attach_baseline_fills_a_stored_evaluation_and_the_card_shows_it(wb: Workbench) -> None:
    from workbench.export.card import render_card

    vid = _version_with_predictions(wb, quality=0.2, seed=1)
    report, method = evaluate_version(wb.engine, wb.settings, vid, "test", n_boot=N_BOOT, baseline=False)
    assert report.baseline is None and method == "none"
    section = attach_baseline(wb.engine, wb.settings, vid, "test")
    assert section["available"] and section["n"] == report.n and section["positives"] == report.positives
    assert section["comparison"]["flagged"] is True
    with session_scope(wb.engine) as s:
        stored = s.scalar(select(Evaluation).where(Evaluation.model_version_id == vid)).report
    assert stored["baseline"] == section
    # The model card renders it next to the model's AUROC, with the flag up front.
    facts = {
        "model_version": vid,
        "backbone": "small_cnn",
        "config": {},
        "calibration": {
            "method": "none",
            "fitted_on": {"split": "val", "n": 1, "positives": 1},
            "selection_rule": None,
        },
        "threshold": {"value": 0.5, "policy": "fixed"},
        "evaluations": {
            "test": {"method": "none", "n": report.n, "positives": report.positives, "report": stored}
        },
    }
    card = render_card(facts)
    ctx = f"test (n={report.n}, {report.positives} positive)"
    assert f"> **FLAG ({ctx}): this model does NOT clearly beat the non-learned whitening baseline**" in card
    assert "### Baseline to beat" in card
    assert f"- {ctx}: Baseline (non-learned whitening baseline" in card
    assert f"- {ctx}: Model minus baseline (paired" in card


def test_models_page_shows_baseline_and_flag(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    vid = _version_with_predictions(wb, quality=0.0, seed=2)
    # Stored without the baseline: the page computes it.
    evaluate_version(wb.engine, wb.settings, vid, "test", n_boot=N_BOOT, baseline=False)
    add_user(wb.engine, "alice", "alice-password", "labeller")
    monkeypatch.setenv("WORKBENCH_HOME", str(wb.home))
    app = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.session_state["wb_user"] = {"username": "alice", "role": "labeller", "via": "password"}
    at.run()
    at.switch_page("app_pages/models.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    row = table[table["version"] == vid].iloc[0]
    assert row["test baseline auroc"].startswith("0.") or row["test baseline auroc"].startswith("1.")
    assert "FLAG" in row["vs baseline"]
    warnings = "\n".join(str(w.value) for w in at.warning)
    assert f"Version {vid}" in warnings and "does not clearly beat" in warnings
