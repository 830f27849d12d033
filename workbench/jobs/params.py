"""Parameters of each job kind, validated before a job row is created (bad input never queues)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workbench.calibration.calibrators import DEFAULT_METHODS
from workbench.calibration.thresholds import DEFAULT_POLICY
from workbench.errors import ValidationError as WorkbenchValidationError

SPLIT_NAMES = ("pool", "train", "val", "test")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainParams(_Params):
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
    overrides: dict[str, Any] = Field(default_factory=dict)


class InferParams(_Params):
    """Score cases with a model version; resumable (cases already scored are skipped)."""

    model_version: int
    splits: list[str] = Field(default_factory=lambda: ["pool", "val", "test"])
    mc_samples: int = Field(default=8, ge=0, le=100)
    batch_size: int = Field(default=32, ge=1, le=4096)

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if s not in SPLIT_NAMES]
        if bad or not value:
            raise ValueError(f"splits must be some of {', '.join(SPLIT_NAMES)}; got {value}")
        return value


class CalibrateParams(_Params):
    """Fit calibrators on validation predictions of a version and choose its operating threshold."""

    model_version: int
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    policy: str = DEFAULT_POLICY
    select: str | None = None


class QueueParams(_Params):
    """Build the labelling batch of a round from a calibrated version's pool predictions."""

    model_version: int
    batch_size: int = Field(default=20, ge=1, le=10_000)
    round_id: int | None = None
    mix: dict[str, float] | None = None
    second_reads: int = Field(default=0, ge=0, le=10_000)
    relabel: int = Field(default=0, ge=0, le=10_000)
    seed: int = 0


class RoundParams(_Params):
    """One active-learning round: train -> infer -> calibrate -> queue."""

    train: TrainParams = Field(default_factory=TrainParams)
    mc_samples: int = Field(default=8, ge=0, le=100)
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    policy: str = DEFAULT_POLICY
    batch_size: int = Field(default=20, ge=1, le=10_000)
    mix: dict[str, float] | None = None
    second_reads: int = Field(default=0, ge=0, le=10_000)
    relabel: int = Field(default=0, ge=0, le=10_000)
    warm_start: bool = True
    feature_cache: bool = True  # a warm-started round trains the head on cached frozen-backbone features


class ExportParams(_Params):
    """Export a version as a bundle folder (and optionally a zip) on the server."""

    model_version: int
    out_dir: str
    zip: bool = False


class SleepParams(_Params):
    """A diagnostic job that sleeps in steps (checks the worker path without a model)."""

    seconds: float = Field(default=1.0, ge=0, le=3600)
    steps: int = Field(default=10, ge=1, le=10_000)
    fail: bool = False
    crash: bool = False  # SIGKILL its own process mid-way (a worker lost to the OOM killer)
    swallow_errors: bool = False  # an over-broad except: the soft time limit cannot stop it
    as_step: bool = False  # run as a child step of this job (as a round runs its steps)
    trace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # record each execution


def validate_params(model: type[_Params], params: dict[str, Any]) -> dict[str, Any]:
    """Validated, defaults-filled parameters as a JSON-safe dict; one clear error on bad input."""
    try:
        return model.model_validate(params).model_dump(mode="json")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "parameters"
        raise WorkbenchValidationError(f"{model.__name__} {where}: {err['msg']}") from None
