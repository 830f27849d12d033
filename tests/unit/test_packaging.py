"""The installed distribution: every library package listed, the adapters under names no other
distribution uses (``workbench_cli``, ``workbench_ui``, ``workbench_workers``), data files shipped."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {"workbench_cli": "cli", "workbench_ui": "ui", "workbench_workers": "workers"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_library_package_is_listed_and_adapters_are_mapped() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "workbench").rglob("__init__.py")}
    listed = set(setuptools["packages"])
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(ADAPTERS)
    assert setuptools["package-dir"] == ADAPTERS
    assert _pyproject()["project"]["scripts"]["workbench"] == "workbench_cli:main"


def test_adapters_import_under_their_own_names_only(tmp_path: Path) -> None:
    """From a folder outside the checkout: nothing claims the generic top-level names."""
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({n: u.find_spec(n) is not None for n in "
        "['cli', 'ui', 'workers', 'workbench_cli', 'workbench_ui', 'workbench_workers']}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    import json

    found = json.loads(out)
    assert found == {
        "cli": False,
        "ui": False,
        "workers": False,
        "workbench_cli": True,
        "workbench_ui": True,
        "workbench_workers": True,
    }


def test_wheel_holds_the_renamed_adapters_and_the_data_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"workbench", "workbench_cli", "workbench_ui", "workbench_workers"}
    for needed in (
        "workbench_ui/app.py",
        "workbench_ui/app_pages/label.py",
        "workbench_workers/tasks.py",
        "workbench_cli/__init__.py",
        "workbench/export/templates/model_card.md.j2",
        "workbench/data/importer/run.py",
    ):
        assert needed in names, needed
