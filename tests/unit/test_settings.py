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


def test_ui_host_defaults_to_this_machine_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ui_host == "127.0.0.1"
    monkeypatch.setenv("WORKBENCH_UI_HOST", " 0.0.0.0 ")
    assert load_settings().ui_host == "0.0.0.0"
    monkeypatch.setenv("WORKBENCH_UI_HOST", "ui.internal.example")
    assert load_settings().ui_host == "ui.internal.example"


@pytest.mark.parametrize("value", ["", "every interface", "http://0.0.0.0", "10.0.0.1:8501"])
def test_bad_ui_host_names_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WORKBENCH_UI_HOST", value)
    with pytest.raises(SettingsError, match="WORKBENCH_UI_HOST: .*not an address to listen on"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKBENCH_DATABASE_URL", "workbench:Pw-9f3kq@db:5432/wb"),  # no scheme: not echoed at all
        ("WORKBENCH_BROKER_URL", "workbench:Pw-9f3kq@redis"),
        ("WORKBENCH_ID_SALT", "Pw-9f3kq"),  # a bad secret is never quoted back
    ],
)
def test_settings_errors_never_show_a_password(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as caught:
        load_settings()
    assert "Pw-9f3kq" not in str(caught.value)


def test_redact_masks_url_passwords_and_secret_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.errors import ValidationError
    from workbench.redaction import redact

    assert redact("postgresql://workbench:s3cr%40t@db:5432/wb") == "postgresql://workbench:***@db:5432/wb"
    assert redact("postgresql+psycopg://u:p@h/db, redis://:rpw@redis:6379/0") == (
        "postgresql+psycopg://u:***@h/db, redis://:***@redis:6379/0"
    )
    assert redact("host=db user=wb password=hunter22 dbname=wb") == "host=db user=wb password=*** dbname=wb"
    # Not secrets: a URL without a password, a port followed by a path holding an '@'.
    for text in ("postgresql://workbench@db/wb", "http://host:8501/x?email=a@b.org", "sqlite:///a/b.db"):
        assert redact(text) == text
    monkeypatch.setenv("FLOWER_PASSWORD", "flower-Pw-77")
    assert redact("login ops:flower-Pw-77 refused") == "login ops:*** refused"
    # Every WorkbenchError is redacted where it is made, whatever adapter shows it.
    err = ValidationError("cannot reach postgresql://wb:Pw-9f3kq@db/wb (flower-Pw-77)")
    assert "Pw-9f3kq" not in str(err) and "flower-Pw-77" not in str(err) and "wb:***@db" in str(err)
