"""One full active-learning round with the feature cache at 1,000 labelled + 10,000 pool pairs.

Usage::

    python bench/bench_round.py [--labelled 1000] [--pool 10000] [--size 48x48] [--work DIR]

Set-up (not timed as "the round"): synthetic pairs are generated and imported, round 0 trains the
CPU preset end to end on the labelled cases, and round 1 warm-starts from it on cached features
(filling the frozen backbone's feature cache for every image). The measured round is round 2: the
same steps a warm-started round runs (phase-1 head retrain on cached features -> inference over
pool + val + test through the cache -> calibration -> queue building), each timed, in-process
through the library functions the round job calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelled", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--size", default="48x48")
    ap.add_argument("--epochs", type=int, default=10, help="Epochs of round 0 (end to end).")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    from workbench.active.building import build_queue
    from workbench.calibration.service import calibrate_version
    from workbench.config import Settings
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset, parse_size
    from workbench.db.engine import create_db_engine
    from workbench.db.schema import upgrade
    from workbench.defaults import DEFAULT_METHODS, DEFAULT_POLICY
    from workbench.jobs.params import TrainParams
    from workbench.model.registry import train_version
    from workbench.model.scoring import infer_version

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-round-"))
    settings = Settings(home=work / "home", database_url=f"sqlite:///{work / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    n = args.labelled + args.pool
    t0 = time.perf_counter()
    # The labelled share is what a 70:20:10 split of the labelled cases needs; the rest is the pool.
    data = generate_dataset(
        work / "data",
        n=n,
        positive_rate=0.1,
        seed=0,
        size=parse_size(args.size),
        unlabelled_fraction=args.pool / n,
        difficulty="easy",
    )
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = import_source(engine, data.manifest, workers=4)
    t_import = time.perf_counter() - t0
    print(f"set-up: synth {n} pairs {t_synth:.1f} s, import {result.imported} pairs {t_import:.1f} s")
    print(f"        splits: {result.split_counts}")

    def round_steps(parent: int | None, label: str) -> tuple[int, dict[str, float]]:
        times: dict[str, float] = {}
        params = {"preset": "cpu", "seed": 0}
        if parent is None:
            params["epochs"] = args.epochs
        else:
            params.update(parent_version=parent, use_feature_cache=True)
        t = time.perf_counter()
        version = train_version(engine, settings, TrainParams.parse(params))["model_version"]
        times["train"] = time.perf_counter() - t
        t = time.perf_counter()
        infer_version(engine, settings, version, ["pool", "val", "test"], mc_samples=8, batch_size=64)
        times["infer"] = time.perf_counter() - t
        t = time.perf_counter()
        calibrate_version(engine, version, DEFAULT_METHODS, DEFAULT_POLICY)
        times["calibrate"] = time.perf_counter() - t
        t = time.perf_counter()
        build_queue(engine, settings, version, 20)
        times["queue"] = time.perf_counter() - t
        total = sum(times.values())
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        print(f"{label}: {parts}; total {total:.1f} s")
        return version, times

    v0, _ = round_steps(None, "round 0 (end to end, no cache)      ")
    v1, _ = round_steps(v0, "round 1 (warm start, cache filling) ")
    _, measured = round_steps(v1, "round 2 (warm start, cache warm)    ")
    total = sum(measured.values())
    print(
        f"RESULT round with feature cache at {args.labelled} labelled + {args.pool} pool: {total:.1f} s "
        f"(target <= 60 s: {'met' if total <= 60 else 'missed'})"
    )


if __name__ == "__main__":
    main()
