"""Run every benchmark under ``bench/`` and rewrite its section of ``docs/benchmarks.md``.

Usage::

    python bench/run_all.py                      # all present scripts, about 15 minutes in all
    python bench/run_all.py --only queue,predictions,calibration
    python bench/run_all.py --list               # scripts, commands, time limits
    python bench/run_all.py --args queue="--rows 200000" --budget-s 0

Each script runs as a subprocess (its output is echoed live and captured) under a time limit: its own
limit, cut to what is left of the total ``--budget-s``. Scripts that take ``--budget-s`` are told their
limit so they shorten their work instead of being killed. A script that overruns is killed (its process
group) and its section keeps the output up to then, marked as timed out. ``gpu_check`` runs only when
``nvidia-smi`` shows a GPU. Scripts not present are skipped; sections of scripts not run are left as
they are. Any other ``bench/bench_*.py`` or ``bench/*_check.py`` is run too, with no arguments.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from common import (  # noqa: E402
    DOC_PATH,
    ROOT,
    code_block,
    gpu_visible,
    machine_section,
    read_section,
    render_section,
    write_section,
)

BENCH_DIR = ROOT / "bench"
DEFAULT_BUDGET_S = 900
MIN_RUN_S = 30  # a script is not started with less than this left of the total budget
NOT_BENCHMARKS = {"common.py", "run_all.py"}


@dataclass
class Spec:
    """One benchmark: its section name, script, title, default arguments and time limit."""

    name: str
    script: str
    title: str
    args: list[str] = field(default_factory=list)
    timeout_s: int = 300
    needs_gpu: bool = False

    @property
    def path(self) -> Path:
        return BENCH_DIR / self.script

    def takes_budget(self) -> bool:
        """Whether the script has a ``--budget-s`` option (read from its source, nothing is run)."""
        try:
            return "--budget-s" in self.path.read_text()
        except OSError:
            return False


# Order matters: with the total budget, later scripts get what is left.
KNOWN = (
    Spec(
        "queue",
        "bench_queue.py",
        "Queue claim latency (bench_queue.py)",
        ["--rows", "1000000", "--claims", "500", "--backend", "both"],
        420,
    ),
    Spec(
        "queue_concurrent",
        "bench_queue.py",
        "Concurrent labellers at 1M queue rows (bench_queue.py --concurrency)",
        ["--rows", "1000000", "--claims", "300", "--backend", "both", "--concurrency", "20"],
        1200,
    ),
    Spec(
        "predictions",
        "bench_predictions.py",
        "Prediction writes (bench_predictions.py)",
        ["--rows", "100000", "--batch", "256", "--repeats", "2", "--backend", "both"],
        150,
    ),
    Spec(
        "calibration",
        "bench_calibration.py",
        "Calibration methods on simulated scores (bench_calibration.py)",
        ["--seeds", "10", "--n-val", "400", "--n-test", "400", "--prevalence", "0.1"],
        120,
    ),
    Spec(
        "thresholds", "bench_thresholds.py", "Guaranteed operating thresholds (bench_thresholds.py)", [], 120
    ),
    Spec("model", "bench_model.py", "Model (bench_model.py)", [], 300),
    Spec("runtimes", "bench_runtimes.py", "Prediction runtimes: Keras vs ONNX (bench_runtimes.py)", [], 420),
    Spec(
        "round",
        "bench_round.py",
        "Active-learning round at 1k labelled + 10k / 30k / 100k pool, two-stage scoring (bench_round.py)",
        ["--pools", "10000,30000,100000"],
        3600,
    ),
    Spec("simulate", "bench_simulate.py", "Simulated labelling (bench_simulate.py)", [], 300),
    Spec(
        "pair_check",
        "bench_pair_check.py",
        "Pair sanity check on planted faults (bench_pair_check.py)",
        [],
        420,
    ),
    Spec("cpu_preset_check", "cpu_preset_check.py", "CPU preset check (cpu_preset_check.py)", [], 660),
    Spec(
        "subtle",
        "bench_subtle.py",
        "Subtle lesions: CPU preset vs the non-learned baseline on hard data (bench_subtle.py)",
        ["--difficulty", "hard", "--seeds", "0,1,2"],
        4800,
    ),
    Spec(
        "relabel",
        "bench_relabel.py",
        "Relabelling that finds label errors: out-of-fold confident learning vs in-sample (bench_relabel.py)",
        ["--n", "1000", "--size", "128x128", "--label-noise", "0.03"],
        1200,
    ),
    Spec("gpu_check", "gpu_check.py", "GPU throughput (gpu_check.py)", [], 600, needs_gpu=True),
)


def discover() -> list[Spec]:
    """The known scripts, then any other bench_*.py / *_check.py found in bench/ (alphabetical)."""
    specs = list(KNOWN)
    known = {s.script for s in specs}
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name in known or path.name in NOT_BENCHMARKS:
            continue
        if path.name.startswith("bench_") or path.name.endswith("_check.py"):
            name = path.stem.removeprefix("bench_")
            specs.append(Spec(name, path.name, f"{name} ({path.name})"))
    return specs


@dataclass
class Outcome:
    command: str
    returncode: int | None  # None: killed on timeout
    seconds: float
    limit_s: float
    stdout: str
    stderr: str


def _pump(stream, sink: list[str], echo) -> None:  # type: ignore[no-untyped-def]
    for line in iter(stream.readline, ""):
        sink.append(line)
        echo.write(line)
        echo.flush()
    stream.close()


def run_script(spec: Spec, args: list[str], limit_s: float) -> Outcome:
    """Run one script with ``args``, echoing and capturing its output; kill its process group on timeout."""
    shown = " ".join(["python", f"bench/{spec.script}", *map(shlex.quote, args)])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out: list[str] = []
    err: list[str] = []
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(spec.path), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, out, sys.stdout), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, sys.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        rc: int | None = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's own process group (start_new_session)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        rc = None
    for t in readers:
        t.join(timeout=10)
    return Outcome(shown, rc, time.monotonic() - start, limit_s, "".join(out), "".join(err))


def section_body(spec: Spec, res: Outcome) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")  # when it finished
    if res.returncode is None:
        status = f"**timed out** after {res.seconds:.0f} s (limit {res.limit_s:.0f} s); output up to then"
    else:
        status = f"{res.seconds:.0f} s (limit {res.limit_s:.0f} s), exit code {res.returncode}"
    body = f"Finished {when}: {status}.\n\n```bash\n{res.command}\n```\n\n{code_block(res.stdout or '(no output)')}"
    if res.returncode != 0 and res.stderr.strip():
        tail = "\n".join(res.stderr.rstrip().splitlines()[-40:])
        body += f"\n\nLast lines on stderr:\n\n{code_block(tail)}"
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the benchmarks and update docs/benchmarks.md")
    parser.add_argument("--only", default=None, help="comma-separated section names, e.g. queue,calibration")
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S, help="total wall-clock budget (0: no total limit)"
    )
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help='override arguments: queue="--rows 1000"',
    )
    parser.add_argument("--doc", type=Path, default=DOC_PATH, help="the markdown file to update")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    opts = parser.parse_args(argv)

    specs = discover()
    names = {s.name for s in specs}
    overrides: dict[str, list[str]] = {}
    for item in opts.args:
        name, sep, rest = item.partition("=")
        if not sep or name not in names:
            parser.error(
                f"--args expects NAME=ARGS with NAME one of {', '.join(sorted(names))}; got {item!r}"
            )
        overrides[name] = shlex.split(rest)
    if opts.only:
        wanted = [n.strip() for n in opts.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(sorted(names))}")
        specs = [s for s in specs if s.name in wanted]
    if opts.list:
        for s in specs:
            state = "present" if s.path.exists() else "not present"
            extra = " (GPU only)" if s.needs_gpu else ""
            args = " ".join(overrides.get(s.name, s.args))
            print(f"{s.name:<18} {state:<12} limit {s.timeout_s:>4} s{extra}: python bench/{s.script} {args}")
        return 0

    budget = opts.budget_s if opts.budget_s and opts.budget_s > 0 else None
    if read_section("machine", opts.doc) is None:  # the page starts with the intro and the machine
        write_section("machine", machine_section(), opts.doc)
    start = time.monotonic()
    ran: list[tuple[str, Outcome]] = []
    skipped: list[str] = []
    gpu = None
    for spec in specs:
        if not spec.path.exists():
            print(f"[run_all] {spec.script}: not present, skipped", flush=True)
            continue
        if spec.needs_gpu:
            gpu = gpu or gpu_visible()
            if gpu is None:
                print(
                    f"[run_all] {spec.script}: no GPU is available (nvidia-smi shows none), not run",
                    flush=True,
                )
                if read_section(spec.name, opts.doc) is None:
                    note = "Not run yet: the last `run_all.py` machine had no GPU (it runs only where one is visible)."
                    write_section(spec.name, render_section(spec.name, spec.title, note), opts.doc)
                skipped.append(f"{spec.name} (no GPU)")
                continue
        limit = float(spec.timeout_s)
        if budget is not None:
            left = budget - (time.monotonic() - start)
            if left < MIN_RUN_S:
                print(f"[run_all] {spec.script}: total budget spent ({left:.0f} s left), not run", flush=True)
                skipped.append(f"{spec.name} (budget)")
                continue
            limit = min(limit, left)
        args = list(overrides.get(spec.name, spec.args))
        if spec.takes_budget() and "--budget-s" not in args:
            args += ["--budget-s", f"{max(limit * 0.9 - 10, limit * 0.5):.0f}"]
        print(
            f"\n[run_all] {spec.name}: python bench/{spec.script} {' '.join(args)} (limit {limit:.0f} s)",
            flush=True,
        )
        res = run_script(spec, args, limit)
        ran.append((spec.name, res))
        write_section(spec.name, render_section(spec.name, spec.title, section_body(spec, res)), opts.doc)
        state = "timed out" if res.returncode is None else f"exit {res.returncode}"
        print(
            f"[run_all] {spec.name}: {state} after {res.seconds:.0f} s; section updated in {opts.doc}",
            flush=True,
        )

    if ran:
        write_section("machine", machine_section(), opts.doc)
    print(f"\n[run_all] done in {time.monotonic() - start:.0f} s")
    for name, res in ran:
        state = (
            "TIMED OUT"
            if res.returncode is None
            else ("ok" if res.returncode == 0 else f"exit {res.returncode}")
        )
        print(f"  {name:<18} {state:<10} {res.seconds:6.0f} s")
    for item in skipped:
        print(f"  {item:<18} skipped")
    return 0 if all(res.returncode == 0 for _, res in ran) else 1


if __name__ == "__main__":
    raise SystemExit(main())
