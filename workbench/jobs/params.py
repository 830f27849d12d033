"""Parameters of each job kind, validated before a job row is created (bad input never queues).

These models are the currency of the job system: the CLI and the UI build them with
:meth:`JobParams.parse` (and read their defaults from them), the job row stores
:meth:`JobParams.to_json`, the runner validates the row back into the kind's model, and the handler
gets the instance as ``ctx.params``. Adding an option means adding a field here and using it where
the work is done.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from workbench.defaults import DEFAULT_METHODS, DEFAULT_POLICY, DEFAULT_RANKER, SPLITS, Ranker
from workbench.validated import Validated

OVERRIDE_SECTIONS = ("model", "train")


class JobParams(Validated):
    """Base of every kind's parameters: unknown fields refused, errors name the model and the field."""

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe dict a job row stores (every default filled in)."""
        return self.model_dump(mode="json")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (what a CLI option or a form shows when left alone)."""
        return cls.model_fields[name].get_default(call_default_factory=True)


class TrainParams(JobParams):
    """Train a model version: from scratch, or warm-started from a parent version."""

    preset: str = "cpu"
    phases: int = Field(default=1, ge=1, le=2)
    epochs: int | None = Field(default=None, ge=1, le=500)
    fine_tune_epochs: int | None = Field(default=None, ge=1, le=500)
    imbalance: Literal["class_weight", "balanced", "focal", "none"] = "class_weight"
    seed: int = 0
    parent_version: int | None = None
    round_id: int | None = None
    use_feature_cache: bool = False
    # {"model": {...}, "train": {...}}: configuration fields over the preset's (see model.config.run_configs)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _sections(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(OVERRIDE_SECTIONS))
        if unknown:
            raise ValueError(f"unknown section(s) {', '.join(unknown)} (use {', '.join(OVERRIDE_SECTIONS)})")
        for section, fields in value.items():
            if fields is not None and not isinstance(fields, dict):
                raise ValueError(f"{section}: expected a JSON object of config fields, got {fields!r}")
        return value


class InferParams(JobParams):
    """Score cases with a model version; resumable (cases already scored are skipped)."""

    model_version: int
    splits: list[str] = Field(default_factory=lambda: ["pool", "val", "test"])
    mc_samples: int = Field(default=8, ge=0, le=100)
    batch_size: int = Field(default=32, ge=1, le=4096)
    # One shard of a round's inference: only case ids in [first, last] (inclusive) of ``splits``.
    case_range: tuple[int, int] | None = None

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if s not in SPLITS]
        if bad or not value:
            raise ValueError(f"splits must be some of {', '.join(SPLITS)}; got {value}")
        return value


class CalibrateParams(JobParams):
    """Fit calibrators on validation predictions of a version and choose its operating threshold."""

    model_version: int
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    policy: str = DEFAULT_POLICY
    select: str | None = None


class QueueParams(JobParams):
    """Build the labelling batch of a round from a calibrated version's pool predictions."""

    model_version: int
    batch_size: int = Field(default=20, ge=1, le=10_000)
    round_id: int | None = None
    mix: dict[str, float] | None = None
    second_reads: int = Field(default=0, ge=0, le=10_000)
    relabel: int = Field(default=0, ge=0, le=10_000)
    seed: int = 0
    # Two-stage scoring: > 0 runs this many MC-dropout passes over the shortlist only (the pool was
    # scored by one deterministic pass); 0 uses the uncertainty inference stored, if any.
    mc_samples: int = Field(default=0, ge=0, le=100)
    # Who ranks the pool (active.ranker): auto = the version, or the baseline when it ranks val better.
    ranker: Ranker = DEFAULT_RANKER


class RoundParams(JobParams):
    """One active-learning round: train -> infer -> calibrate -> queue."""

    train: TrainParams = Field(default_factory=TrainParams)
    mc_samples: int = Field(default=8, ge=0, le=100)
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    policy: str = DEFAULT_POLICY
    batch_size: int = Field(default=20, ge=1, le=10_000)
    mix: dict[str, float] | None = None
    second_reads: int = Field(default=0, ge=0, le=10_000)
    relabel: int = Field(default=0, ge=0, le=10_000)
    ranker: Ranker = DEFAULT_RANKER
    warm_start: bool = True
    feature_cache: bool = True  # a warm-started round trains the head on cached frozen-backbone features


class ExportParams(JobParams):
    """Export a version as a bundle folder (and optionally a zip) on the server."""

    model_version: int
    out_dir: str
    zip: bool = False


class SleepParams(JobParams):
    """A diagnostic job that sleeps in steps (checks the worker path without a model)."""

    seconds: float = Field(default=1.0, ge=0, le=3600)
    steps: int = Field(default=10, ge=1, le=10_000)
    fail: bool = False
    crash: bool = False  # SIGKILL its own process mid-way (a worker lost to the OOM killer)
    swallow_errors: bool = False  # an over-broad except: the soft time limit cannot stop it
    as_step: bool = False  # run as a child step of this job (as a round runs its steps)
    trace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # record each execution
