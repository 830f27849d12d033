"""The job kinds: which queue runs each and which library function does the work.

Handlers are named as ``module:function`` strings and imported only when a job runs, so the worker
parent process never imports TensorFlow (it forks children; TensorFlow must load after the fork).
Who may submit each kind is declared in ``workbench.users.PERMISSIONS`` (the kind's name is the
action); a kind missing there is refused to every user, and a test walks every kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import ValidationError
from workbench.jobs import params as p

GPU, CPU = "gpu", "cpu"
QUEUES = (GPU, CPU)


@dataclass(frozen=True)
class JobKind:
    """A kind of job: the queue it runs on, its handler, and its parameter model."""

    name: str
    queue: str
    handler: str
    params: type[p._Params]
    description: str
    exclusive: bool = False  # at most one job of this kind queued or running at a time

    def load(self) -> Callable[..., dict[str, Any]]:
        module, func = self.handler.split(":")
        return getattr(importlib.import_module(module), func)


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
