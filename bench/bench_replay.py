"""Label efficiency measured the way it runs: the replay simulator (production round + labelling queue + oracle).

Usage::

    python bench/bench_replay.py [--difficulty hard] [--n 1000] [--noise 0.03] [--seeds 10]
        [--initial 40] [--rounds 8] [--batch 20] [--strategies default,random] [--size 128x128] [--work DIR]

Writes ``synth --difficulty D`` data (10% positive, ``--noise`` recorded labels flipped; the truth stays in
``ground_truth.csv``), then replays every seed (``workbench.experiments.replay``) and prints the
per-round curves and the summary (95% t-intervals over seeds). Targets (issue 14, hard data): the default
mix finds positives at >= 2.5x the pool's expected rate with the interval's lower end >= 1.5x, and reaches
random's final test AUPRC (by truth) with <= 60% of random's labels.
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
    ap.add_argument("--difficulty", default="hard", choices=["easy", "realistic", "hard"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--seeds", default="10", help="A count (0..N-1) or a comma-separated list.")
    ap.add_argument("--initial", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--strategies", default="default,random")
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    from bench.common import replay_data
    from workbench.errors import ValidationError
    from workbench.experiments.replay import ReplayConfig, replay

    seeds = (
        list(range(int(args.seeds)))
        if "," not in args.seeds
        else [int(s) for s in args.seeds.split(",") if s.strip()]
    )
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-replay-"))).resolve()
    t = time.perf_counter()
    manifest = replay_data(work / "data", args)
    print(
        f"data: {args.n} {args.difficulty} pairs at {args.size}, noise {args.noise} ({time.perf_counter() - t:.0f} s)"
    )
    cfg = ReplayConfig(
        dataset=manifest,
        out=work / "out",
        seeds=seeds,
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        initial=args.initial,
        rounds=args.rounds,
        batch=args.batch,
    )
    t = time.perf_counter()
    try:
        out = replay(cfg, report=lambda m: print("  " + m, flush=True))
    except ValidationError as exc:
        raise SystemExit(f"bench_replay: {exc}") from None
    print(
        f"\n{len(seeds)} seed(s) x {len(cfg.strategies)} strategies, {args.rounds} rounds of {args.batch} after "
        f"{args.initial} initial labels: {time.perf_counter() - t:.0f} s, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; scored against {out['scored_against']}\n"
    )
    print(out["text"])
    default = next((r for r in out["summary"] if r["strategy"] == "default"), None)
    if default is not None:
        lo = default["x_expected_rate_low"]
        share = default["share_of_random_labels_to_reach_its_auprc"]
        print(
            f"RESULT default mix: {default['x_expected_rate']:.2f}x the expected rate (lower end "
            f"{'-' if lo is None else f'{lo:.2f}'}; targets >= 2.5x, lower >= 1.5x); share of random's labels to "
            f"reach its final AUPRC {share:.2f} over {default['seeds_reaching_random_auprc']} seed(s) (target <= 0.60)"
        )


if __name__ == "__main__":
    main()
