"""The synth -> import path as a new user runs it, through the real console script."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli


def test_synth_then_import_twice(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    res = run_cli("synth", str(out), "--n", "200", "--size", "64x64")
    assert res.returncode == 0, res.stderr
    assert run_cli("db", "upgrade").returncode == 0
    res = run_cli("import", str(out / "manifest.csv"))
    assert res.returncode == 0, res.stderr
    assert "imported 200 new case(s)" in res.stdout
    table = {
        m[0]: (int(m[1]), int(m[2]), int(m[3]))
        for m in re.findall(r"^(train|val|test)\s+(\d+)\s+(\d+)\s+(\d+)", res.stdout, re.M)
    }
    assert sum(t[0] for t in table.values()) == 200
    for split, share in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(table[split][0] / 200 - share) <= 0.05, table
        assert table[split][2] >= 1, f"{split} has no positive: {table}"
    again = run_cli("import", str(out))  # the folder form finds manifest.csv
    assert again.returncode == 0, again.stderr
    assert "imported 0 new case(s)" in again.stdout and "200 already present" in again.stdout


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    res = run_cli("synth", str(tmp_path / "s"), "--size", "big")
    assert res.returncode != 0 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
    res = run_cli("synth", str(tmp_path / "s"), "--positive-rate", "2")
    assert res.returncode != 0 and "error:" in res.stderr
    assert run_cli("db", "upgrade").returncode == 0
    res = run_cli("import", str(tmp_path / "missing.csv"))
    assert res.returncode != 0 and "not found" in res.stderr
    res = run_cli("import", str(tmp_path), "--splits", "70:abc")
    assert res.returncode != 0 and "70:20:10" in res.stderr


def test_strict_import_exits_non_zero(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "manifest.csv").write_text("case_id,pre_path,post_path,label\na,a/pre.jpg,a/post.jpg,1\n")
    assert run_cli("db", "upgrade").returncode == 0
    lenient = run_cli("import", str(root))
    assert lenient.returncode == 0 and "not found" in lenient.stderr
    strict = run_cli("import", str(root), "--strict")
    assert strict.returncode == 1 and "nothing was imported" in strict.stderr
