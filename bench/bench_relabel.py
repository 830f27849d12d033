"""Relabelling that finds label errors: out-of-fold confident learning vs the old in-sample ranking.

Usage::

    python bench/bench_relabel.py [--n 1000] [--size 128x128] [--label-noise 0.03] [--epochs 15]
        [--top 20] [--data-seed 0] [--seed 0] [--work DIR [--reuse]]

From a clean workbench home, through the ``workbench`` command: synthesise ``--n`` hard pairs (10 %
positive, ``--label-noise`` of the recorded labels flipped; ``ground_truth.csv`` holds recorded and true
labels), import them (70:20:10 patient splits), train the CPU preset (``--epochs``, the learning check
recorded, not enforced), then warm-start a second version from it on cached frozen-backbone features
(what a round does). Both versions are scored in process on every split (stored embeddings included)
and calibrated. Then the top ``--top`` relabel candidates among the labelled train/pool cases are
compared with the flipped labels, for each ranking on the same version:

- out of fold on each feature source of ``active.relabel`` (``SOURCES``: pooled backbone features, the
  stored embeddings, the non-learned baseline's hand-written pair features, and pairs of them);
- the old in-sample ranking (the version's calibrated scores of cases it was trained on), on that
  version and on the first one (trained end to end, so the most likely to have memorised its labels).

Printed per ranking: how many it flags, precision among the top (flipped / shown) with a Clopper-Pearson
95 % interval, the noise rate, precision / noise rate (target >= 5x and precision >= 0.15, issue 14
item 8), recall (flipped found / flipped in the labelled set) and its time.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import noise_note, print_machine, workbench  # noqa: E402
from workbench.active.relabel import FEATURE_SOURCES  # noqa: E402

TARGET_RATIO, TARGET_PRECISION = 5.0, 0.15
SOURCES = ("baseline", "backbone+baseline", "backbone", "embedding", "embedding+baseline")


def version_of(out: str) -> int:
    match = re.search(r"model version (\d+)", out)
    if match is None:
        raise SystemExit(f"could not find the version id in:\n{out}")
    return int(match.group(1))


def prepare(env: dict[str, str], data: Path, args: argparse.Namespace, t0: float) -> tuple[int, int]:
    """Synthesise and import the data, train the CPU preset, then warm-start a version on cached
    backbone features from it; returns both version ids."""
    workbench(env, "db", "upgrade")
    workbench(env, "synth", str(data), "--n", str(args.n), "--seed", str(args.data_seed), "--difficulty", "hard",
              "--positive-rate", str(args.positive_rate), "--label-noise", str(args.label_noise),
              "--size", args.size)  # fmt: skip
    workbench(env, "import", str(data))
    print(f"data: synth + import {time.monotonic() - t0:.0f} s", flush=True)
    warn = '{"train": {"learning_check": "warn"}}'
    ts = time.monotonic()
    first = version_of(
        workbench(
            env,
            "train",
            "--preset",
            "cpu",
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
            "--evaluate-on",
            "",
            "--overrides",
            warn,
        )  # fmt: skip
    )
    t_first = time.monotonic() - ts
    ts = time.monotonic()
    version = version_of(
        workbench(
            env,
            "train",
            "--preset",
            "cpu",
            "--parent",
            str(first),
            "--feature-cache",
            "--seed",
            str(args.seed),
            "--evaluate-on",
            "",
            "--overrides",
            warn,
        )  # fmt: skip
    )
    t_second = time.monotonic() - ts
    print(f"versions: {first} (CPU preset, {args.epochs} epochs, {t_first:.0f} s), {version} (warm-started "
          f"from {first} on cached backbone features, {t_second:.0f} s)", flush=True)  # fmt: skip
    return first, version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--label-noise", type=float, default=0.03)
    parser.add_argument("--positive-rate", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=15, help="CPU preset epochs of the first version")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="training and fold seed")
    parser.add_argument("--work", default=None, help="folder for home and data (default: a temp folder)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="rank again on the data and versions an earlier run left in --work",
    )
    args = parser.parse_args()
    print_machine()
    t0 = time.monotonic()
    if args.reuse and not args.work:
        parser.error("--reuse needs --work (the folder of an earlier run)")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_relabel_"))
    home = work / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    env.pop("WORKBENCH_DATABASE_URL", None)
    env.pop("WORKBENCH_SETTINGS_FILE", None)
    data = work / "data"
    if args.reuse:  # an earlier run's folder: its data and versions 1 and 2, ranked again
        first, version = 1, 2
        print(f"versions: {first} and {version} of the earlier run in {work} (reused, not retrained)")
    else:
        first, version = prepare(env, data, args, t0)
    os.environ["WORKBENCH_HOME"] = str(home)
    from sqlalchemy import select

    from workbench.active.relabel import (
        in_sample_suspects,
        labelled_cases,
        out_of_fold_suspects,
        source_name,
    )
    from workbench.calibration.service import calibrate_version
    from workbench.config import load_settings
    from workbench.db.engine import engine_from_settings, session_scope
    from workbench.db.models import Case
    from workbench.evaluation.metrics import exact_proportion_interval
    from workbench.model.scoring import infer_version

    settings = load_settings()
    engine = engine_from_settings(settings)
    ts = time.monotonic()
    for v in (first, version):  # the first (trained end to end) too: its in-sample ranking is shown
        infer_version(engine, settings, v, ["train", "pool", "val", "test"], mc_samples=0)
        calibrate_version(engine, v)
    print(f"inference on every split + calibration: {time.monotonic() - ts:.0f} s", flush=True)

    with (data / "ground_truth.csv").open(newline="") as fh:
        truth = {r["case_id"]: (int(r["label"]), r["recorded_label"]) for r in csv.DictReader(fh)}
    cases = labelled_cases(engine)
    with session_scope(engine) as s:
        external = dict(
            s.execute(select(Case.id, Case.external_id).where(Case.id.in_(cases.case_ids.tolist()))).all()
        )
    flipped = {
        int(c) for c, y in zip(cases.case_ids, cases.y, strict=True) if truth[external[int(c)]][0] != y
    }
    n, k = cases.n, len(flipped)
    noise = k / n
    print(f"labelled train/pool cases: n={n} ({int(cases.y.sum())} recorded positive), flipped labels "
          f"{k} (noise rate {noise:.3f})", flush=True)  # fmt: skip

    rows = []

    def oof(source: str) -> object:
        return lambda: out_of_fold_suspects(
            engine, settings, version, 10**6, sources=(source,), seed=args.seed
        )

    default = FEATURE_SOURCES[0]
    rankings = {
        f"out-of-fold, {source_name(src)}{' (default)' if src == default else ''}": oof(src)
        for src in SOURCES
    }
    rankings["in-sample (old)"] = lambda: in_sample_suspects(engine, version, 10**6)
    rankings[f"in-sample (old) on version {first}, trained end to end"] = lambda: in_sample_suspects(
        engine, first, 10**6
    )
    for label, rank in rankings.items():
        tr = time.monotonic()
        found = rank()
        took = time.monotonic() - tr
        if isinstance(found, str):
            print(f"{label}: not possible ({found})")
            continue
        top = [s.case_id for s in found[: args.top]]
        hits = sum(c in flipped for c in top)
        prec = hits / len(top) if top else float("nan")
        ci = exact_proportion_interval(hits, len(top)) if top else None
        ratio = prec / noise if noise else float("nan")
        ok = bool(top) and ratio >= TARGET_RATIO and prec >= TARGET_PRECISION
        all_hits = sum(s.case_id in flipped for s in found)
        ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        print(
            f"{label}: flags {len(found)} (of which {all_hits} flipped); top {len(top)}: {hits} flipped, "
            f"precision {prec:.2f}{ci_text} (Clopper-Pearson 95%), {ratio:.1f}x the noise rate {noise:.3f}, "
            f"recall {hits}/{k} = {hits / k if k else float('nan'):.2f}; {took:.1f} s -> "
            f"{'PASS' if ok else 'FAIL'} (target >= {TARGET_RATIO:.0f}x and precision >= {TARGET_PRECISION})",
            flush=True,
        )
        if found:
            print(f"  e.g. case {found[0].case_id}: {found[0].reason}")
        rows.append((label, ok))
    verdicts = "; ".join(f"{lab} {'PASS' if ok else 'FAIL'}" for lab, ok in rows)
    print(f"SUMMARY relabel: {verdicts}; total {time.monotonic() - t0:.0f} s; {noise_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
