"""docker-compose.yml cannot run here (no Docker engine); these checks keep it faithful to the settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from workbench.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_published_ports() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "worker-gpu", "worker-cpu", "ui", "flower"} <= set(services)
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"ui", "flower"}


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


def test_environment_is_valid_settings() -> None:
    env = _compose()["services"]["worker-cpu"]["environment"]
    values = {k.removeprefix("WORKBENCH_").lower(): v for k, v in env.items() if k.startswith("WORKBENCH_")}
    settings = Settings(**values)  # would raise on a bad value (e.g. visibility timeout below the time limit)
    assert settings.broker.startswith("redis://") and settings.db_url.startswith("postgresql://")
    assert settings.visibility_timeout_s > settings.task_time_limit_s
