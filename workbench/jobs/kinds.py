"""The job kinds: which queue runs each and which library function does the work.

Handlers are named as ``module:function`` strings and imported only when a job runs, so the worker
parent process never imports TensorFlow (it forks children; TensorFlow must load after the fork).
Who may submit each kind is declared in ``workbench.users.PERMISSIONS`` (the kind's name is the
action); a kind missing there is refused to every user, and a test walks every kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workbench.errors import ValidationError
from workbench.jobs import params as p
from workbench.jobs.results import JobResult

GPU, CPU = "gpu", "cpu"
QUEUES = (GPU, CPU)


@dataclass(frozen=True)
class JobKind:
    """A kind of job: the queue it runs on, its handler, and its parameter model."""

    name: str
    queue: str
    handler: str
    params: type[p.JobParams]
    description: str
    exclusive: bool = False  # at most one job of this kind queued or running at a time

    def load(self) -> Callable[..., JobResult]:
        """The handler: ``(ctx: JobContext[<params model>]) -> <JobResult subclass>``."""
        module, func = self.handler.split(":")
        return getattr(importlib.import_module(module), func)

    def parse(self, params: p.JobParams | Mapping[str, Any]) -> p.JobParams:
        """Validated parameters of this kind: a mapping is validated; an instance must be of this kind's model."""
        if isinstance(params, p.JobParams) and not isinstance(params, self.params):
            raise ValidationError(
                f"a {self.name} job takes {self.params.__name__}, not {type(params).__name__}"
            )
        return self.params.parse(params)


KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind("train", GPU, "workbench.model.registry:train_job", p.TrainParams, "train a model version"),
        JobKind(
            "infer", GPU, "workbench.model.scoring:infer_job", p.InferParams, "score cases with a version"
        ),
        JobKind(
            "calibrate",
            CPU,
            "workbench.calibration.service:calibrate_job",
            p.CalibrateParams,
            "fit calibrators",
        ),
        JobKind(
            "queue",
            CPU,
            "workbench.active.building:build_queue_job",
            p.QueueParams,
            "build a labelling batch",
        ),
        JobKind(
            "round", GPU, "workbench.rounds:round_job", p.RoundParams, "train, infer, calibrate, queue", True
        ),
        JobKind("export", CPU, "workbench.export.bundle:export_job", p.ExportParams, "export a bundle"),
        JobKind("sleep", CPU, "workbench.jobs.diagnostics:sleep_job", p.SleepParams, "diagnostic sleep"),
    )
}


def get_kind(name: str) -> JobKind:
    """The kind called ``name``; ValidationError listing the kinds otherwise."""
    if name not in KINDS:
        raise ValidationError(f"unknown job kind {name!r} (one of {', '.join(KINDS)})")
    return KINDS[name]
