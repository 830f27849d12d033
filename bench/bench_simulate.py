"""Label efficiency: the simulator on synthetic data, each strategy against random.

Usage::

    python bench/bench_simulate.py [--n 600] [--seeds 1] [--rounds 5] [--batch 20] [--initial 40]

The issue's full figure uses ``--seeds 3`` (about 10 minutes on 2 loaded cores); ``run_all.py`` runs
one seed to stay within its budget.
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
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--initial", type=int, default=40)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    from workbench.data.synth import generate_dataset
    from workbench.experiments import simulate

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-simulate-"))
    data = generate_dataset(
        work / "data", n=args.n, positive_rate=0.1, seed=args.data_seed, difficulty="easy"
    )
    t = time.perf_counter()
    result = simulate(
        data.manifest,
        work / "out",
        rounds=args.rounds,
        batch=args.batch,
        initial=args.initial,
        seeds=args.seeds,
    )
    print(
        f"{args.n} synthetic pairs (10% positive, data seed {args.data_seed}), {args.seeds} seed(s), "
        f"{time.perf_counter() - t:.0f} s"
    )
    print(result.summary_table())


if __name__ == "__main__":
    main()
