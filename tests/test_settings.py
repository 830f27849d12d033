"""Settings: one place, WORKBENCH_ variables, an optional file, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import load_settings
from workbench.errors import SettingsError


def test_defaults_live_in_the_home_folder(tmp_path: Path) -> None:
    s = load_settings()
    assert s.home == (tmp_path / "home").resolve()
    assert s.db_url == f"sqlite:///{s.home / 'workbench.db'}"
    assert s.broker == f"sqla+sqlite:///{s.home / 'broker.db'}"
    assert s.artifacts == str(s.home / "artifacts")
    assert s.visibility_timeout_s > s.task_time_limit_s


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", "postgresql://u:secret@db/wb")
    monkeypatch.setenv("WORKBENCH_BROKER_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("WORKBENCH_LEASE_SECONDS", "120")
    s = load_settings()
    assert s.db_url == "postgresql://u:secret@db/wb"
    assert s.broker == "redis://localhost:6379/0"
    assert s.lease_seconds == 120
    assert "secret" not in str(s.describe())


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("WORKBENCH_LEASE_SECONDS", "soon", "WORKBENCH_LEASE_SECONDS"),
        ("WORKBENCH_LEASE_SECONDS", "1", "WORKBENCH_LEASE_SECONDS"),
        ("WORKBENCH_DATABASE_URL", "not a url", "WORKBENCH_DATABASE_URL"),
        ("WORKBENCH_LOG_LEVEL", "LOUD", "WORKBENCH_LOG_LEVEL"),
        ("WORKBENCH_DATABSE_URL", "sqlite:///x", "WORKBENCH_DATABSE_URL"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_visibility_timeout_must_exceed_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TASK_TIME_LIMIT_S", "7200")
    monkeypatch.setenv("WORKBENCH_VISIBILITY_TIMEOUT_S", "3600")
    with pytest.raises(SettingsError, match="visibility_timeout_s"):
        load_settings()


def test_settings_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "wb.toml"
    f.write_text("lease_seconds = 300\nui_port = 9000\n")
    monkeypatch.setenv("WORKBENCH_SETTINGS_FILE", str(f))
    monkeypatch.setenv("WORKBENCH_UI_PORT", "9100")
    s = load_settings()
    assert s.lease_seconds == 300  # from the file
    assert s.ui_port == 9100  # the environment wins over the file
    f.write_text("lease_secnds = 300\n")
    with pytest.raises(SettingsError, match="lease_secnds"):
        load_settings()
    f.write_text("lease_seconds = [\n")
    with pytest.raises(SettingsError, match="cannot parse"):
        load_settings()
