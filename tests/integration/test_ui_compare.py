"""The Models page compares two versions with the paired DeLong test (AppTest on a real SQLite workbench)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from factories import label_of, make_cases, make_version
from workbench.config import load_settings
from workbench.db.engine import engine_from_settings
from workbench.db.schema import upgrade
from workbench.model.predictions import write_predictions
from workbench.users import add_user

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TIMEOUT = 60


@dataclass
class Scored:
    engine: Engine
    strong: int
    weak: int
    twin: int
    n: int
    positives: int


@pytest.fixture
def scored() -> Iterator[Scored]:
    """This test's workbench (conftest's WORKBENCH_HOME): a labeller and three versions' test logits."""
    settings = load_settings()
    settings.ensure_home()
    engine = engine_from_settings(settings)
    upgrade(engine)
    add_user(engine, "alice", "alice-password", "labeller")
    ids = make_cases(engine, {"test": 120}, positive_rate=0.3, seed=5)["test"]
    y = label_of(engine, ids)
    rng = np.random.default_rng(5)
    shared = rng.normal(2.0 * y, 1.0)
    versions = []
    for noise in (0.3, 3.0, 0.3):  # strong, weak, and a twin of strong
        z = shared + rng.normal(0, noise, len(ids))
        vid = make_version(engine)
        write_predictions(engine, vid, ids, z, 1 / (1 + np.exp(-z)), None)
        versions.append(vid)
    yield Scored(engine, *versions, n=len(ids), positives=int(y.sum()))
    engine.dispose()


def texts(elements) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for e in elements)


def models_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["wb_user"] = {"username": "alice", "role": "labeller", "via": "password"}
    at.run()
    at.switch_page("app_pages/models.py").run()
    assert not at.exception and not at.error, texts(at.error)
    return at


def test_models_page_compares_two_versions_with_the_paired_delong_test(scored: Scored) -> None:
    at = models_page()
    assert at.selectbox(key="compare_split").value == "test"
    assert at.selectbox(key="compare_a").options == [
        f"version {v}" for v in (scored.twin, scored.weak, scored.strong)
    ]
    at.selectbox(key="compare_a").set_value(scored.strong)
    at.selectbox(key="compare_b").set_value(scored.weak).run()
    at.button(key="compare_go").click().run()
    assert not at.exception and not at.error, texts(at.error)
    ctx = f"test (n={scored.n}, {scored.positives} positive)"
    verdict = texts(at.success)
    assert verdict.startswith(f"v{scored.strong} beats v{scored.weak} on {ctx}: ΔAUROC +0.")
    table = at.dataframe[-1].value
    assert list(table[""]) == [
        f"version {scored.strong} AUROC",
        f"version {scored.weak} AUROC",
        f"difference ({scored.strong} − {scored.weak})",
    ]
    assert table["estimate"].iloc[2].startswith("+0.")
    assert float(table["p-value"].iloc[2]) < 0.05

    # Another pair: the old result is not shown for it until compared; twins show no difference.
    at.selectbox(key="compare_b").set_value(scored.twin).run()
    assert not at.success
    at.button(key="compare_go").click().run()
    assert texts(at.info).count("no detectable difference between") == 1
    assert f"v{scored.strong} and v{scored.twin} on {ctx}" in texts(at.info)


def test_models_page_comparison_explains_what_is_missing(scored: Scored) -> None:
    at = models_page()
    at.selectbox(key="compare_a").set_value(scored.strong)
    at.selectbox(key="compare_b").set_value(scored.strong).run()
    at.button(key="compare_go").click().run()
    assert not at.exception
    assert "with a different version, not with itself" in texts(at.error)
    at.selectbox(key="compare_split").set_value("val").run()
    assert "Fewer than two versions have predictions on the val split" in texts(at.info)
