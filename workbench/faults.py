"""Test-only crash points (``WORKBENCH_FAULT_POINT``): SIGKILL this process once at a named point.

The fault-injection tests need crashes at exact moments (mid artifact write, before a task claims its
job) that a signal sent from outside cannot hit reliably. A marker file
``<home>/faults/<name>.fired`` makes the retry run normally, so a test sees both the crash and the
recovery. Nothing happens unless the setting names the point.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from workbench.config import Settings

FAULT_POINTS = ("artifact-write", "task-start", "shard-chunk")


def crash_once(settings: Settings, name: str, before: Callable[[], None] | None = None) -> None:
    """At point ``name`` (when it is the configured fault point and has not fired in this home yet):
    run ``before`` (e.g. leave a file half written), record the marker, and SIGKILL this process."""
    if settings.fault_point != name:
        return
    marker = settings.home / "faults" / f"{name}.fired"
    if marker.exists():
        return
    if before is not None:
        before()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
    os.kill(os.getpid(), signal.SIGKILL)
