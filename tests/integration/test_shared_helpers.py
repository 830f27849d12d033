"""The shared homes of issue 17 item 4: defaults (``workbench.defaults``), file helpers
(``workbench.files``) and the model-version lookup (``workbench.db.lookups``)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest

from workbench import defaults
from workbench.calibration.calibrators import METHOD_NAMES, get_calibrator
from workbench.calibration.thresholds import parse_policy
from workbench.files import atomic_replace, atomic_write_bytes, atomic_write_text, sha256_file, temp_path_for
from workbench.jobs.params import CalibrateParams, InferParams, RoundParams

ROOT = Path(__file__).resolve().parents[2]


# --- defaults ------------------------------------------------------------------------------------


def test_default_policy_and_methods_are_valid_for_calibration() -> None:
    assert str(parse_policy(defaults.DEFAULT_POLICY)) == defaults.DEFAULT_POLICY == "sensitivity>=0.9@95"
    assert set(defaults.DEFAULT_METHODS) <= set(METHOD_NAMES)
    assert [get_calibrator(m).method for m in defaults.DEFAULT_METHODS] == list(defaults.DEFAULT_METHODS)


def test_job_parameters_take_their_defaults_from_the_one_home() -> None:
    cal = CalibrateParams(model_version=1)
    assert cal.methods == list(defaults.DEFAULT_METHODS) and cal.policy == defaults.DEFAULT_POLICY
    rnd = RoundParams()
    assert rnd.methods == list(defaults.DEFAULT_METHODS) and rnd.policy == defaults.DEFAULT_POLICY
    assert InferParams(model_version=1, splits=list(defaults.SPLITS)).splits == list(defaults.SPLITS)
    with pytest.raises(Exception, match="pool, train, val, test"):
        InferParams(model_version=1, splits=["holdout"])


def test_settings_lease_and_case_splits_use_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.config import Settings
    from workbench.db.models import Case

    monkeypatch.delenv("WORKBENCH_LEASE_SECONDS", raising=False)
    assert Settings().lease_seconds == defaults.DEFAULT_LEASE_SECONDS == 600
    checks = [str(c.sqltext) for c in Case.__table__.constraints if c.name == "ck_cases_split"]
    assert checks == ["split IN (" + ", ".join(f"'{s}'" for s in defaults.SPLITS) + ")"]


@pytest.mark.parametrize("module", ["defaults", "files"])
def test_foundation_modules_import_nothing_from_workbench(module: str) -> None:
    """Both sit below every layer (tests/unit/test_layers.py): they may import no other workbench module."""
    tree = ast.parse((ROOT / "workbench" / f"{module}.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not {m for m in imported if m and m.startswith("workbench")}


# --- files ---------------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib_over_several_chunks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # crosses the 1 MiB chunk boundary
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_atomic_writes_replace_the_file_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    target.write_text("old", encoding="utf-8")
    assert atomic_write_text(target, "néw\n") == target
    assert target.read_text(encoding="utf-8") == "néw\n"
    assert atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "report.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"complete")
    with pytest.raises(RuntimeError, match="disk full"), atomic_replace(target, suffix=".tmp.keras") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_temporary_name_is_hidden_beside_the_target_and_keeps_the_suffix(tmp_path: Path) -> None:
    tmp = temp_path_for(tmp_path / "abc.npy", suffix=".tmp.npy")
    assert tmp.parent == tmp_path and tmp.name.startswith(".abc.npy.") and tmp.name.endswith(".tmp.npy")
    assert tmp != temp_path_for(tmp_path / "abc.npy", suffix=".tmp.npy")  # unique per call
    # a writer that appends its own extension (np.save) writes exactly the temporary name
    with atomic_replace(tmp_path / "abc.npy", suffix=".tmp.npy") as t:
        np.save(t, np.arange(3))
    assert np.load(tmp_path / "abc.npy").tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["abc.npy"]


# --- lookups -------------------------------------------------------------------------------------


def test_get_version_returns_the_row_or_names_the_missing_id(engine) -> None:
    from factories import make_version
    from workbench.db.engine import session_scope
    from workbench.db.lookups import get_version
    from workbench.errors import NotFoundError

    vid = make_version(engine, status="training")
    with session_scope(engine) as s:
        assert get_version(s, vid).status == "training"
        with pytest.raises(NotFoundError, match=rf"^no model version {vid + 1}$"):
            get_version(s, vid + 1)


def test_every_caller_reports_a_missing_version_the_same_way(engine) -> None:
    """The library functions that used to hand-write the lookup still refuse an unknown id alike."""
    from workbench.calibration.service import calibrate_version, load_curves
    from workbench.config import Settings
    from workbench.errors import NotFoundError
    from workbench.evaluation.version import evaluate_version
    from workbench.read.calibration import threshold_view

    calls = [
        lambda: calibrate_version(engine, 4242),
        lambda: load_curves(engine, [4242], None, "val"),
        lambda: evaluate_version(engine, Settings(), 4242),
        lambda: threshold_view(engine, 4242),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match="^no model version 4242$"):
            call()
