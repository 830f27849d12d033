"""What the workbench exposes: no password in any error (CLI, UI before login), the UI on 127.0.0.1
unless configured, durable SQLite commits, and a Keras floor before any bundle is opened."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import run_cli
from workbench.db.engine import create_db_engine
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Hunter2-Secret-pw"
#: Database URLs whose errors used to quote the password: an unknown driver, a port that is not a number
#: (a traceback), a server that refuses the connection, a role that does not exist.
BAD_URLS = {
    "unknown driver": f"postgres+nodriver://workbench:{PASSWORD}@127.0.0.1/workbench",
    "bad port": f"postgresql://workbench:{PASSWORD}@127.0.0.1:notaport/workbench",
    "unreachable": f"postgresql://workbench:{PASSWORD}@127.0.0.1:1/workbench",
    "unknown role": f"postgresql://nosuchrole:{PASSWORD}@127.0.0.1:5432/nosuchdb",
}


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_cli_errors_never_show_the_database_password(case: str) -> None:
    res = run_cli("cases", env={"WORKBENCH_DATABASE_URL": BAD_URLS[case]}, timeout=120)
    output = res.stdout + res.stderr
    assert res.returncode != 0, output
    assert PASSWORD not in output, output
    assert "Traceback" not in output, output
    assert output.startswith("error: ") and ":***@" in output, output


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_ui_error_before_login_never_shows_the_database_password(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", BAD_URLS[case])
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=60).run()
    shown = "\n".join(str(e.value) for e in at.error) + "".join(str(x.value) for x in at.exception)
    assert at.error and not at.exception, shown
    assert PASSWORD not in shown, shown


def test_sqlite_commits_are_durable_on_power_loss(tmp_path: Path) -> None:
    """synchronous=FULL on every connection (WAL with NORMAL can lose the last commits on power loss)."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'wb.db'}")
    for _ in range(2):  # each pooled connection, not only the first
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # 2 = FULL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        engine.pool.dispose()
    engine.dispose()


def test_keras_floor_refuses_old_releases() -> None:
    import keras

    from workbench.export.predict import MIN_KERAS, check_keras_version

    assert MIN_KERAS >= (3, 14)
    check_keras_version(keras.__version__)  # the installed Keras is allowed
    for old in ("3.13.2", "3.5.0", "2.15.0", "unknown"):
        with pytest.raises(
            WorkbenchError, match=rf"Keras {old} is installed; opening a bundle needs keras>=3\.14"
        ):
            check_keras_version(old)
    for ok in ("3.14.0", "3.15.1", "4.0.0"):
        check_keras_version(ok)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"keras>=3.14"' in pyproject


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return found


def test_workbench_ui_listens_on_localhost_only_by_default(tmp_path: Path) -> None:
    from workbench.config import load_settings
    from workbench.db.engine import engine_from_settings
    from workbench.db.schema import upgrade

    upgrade(engine_from_settings(load_settings()))
    port = _free_port()
    exe = Path(sys.executable).parent / "workbench"
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "ui", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
        time.sleep(1)  # Streamlit binds each address it serves before it reports ready
        assert _listening(port) == {"127.0.0.1"}, (tmp_path / "ui.log").read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "(listening on 127.0.0.1)" in (tmp_path / "ui.log").read_text()


def test_workbench_ui_refuses_a_bad_host() -> None:
    res = run_cli("ui", "--host", "every interface", timeout=120)
    assert res.returncode == 1 and "--host: not an address to listen on" in res.stderr, res.stderr
    res = run_cli("ui", env={"WORKBENCH_UI_HOST": "http://0.0.0.0"}, timeout=120)
    assert res.returncode == 1 and "WORKBENCH_UI_HOST: not an address to listen on" in res.stderr, res.stderr
