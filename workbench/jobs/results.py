"""What each job kind's handler returns: typed results stored as the job row's ``result`` JSON.

A result holds exactly the keys the handler set (``to_json`` drops the ones left unset), so the
stored JSON is what the UI, the CLI and the round report have always read. ``cancelled`` marks a run
that stopped on request: the runner ends such a job ``cancelled`` with the partial result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr


class JobResult(BaseModel):
    """Base of the results: unknown keys are a programming error, unset keys are not stored."""

    model_config = ConfigDict(extra="forbid")

    cancelled: bool = False
    _order: list[str] = PrivateAttr(default_factory=list)  # key order of the dict it was made from

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Self:
        """The result from a library function's dict (its keys, in their order, become the stored keys)."""
        result = cls.model_validate(dict(data))
        result._order = list(data)
        return result

    def to_json(self) -> dict[str, Any]:
        """The dict stored in the job row: only the keys that were set, in the order they came."""
        data = self.model_dump(exclude_unset=True)
        first = {key: data.pop(key) for key in self._order if key in data}
        return {**first, **data}


class TrainResult(JobResult):
    """A training run: the version, its status and learning check, what to tell the user."""

    model_version: int
    status: str | None = None
    message: str | None = None
    learning_check: dict[str, Any] | None = None
    did_not_learn: bool = False
    reused: bool = False  # a re-delivered job of a finished version
    seconds: float | None = None
    val: dict[str, Any] | None = None


class InferResult(JobResult):
    """Scoring: how many cases were scored (none when all were scored already)."""

    model_version: int
    scored: int
    skipped_existing: bool = False
    splits: list[str] | None = None
    feature_cache: bool = False
    case_range: list[int] | None = None  # the shard of a round's inference it scored


class CalibrateResult(JobResult):
    """Calibration: the method selected, the operating threshold, the stored calibrations."""

    model_version: int
    selected: str
    threshold: float | None
    calibration_ids: dict[str, int]


class QueueResult(JobResult):
    """A labelling batch: how many items were queued and why."""

    model_version: int
    queued: int
    by_strategy: dict[str, int]
    second_reads: int
    relabels: int
    threshold: float | None
    pool_candidates: int | None
    pool_mean_probability: float | None
    already_queued: bool = False
    # Two-stage scoring: shortlist size and MC-measured cases (before / after the choice).
    shortlist: dict[str, int] | None = None
    # Who ranked the pool (active.ranker.RankerChoice), and with the baseline: its threshold, mix note.
    ranker: dict[str, Any] | None = None
    baseline_threshold_note: str | None = None
    mix_note: str | None = None


class ExportResult(JobResult):
    """An exported bundle (``BundleInfo.to_dict``)."""

    path: str
    zip_path: str | None
    model_version: int
    files: dict[str, str]
    h5_written: bool
    h5_note: str | None
    evaluation_split: str | None
    notes: list[str]
    onnx: dict[str, Any]


class RoundResult(JobResult):
    """A round: its row, the version trained, and what was queued (or why it stopped)."""

    round: int
    model_version: int
    queued: int
    threshold: float | None = None
    did_not_learn: bool = False
    queued_by: str | None = None  # after a version that did not learn: baseline_guided or cold_start
    message: str | None = None
    reasons: list[Any] | None = None
    advice: list[Any] | None = None
    waiting_for: list[int] | None = None  # the inference shards it handed to other workers
    backbone: dict[str, Any] | None = None  # model.backbone_refresh decision (warm-started rounds)


class SleepResult(JobResult):
    """The diagnostic sleep: how long it slept."""

    slept: float
