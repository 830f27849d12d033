"""Settings, read in one place: ``WORKBENCH_*`` environment variables, then an optional settings file.

Every other module takes a :class:`Settings` object instead of reading the environment itself, so a
bad value is reported once, naming the setting, before any work starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workbench.defaults import DEFAULT_LEASE_SECONDS
from workbench.errors import SettingsError
from workbench.redaction import redact

ENV_PREFIX = "WORKBENCH_"
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]")
SETTINGS_FILE_ENV = "WORKBENCH_SETTINGS_FILE"


class Settings(BaseSettings):
    """All settings of the workbench; each field is ``WORKBENCH_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    home: Path = Field(
        default=Path("~/.workbench"),
        description="Folder for the embedded database, broker, artifacts and logs.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: a SQLite file `workbench.db` in the home folder.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL; default: SQLAlchemy transport on `broker.db` in the home folder.",
    )
    artifact_root: str | None = Field(
        default=None,
        description="Where model files and feature caches go; default: `artifacts/` in the home folder.",
    )
    imagenet_weights: Path | None = Field(
        default=None,
        description="Local ResNet50 ImageNet weights file (no-top); default: the Keras cache file name.",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, ge=0, le=600_000, description="How long SQLite waits on a locked database."
    )
    task_time_limit_s: int = Field(
        default=6 * 3600, ge=60, description="Hard time limit of one worker task, in seconds."
    )
    sleep_time_limit_s: int | None = Field(
        default=None,
        ge=2,
        le=3600,
        description="Hard time limit of the diagnostic `sleep` job only (tests of the time-limit paths); "
        "default: task_time_limit_s. Its soft limit is half of it.",
    )
    heartbeat_interval_s: int = Field(
        default=15,
        ge=1,
        le=600,
        description="How often a running job's worker touches its heartbeat, and sweeps for lost jobs.",
    )
    heartbeat_stale_s: int = Field(
        default=300,
        ge=3,
        le=86_400,
        description="A running job whose heartbeat is older than this is lost: workers re-queue it, and "
        "an exclusive kind (round) stops waiting for it. More than twice heartbeat_interval_s.",
    )
    fault_point: Literal["artifact-write", "task-start", "shard-chunk"] | None = Field(
        default=None,
        description="Test only: crash (SIGKILL) once at this point, e.g. `artifact-write` truncates the "
        "freshly written model file and kills the process before the version is recorded; `task-start` "
        "kills a worker's task process before it claims its job; `shard-chunk` kills the whole worker "
        "(its main process and the task process) right after an inference shard wrote its first chunk.",
    )
    distribute: str = Field(
        default="auto",
        description="Training devices: 'auto' mirrors over every visible GPU when there are 2 or more "
        "(tf.distribute.MirroredStrategy; batch per replica, Adam learning rate x sqrt(replicas)); 'off' "
        "trains on one device; 'cpu:N' (N >= 2) splits the CPU into N logical devices (tests, smoke checks).",
    )
    infer_shard_size: int = Field(
        default=5000,
        ge=1,
        le=10_000_000,
        description="Cases per inference shard of a round: a round's inference runs as shards, each its own "
        "job on the gpu queue, so every gpu worker takes some; a worker lost mid-shard costs that shard.",
    )
    infer_chunk_size: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Cases inference scores and writes per statement; a killed run resumes after the last "
        "chunk it wrote.",
    )
    visibility_timeout_s: int = Field(
        default=7 * 3600,
        ge=60,
        description="Redis visibility timeout; kept above the task time limit so no task runs twice.",
    )
    max_task_attempts: int = Field(
        default=3, ge=1, le=20, description="Deliveries of one job before it is marked failed."
    )
    lease_seconds: int = Field(
        default=DEFAULT_LEASE_SECONDS,
        ge=10,
        le=86_400,
        description="How long a labeller holds a claimed queue item.",
    )
    backbone_refresh_rounds: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="A warm-started round fine-tunes the backbone (and its cached features are rebuilt) "
        "when this many rounds in a row would have kept it frozen (0: never by count).",
    )
    backbone_refresh_growth: float = Field(
        default=0.5,
        ge=0.0,
        le=100.0,
        description="... or when the labelled training set has grown by this fraction since the backbone "
        "was last trained (0: never by growth).",
    )
    retrain_after_labels: int = Field(
        default=0, ge=0, description="Start a round automatically after this many new labels (0: never)."
    )
    oidc_allowed_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="OIDC admission: email domains whose accounts may sign in (comma-separated, e.g. "
        "`example.org,clinic.example.org`; the email must be verified by the provider). With neither "
        "this nor oidc_allowed_groups set, any account the provider authenticates may ask for access. "
        "Either way a first login waits for an admin's approval.",
    )
    oidc_allowed_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="OIDC admission: groups (the `groups` claim) whose members may sign in, "
        "comma-separated; an account passes when its domain or one of its groups is allowed.",
    )
    id_salt: SecretStr | None = Field(
        default=None,
        description="Pseudonym salt for DICOM patient ids (64 hex digits); default: the `id_salt` file in "
        "the home folder, created on first use.",
    )
    ui_port: int = Field(default=8501, ge=1, le=65_535, description="Port of the Streamlit UI.")
    ui_host: str = Field(
        default="127.0.0.1",
        description="Address the Streamlit UI listens on: 127.0.0.1 (this machine only, the default), "
        "0.0.0.0 (every interface: only behind a proxy or firewall you trust) or a host name.",
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")

    @field_validator("id_salt", mode="after")
    @classmethod
    def _check_salt(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value.get_secret_value().strip()):
            raise ValueError("must be 64 hex digits (e.g. from `openssl rand -hex 32`)")
        return value

    @field_validator("oidc_allowed_domains", "oidc_allowed_groups", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """A comma-separated string (environment) or a list (settings file) of non-empty items."""
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("oidc_allowed_domains", mode="after")
    @classmethod
    def _check_domains(cls, value: list[str]) -> list[str]:
        domains = [v.strip().lower().removeprefix("@") for v in value]
        bad = [d for d in domains if not DOMAIN.fullmatch(d)]
        if bad:
            raise ValueError(f"not an email domain: {', '.join(map(repr, bad))} (expected e.g. example.org)")
        return domains

    @field_validator("oidc_allowed_groups", mode="after")
    @classmethod
    def _check_groups(cls, value: list[str]) -> list[str]:
        groups = [v.strip() for v in value]
        bad = [g for g in groups if not g or len(g) > 256]
        if bad:
            raise ValueError("group names must be 1-256 characters")
        return groups

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("database_url", "broker_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if "://" not in value:
            # The value is not echoed: without a scheme, a "user:password@host" in it could not be masked.
            raise ValueError(
                "not a URL (no '://'; expected e.g. sqlite:///path or postgresql://user@host/db)"
            )
        return value

    @field_validator("ui_host")
    @classmethod
    def _check_ui_host(cls, value: str) -> str:
        return check_listen_host(value)

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must be greater than "
                f"task_time_limit_s ({self.task_time_limit_s}), or a long task would be delivered twice"
            )
        if self.heartbeat_stale_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"WORKBENCH_HEARTBEAT_STALE_S ({self.heartbeat_stale_s}) must be more than twice "
                f"WORKBENCH_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s}), or live jobs would be re-queued"
            )
        return self

    # Derived values -----------------------------------------------------------------------------

    @property
    def db_url(self) -> str:
        """The database URL in effect."""
        return self.database_url or f"sqlite:///{self.home / 'workbench.db'}"

    @field_validator("distribute")
    @classmethod
    def _distribute(cls, value: str) -> str:
        return parse_distribute_mode(value)

    @property
    def heartbeat_stale(self) -> timedelta:
        """How long a running job may stay silent before it counts as lost."""
        return timedelta(seconds=self.heartbeat_stale_s)

    @property
    def broker(self) -> str:
        """The Celery broker URL in effect."""
        return self.broker_url or f"sqla+sqlite:///{self.home / 'broker.db'}"

    @property
    def artifacts(self) -> str:
        """The artifact root in effect: a local or shared-volume path (a URL is refused when a model is written)."""
        return self.artifact_root or str(self.home / "artifacts")

    def ensure_home(self) -> None:
        """Create the home folder (and the local artifact root) if missing."""
        self.home.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifacts:
            Path(self.artifacts).mkdir(parents=True, exist_ok=True)

    def describe(self) -> dict[str, Any]:
        """Settings in effect, for display (passwords in URLs masked)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            out[name] = getattr(self, name)
        out.update(database_url=self.db_url, broker_url=self.broker, artifact_root=self.artifacts)
        return {k: redact(str(v)) if v is not None else None for k, v in out.items()}


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def check_listen_host(value: str) -> str:
    """An address to listen on (IPv4, IPv6 or a host name), stripped; ValueError saying what is wrong."""
    host = value.strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(
            f"not an address to listen on: {value!r} (use 127.0.0.1 for this machine only, 0.0.0.0 for "
            "every interface, or a host name)"
        )
    return host


def _read_settings_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON settings file whose keys are setting names (without prefix)."""
    if not path.is_file():
        raise SettingsError(f"{SETTINGS_FILE_ENV}: settings file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{SETTINGS_FILE_ENV}: cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{SETTINGS_FILE_ENV}: {path} must hold a table of settings")
    return {str(k).lower().removeprefix("workbench_"): v for k, v in data.items()}


def load_settings(**overrides: Any) -> Settings:
    """Build settings from environment, settings file and explicit overrides (highest precedence).

    Environment variables win over the settings file. Raises :class:`SettingsError` naming the
    setting whose value is bad.
    """
    file_values: dict[str, Any] = {}
    settings_file = os.environ.get(SETTINGS_FILE_ENV)
    if settings_file:
        file_values = _read_settings_file(Path(settings_file).expanduser())
        known = set(Settings.model_fields)
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise SettingsError(
                f"{SETTINGS_FILE_ENV}: unknown setting(s) {', '.join(unknown)} in {settings_file}"
            )
    env_names = {f"{ENV_PREFIX}{n}".upper() for n in Settings.model_fields}
    stray = sorted(
        k for k in os.environ if k.startswith(ENV_PREFIX) and k not in env_names and k != SETTINGS_FILE_ENV
    )
    if stray:
        raise SettingsError(f"unknown setting(s) in the environment: {', '.join(stray)}")
    # Environment beats file: pass file values only where the environment does not set them.
    init = {k: v for k, v in file_values.items() if f"{ENV_PREFIX}{k}".upper() not in os.environ}
    init.update(overrides)
    try:
        return Settings(**init)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        env = f"{ENV_PREFIX}{name.upper()}" if name in Settings.model_fields else name
        msg = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{env}: {msg}") from None  # redacted by SettingsError itself


_CPU_SPLIT = re.compile(r"cpu:(\d+)")


def parse_distribute_mode(value: str) -> str:
    """A training distribution mode (``auto``, ``off`` or ``cpu:N`` with N >= 2), normalised;
    ValueError saying what is allowed otherwise."""
    mode = value.strip().lower()
    if mode in ("auto", "off"):
        return mode
    match = _CPU_SPLIT.fullmatch(mode)
    if match and int(match.group(1)) >= 2:
        return f"cpu:{int(match.group(1))}"
    raise ValueError(
        f"{value!r} is not a distribution mode; use 'auto' (mirror over 2+ visible GPUs), "
        "'off' (one device) or 'cpu:N' with N >= 2 (N logical CPU devices, for tests)"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached); call :func:`load_settings` for a fresh read."""
    return load_settings()
