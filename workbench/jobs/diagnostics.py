"""A diagnostic job: sleeps in steps, reporting progress and honouring cancel (no model needed)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from workbench.errors import WorkbenchError
from workbench.jobs.context import JobContext


def sleep_job(ctx: JobContext) -> dict[str, Any]:
    """Sleep ``seconds`` in ``steps`` steps; fail at the end, or kill its process half-way, when asked."""
    steps, seconds = ctx.params["steps"], ctx.params["seconds"]
    for i in range(steps):
        ctx.check_cancel()
        time.sleep(seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1}/{steps}")
        if ctx.params.get("crash") and i == steps // 2:
            os.kill(os.getpid(), signal.SIGKILL)
    if ctx.params.get("fail"):
        raise WorkbenchError("asked to fail")
    return {"slept": seconds}
