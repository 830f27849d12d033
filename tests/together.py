"""Start several Python processes and release them at the same moment (concurrency tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_together(
    script: str, names: list[str], args_for: Callable[[str], list[str]], signals: Path, timeout_s: float = 120
) -> dict[str, subprocess.Popen[str]]:
    """One process per name running ``script`` (``python -c``) with ``args_for(name)``; each writes
    ``signals/ready-<name>`` and waits for ``signals/go``, which is touched once all are ready. The caller
    owns the processes (kill what is left in a ``finally``)."""
    procs = {
        who: subprocess.Popen(
            [sys.executable, "-c", script, *args_for(who)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in names
    }
    deadline = time.monotonic() + timeout_s
    try:
        while not all((signals / f"ready-{who}").exists() for who in names):
            assert time.monotonic() < deadline, "processes did not start"
            assert all(p.poll() is None for p in procs.values()), "a process died at start"
            time.sleep(0.05)
    except BaseException:
        for proc in procs.values():
            proc.kill()
        raise
    (signals / "go").touch()
    return procs
