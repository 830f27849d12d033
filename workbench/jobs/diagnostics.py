"""A diagnostic job: sleeps in steps, reporting progress and honouring cancel (no model needed).

Its switches reproduce the ways a job can end, for the tests of the job system: ``fail`` (an error),
``crash`` (SIGKILL of its own process, as the OOM killer would), ``swallow_errors`` (an over-broad
``except`` that also swallows the soft time limit, so only the hard limit stops it), ``as_step``
(the sleep runs as a child step, as a round runs its steps) and ``trace`` (one line per execution
of the handler in ``$WORKBENCH_HOME/diagnostics/<trace>.log``, so a test counts executions rather
than job rows).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.jobs.context import JobContext
from workbench.jobs.params import SleepParams
from workbench.jobs.results import SleepResult


def trace_path(settings: Settings, name: str) -> Path:
    """Where the ``trace`` parameter ``name`` records the executions of the sleep handler."""
    return settings.home / "diagnostics" / f"{name}.log"


def read_trace(settings: Settings, name: str) -> list[str]:
    """The execution lines recorded under ``name`` (empty when the handler never ran)."""
    path = trace_path(settings, name)
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def _record_execution(ctx: JobContext[SleepParams], trace: str) -> None:
    path = trace_path(ctx.settings, trace)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"job {ctx.job_id} pid {os.getpid()}\n")
        fh.flush()
        os.fsync(fh.fileno())


def sleep_job(ctx: JobContext[SleepParams]) -> SleepResult:
    """Sleep ``seconds`` in ``steps`` steps; fail at the end, or kill its process half-way, when asked."""
    p = ctx.params
    if p.as_step:
        from workbench.jobs.runner import run_step

        step = run_step(ctx, "sleep", p.derive(as_step=False), 0.0, 1.0)
        assert isinstance(step, SleepResult)
        return step
    if p.trace:
        _record_execution(ctx, p.trace)
    for i in range(p.steps):
        ctx.check_cancel()
        _sleep(p.seconds / p.steps, swallow=p.swallow_errors)
        ctx.progress((i + 1) / p.steps, f"step {i + 1}/{p.steps}")
        if p.crash and i == p.steps // 2:
            os.kill(os.getpid(), signal.SIGKILL)
    if p.fail:
        raise WorkbenchError("asked to fail")
    return SleepResult(slept=p.seconds)


def _sleep(seconds: float, swallow: bool) -> None:
    """Sleep; with ``swallow``, an over-broad ``except`` keeps sleeping through any exception."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except Exception:  # deliberately careless: the soft time limit is swallowed too
            if not swallow:
                raise
