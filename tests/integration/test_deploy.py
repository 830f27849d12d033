"""docker-compose.yml, read as Compose reads it: its services, its settings, and what it exposes.

No Docker engine runs here, so the file is parsed with PyYAML and its ``${...}`` variables are
interpolated by :func:`interpolate` with Compose's rules (``${V}``, ``${V:-default}``,
``${V:?error}``, ``$$``). Where the ``docker compose`` plugin exists, ``docker compose config`` is
checked too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from workbench.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {"POSTGRES_PASSWORD": "pg-Secret-123", "FLOWER_USER": "ops", "FLOWER_PASSWORD": "fl-Secret-456"}
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """A ``${NAME:?message}`` variable is unset or empty: Compose refuses to start."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` (a parsed compose tree) with its variables replaced as Compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        current = env.get(name)
        unset = current is None or (op in (":-", ":?") and current == "")
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(one, value)


def _raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose(env: dict[str, str] | None = None) -> dict:
    return interpolate(_raw(), SECRETS if env is None else env)


def test_services_and_published_ports() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "worker-gpu", "worker-cpu", "ui", "flower"} <= set(services)
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"ui", "flower"}


def test_published_ports_are_on_localhost_by_default() -> None:
    services = _compose()["services"]
    assert services["ui"]["ports"] == ["127.0.0.1:8501:8501"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    # The UI can be opened up deliberately; Flower cannot.
    opened = _compose({**SECRETS, "WORKBENCH_UI_BIND": "0.0.0.0"})["services"]
    assert opened["ui"]["ports"] == ["0.0.0.0:8501:8501"]
    assert opened["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    # Inside its container the UI listens on every interface, so the published port reaches it.
    ui = services["ui"]["command"]
    assert ui[ui.index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        _compose(env)
    with pytest.raises(MissingVariable, match=missing):
        _compose({**env, missing: ""})


def test_no_default_password_anywhere() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"\$\{[A-Z_]*(PASSWORD|USER)[A-Z_]*:?-", text), "a credential has a default value"
    services = _compose()["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    for name in ("migrate", "worker-gpu", "worker-cpu", "ui", "flower"):
        url = services[name]["environment"]["WORKBENCH_DATABASE_URL"]
        assert f":{SECRETS['POSTGRES_PASSWORD']}@postgres:" in url, name


def test_flower_requires_basic_auth_from_the_environment_not_argv() -> None:
    flower = _compose()["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "ops:fl-Secret-456"
    assert not any("basic" in str(part).lower() for part in flower["command"]), "credentials in argv"
    # Flower still gets the workbench's broker settings.
    assert flower["environment"]["WORKBENCH_BROKER_URL"].startswith("redis://")


def test_workers_queues_gpu_reservation_and_migration_order() -> None:
    services = _compose()["services"]
    gpu, cpu = services["worker-gpu"], services["worker-cpu"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    assert gpu["command"][gpu["command"].index("--concurrency") + 1] == "1"
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "cpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("worker-gpu", "worker-cpu", "ui", "flower"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["workbench", "db", "upgrade"]


def test_gpu_workers_scale_with_compose_scale() -> None:
    """`docker compose up --scale worker-gpu=N`: nothing in the service may be unique to one container
    (no container name, no published port), and each replica's Celery node name takes the container's
    host name (``%h``), so N workers are N distinct nodes whose identities the job rows record."""
    gpu = _compose()["services"]["worker-gpu"]
    assert "container_name" not in gpu and "ports" not in gpu
    name = gpu["command"][gpu["command"].index("--name") + 1]
    assert name.endswith("@%h"), name
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0].get("count") == 1  # each replica reserves one GPU of its own


def test_environment_is_valid_settings() -> None:
    env = _compose()["services"]["worker-cpu"]["environment"]
    values = {k.removeprefix("WORKBENCH_").lower(): v for k, v in env.items() if k.startswith("WORKBENCH_")}
    settings = Settings(**values)  # would raise on a bad value (e.g. visibility timeout below the time limit)
    assert settings.broker.startswith("redis://") and settings.db_url.startswith("postgresql://")
    assert settings.visibility_timeout_s > settings.task_time_limit_s
    # What the settings show masks the password.
    assert SECRETS["POSTGRES_PASSWORD"] not in str(settings.describe())


def _docker_compose() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    return None


def test_docker_compose_config_agrees_when_available(tmp_path: Path) -> None:
    """The real ``docker compose config`` (where installed) refuses a missing secret and binds localhost."""
    cmd = _docker_compose()
    if cmd is None:
        pytest.skip("the docker compose plugin is not installed (the checks above emulate it)")
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "WORKBENCH_UI_BIND"}
    run = [*cmd, "-f", str(COMPOSE), "--project-directory", str(tmp_path), "config", "--format", "json"]
    refused = subprocess.run(run, capture_output=True, text=True, env=base)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
    ok = subprocess.run(run, capture_output=True, text=True, env={**base, **SECRETS}, check=True)
    services = json.loads(ok.stdout)["services"]
    for name, port in (("ui", 8501), ("flower", 5555)):
        (published,) = services[name]["ports"]
        assert published["host_ip"] == "127.0.0.1" and int(published["published"]) == port


def test_browser_tests_fail_instead_of_skipping_when_required(tmp_path: Path) -> None:
    """Without Chromium, tests/integration/test_ui_browser.py skips for a developer but fails under REQUIRE_BROWSER_TESTS=1,
    which .ci/run sets after making sure Chromium is installed (or exiting non-zero)."""
    import sys

    base = {**os.environ, "BROWSER_TESTS_CHROMIUM": str(tmp_path / "no-chromium")}
    base.pop("REQUIRE_BROWSER_TESTS", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "integration" / "test_ui_browser.py"),
    ]
    skipped = subprocess.run(cmd, capture_output=True, text=True, env=base, cwd=ROOT, timeout=300)
    assert skipped.returncode == 0 and "3 skipped" in skipped.stdout, skipped.stdout[-2000:]
    required = subprocess.run(
        cmd, capture_output=True, text=True, env={**base, "REQUIRE_BROWSER_TESTS": "1"}, cwd=ROOT, timeout=300
    )
    assert required.returncode != 0, required.stdout[-2000:]
    assert "REQUIRE_BROWSER_TESTS=1 requires it" in required.stdout
    assert required.stdout.splitlines()[-1].startswith("3 errors"), required.stdout[-500:]  # none skipped

    ci = (ROOT / ".ci" / "run").read_text()
    install = ci.index("apt-get install -y -qq chromium")
    check = ci.index("if [ ! -x /usr/bin/chromium ]; then", install)
    assert "exit 1" in ci[check : ci.index("fi", check)]
    assert ci.index("export REQUIRE_BROWSER_TESTS=1") < ci.rindex("\nmake test")
