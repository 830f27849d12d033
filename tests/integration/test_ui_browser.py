"""End to end in headless Chromium: the real ``workbench ui`` server, login, labelling by keyboard only.

Skipped when /usr/bin/chromium is absent, except where ``REQUIRE_BROWSER_TESTS=1`` (``.ci/run`` sets it):
there a missing browser fails every test here, so a broken Chromium install cannot pass unnoticed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from test_ui_apptest import PASSWORDS, seed_workbench

from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Case, Label
from workbench.jobs import store

#: Debian's headless Chromium; BROWSER_TESTS_CHROMIUM names another (the skip logic's own test points it
#: at a missing file).
CHROMIUM = Path(os.environ.get("BROWSER_TESTS_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VALUES = {"n": 0, "p": 1}
#: Not a WORKBENCH_ variable: the settings refuse unknown ones, and CLI processes inherit it.
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER_TESTS") == "1"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not REQUIRE_BROWSER,
        reason=f"headless Chromium ({CHROMIUM}) is not installed (REQUIRE_BROWSER_TESTS=1 makes this fail)",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def _chromium_required() -> None:
    """Runs only when the module is not skipped: with REQUIRE_BROWSER_TESTS=1, no Chromium is a failure."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"headless Chromium ({CHROMIUM}) is not installed and REQUIRE_BROWSER_TESTS=1 requires it"
        )


@dataclass
class Server:
    url: str
    engine: Engine
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ui_command(port: int) -> list[str]:
    """The real console script when ``workbench ui`` is registered, else the same function directly."""
    exe = Path(sys.executable).parent / "workbench"
    probe = subprocess.run([str(exe), "ui", "--help"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return [str(exe), "ui", "--port", str(port), "--host", "127.0.0.1"]
    return [sys.executable, "-c", f"from cli.ui import ui; ui({port}, '127.0.0.1')"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui-browser")
    home = root / "home"
    home.mkdir()
    engine = create_db_engine(f"sqlite:///{home / 'workbench.db'}")
    seed_workbench(root, engine, n_cases=18)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env["WORKBENCH_HOME"] = str(home)
    log = root / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _ui_command(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the UI exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the UI did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    yield Server(url, engine, log)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def _log_in(page, url: str, user: str, wait_for_case: bool = True) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    page.get_by_text(f"Signed in as {user}").wait_for(timeout=30_000)
    if wait_for_case:
        page.get_by_test_id("stMetricValue").first.wait_for(timeout=30_000)


def _case_on_screen(page) -> str:  # type: ignore[no-untyped-def]
    return page.get_by_test_id("stMetricValue").first.inner_text().strip()


def _wait_settled(page, previous: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Wait until a case other than ``previous`` is fully rendered (the keyboard hint naming it comes
    last, after the buttons, so the shortcuts are bound to it); returns its id."""
    deadline = time.monotonic() + 30
    while (case := _case_on_screen(page)) == previous:
        assert time.monotonic() < deadline, f"case {previous} still on screen"
        time.sleep(0.1)
    page.get_by_text(f"Keyboard for case {case}:").wait_for(timeout=30_000)
    return case


def _press_and_wait(page, key: str, case: str) -> str:  # type: ignore[no-untyped-def]
    """Press a shortcut, wait until the page confirms the answer for ``case`` and shows the next case."""
    page.keyboard.press(key)
    page.get_by_text(f"Saved: case {case} =").wait_for(timeout=30_000)
    return _wait_settled(page, case)


def _expert_labels(engine: Engine) -> list[tuple[str, int | None, str]]:
    with session_scope(engine) as s:
        return [
            (external, value, who)
            for external, value, who in s.execute(
                select(Case.external_id, Label.value, Label.labeller)
                .join(Case, Case.id == Label.case_id)
                .where(Label.source == "expert")
                .order_by(Label.id)
            )
        ]


def test_label_three_cases_with_keyboard_shortcuts_only(server: Server, browser) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    try:
        _log_in(page, server.url, "alice")
        done = []
        case = _wait_settled(page)
        for key in ("n", "p", "n"):
            nxt = _press_and_wait(page, key, case)
            done.append((case, VALUES[key], "alice"))
            case = nxt
        assert _expert_labels(server.engine) == done
        assert len({case for case, _, _ in done}) == 3
        page.get_by_test_id("stImage").first.wait_for()
        page.wait_for_timeout(500)  # let the images finish painting
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "label-page.png"), full_page=True)
    finally:
        context.close()


def test_two_labellers_at_once_never_get_the_same_case(server: Server, browser) -> None:  # type: ignore[no-untyped-def]
    before = len(_expert_labels(server.engine))
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    pages = [c.new_page() for c in contexts]
    try:
        for page, user in zip(pages, ("alice", "bob"), strict=True):
            _log_in(page, server.url, user)
        seen: dict[str, list[str]] = {"alice": [], "bob": []}
        shown = {user: _wait_settled(page) for user, page in zip(seen, pages, strict=True)}
        for _ in range(3):
            assert shown["alice"] != shown["bob"]
            for page in pages:  # both answer before either page has moved on
                page.keyboard.press("n")
            for user, page in zip(seen, pages, strict=True):
                page.get_by_text(f"Saved: case {shown[user]} =").wait_for(timeout=30_000)
                seen[user].append(shown[user])
                shown[user] = _wait_settled(page, shown[user])
        assert not set(seen["alice"]) & set(seen["bob"])
        new = _expert_labels(server.engine)[before:]
        assert sorted((case, who) for case, _, who in new) == sorted(
            (case, who) for who, cases in seen.items() for case in cases
        )
        by_case: dict[str, set[str]] = {}
        for case, _, who in _expert_labels(server.engine):
            by_case.setdefault(case, set()).add(who)
        assert all(len(who) == 1 for who in by_case.values())  # no case was labelled by both
    finally:
        for c in contexts:
            c.close()


def test_a_running_job_refreshes_live_and_can_be_cancelled(server: Server, browser) -> None:  # type: ignore[no-untyped-def]
    job_id = store.create_job(server.engine, "sleep", {"seconds": 60}, requester="root", queue="cpu")
    assert store.claim_job(server.engine, job_id, "test-worker", max_attempts=3) is not None
    store.report_progress(server.engine, job_id, 0.2, "step 2/10")
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    try:
        _log_in(page, f"{server.url}/jobs", "root", wait_for_case=False)  # the deep link survives the login
        page.get_by_text("20% step 2/10").wait_for(timeout=30_000)
        store.report_progress(server.engine, job_id, 0.7, "step 7/10")
        page.get_by_text("70% step 7/10").wait_for(timeout=15_000)  # the fragment re-read the job row
        page.get_by_role("button", name="Cancel", exact=True).click()
        page.get_by_text("cancel requested").first.wait_for(timeout=15_000)
        assert store.get_job(server.engine, job_id).cancel_requested
    finally:
        context.close()
