"""Layers only point down: no module of ``workbench/`` imports a module of a higher layer.

The layers, lowest first (a module belongs to the layer of its longest matching prefix below):

0. foundation: ``errors``, ``redaction``, ``config``, ``actors``, ``defaults`` (constants shared by
   several layers), ``files`` (sha256, atomic writes) (and the ``workbench`` package itself)
1. statistics: the numeric core of ``evaluation/`` (``bootstrap``, ``metrics``, ``confusion``, ``delong``,
   ``decision_curve``, ``report``, ``report_text``, ``report_plot``, ``baseline_verdict``,
   ``whitening``): arrays or dicts in, numbers, text and figures out; no database
2. ``db``
3. ``users``, ``oidc``
4. ``jobs``
5. ``data``
6. ``model``
7. ``calibration``
8. evaluation of stored versions: ``evaluation.baseline`` (fits and scores from the database) and
   ``evaluation.version`` (a version's report, which needs its calibration)
9. ``active``
10. ``export``
11. ``rounds``, ``experiments``, ``read`` (orchestration and read models for the adapters)

This order needs the fewest moves from the code as it stood: the numeric core of ``evaluation/`` is
used by ``model`` (the learning check) and ``calibration`` (measures, thresholds), so it sits low, while
evaluating a stored version needs ``calibration`` and sits above it. Every import counts, also one inside
a function (a lazy import is still a dependency). Imports within one layer are allowed.

``KNOWN_UPWARD`` lists the edges that another change removes; each one must still occur (a stale
exception fails), so it is deleted when that change lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "workbench"

_STATISTICS = [
    f"workbench.evaluation.{name}"
    for name in (
        "bootstrap",
        "metrics",
        "confusion",
        "delong",
        "decision_curve",
        "report",
        "report_text",
        "report_plot",
        "baseline_verdict",
        "whitening",
    )
]
LAYERS: list[list[str]] = [
    [
        "workbench",
        "workbench.errors",
        "workbench.redaction",
        "workbench.config",
        "workbench.actors",
        "workbench.defaults",
        "workbench.files",
        "workbench.faults",
    ],
    ["workbench.evaluation", *_STATISTICS],
    ["workbench.db"],
    ["workbench.users", "workbench.oidc"],
    ["workbench.jobs"],
    ["workbench.data"],
    ["workbench.model"],
    ["workbench.calibration"],
    ["workbench.evaluation.baseline", "workbench.evaluation.version"],
    ["workbench.active"],
    ["workbench.export"],
    ["workbench.rounds", "workbench.experiments", "workbench.read"],
]

#: (importing module, imported module) pairs that point up today and are removed by another change.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix matches ``module``; KeyError names an unplaced module."""
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every ``workbench`` module ``path`` imports, at any depth (functions included), relative resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # ``from workbench.jobs import runner`` imports a module
                sub = f"{target}.{alias.name}"
                is_module = (root.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    root.parent / Path(*sub.split(".")) / "__init__.py"
                ).exists()
                found.add(sub if is_module else target)
    return {m for m in found if m == root.name or m.startswith(root.name + ".")}


def upward_imports(root: Path) -> set[tuple[str, str]]:
    """(importer, imported) pairs where the imported module's layer is above the importer's."""
    edges = set()
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        for imported in imports_of(path, root):
            if layer_of(imported) > layer_of(importer):
                edges.add((importer, imported))
    return edges


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path, PACKAGE))  # raises KeyError naming the module


def test_layers_only_point_down():
    upward = upward_imports(PACKAGE) - KNOWN_UPWARD
    assert not upward, "upward imports:\n" + "\n".join(f"{a} -> {b}" for a, b in sorted(upward))


def test_known_exceptions_still_occur():
    stale = KNOWN_UPWARD - upward_imports(PACKAGE)
    assert not stale, "delete from KNOWN_UPWARD (no longer imported):\n" + "\n".join(map(str, sorted(stale)))


def test_checker_sees_upward_imports_inside_functions_and_relative(tmp_path):
    """The checker itself: a lazy import inside a function and a relative import both count."""
    pkg = tmp_path / "workbench"
    for sub in ("model", "calibration"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "calibration" / "service.py").write_text("X = 1\n")
    (pkg / "model" / "evaluate.py").write_text(
        "def f():\n    from workbench.calibration.service import X\n    return X\n"
    )
    (pkg / "model" / "scoring.py").write_text("from ..calibration import service\n")
    (pkg / "calibration" / "fit.py").write_text("from workbench.model import evaluate\n")
    assert upward_imports(pkg) == {
        ("workbench.model.evaluate", "workbench.calibration.service"),
        ("workbench.model.scoring", "workbench.calibration.service"),
    }


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("workbench.evaluation.metrics", 1),
        ("workbench.evaluation", 1),
        ("workbench.evaluation.version", 8),
        ("workbench.calibration.service", 7),
        ("workbench.errors", 0),
    ],
)
def test_longest_prefix_wins(module, layer):
    assert layer_of(module) == layer
