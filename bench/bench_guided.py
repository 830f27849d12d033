"""What a batch without a learned model is worth: the baseline-guided batch vs the cold start vs random.

Usage::

    python bench/bench_guided.py [--difficulty hard] [--n 1000] [--noise 0.03] [--seeds 10]
        [--initial 40] [--rounds 8] [--batch 20] [--size 128x128] [--work DIR]
        [--mix near_threshold=0.5+likely_positive=0.35+random=0.15]

The acquisition loop of the replay (same data, same splits per seed: ``experiments.replay.deal``) with no
network at all: every round's batch is chosen by

- ``guided``: ``active.guided.guided_batch``, the production function a round uses when its version did
  not learn (the non-learned baseline fitted on the labels so far, threshold by the default policy on
  validation, the default mix with k-center);
- ``cold_start``: TypiClust on the same label-free features (``active.cold_start.typical_picks``);
- ``random``: uniform draws from the unlabelled pool.

The oracle answers the recorded labels (label noise included); positives are counted against the truth
(``ground_truth.csv``). Prints positives per 100 queries against the pool's base rate with 95%
t-intervals over seeds, paired differences with random, the yield of each mix slice, and the test
AUPRC (truth) of the baseline refitted on each strategy's final labels. Seconds per seed: the
hand-written features are computed once (about 20 s for 1,000 pairs at 128 px).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRATEGIES = ("guided", "cold_start", "random")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--difficulty", default="hard", choices=["easy", "realistic", "hard"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--initial", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--mix", default="default", help="the guided batch's mix: default, or name=share joined by '+'"
    )
    args = ap.parse_args()

    from sklearn.metrics import average_precision_score

    from bench.common import replay_data
    from workbench.active.cold_start import typical_picks
    from workbench.active.guided import can_fit, guided_batch
    from workbench.active.strategies import DEFAULT_MIX
    from workbench.evaluation.baseline import PairRef, features_for, fit_features
    from workbench.experiments.replay import ReplayConfig, deal, read_cases, strategy_mix
    from workbench.experiments.replay_stats import INTERVAL, mean_interval, summarise_replay, summary_text

    mix = strategy_mix(args.mix) or dict(DEFAULT_MIX)
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-guided-"))).resolve()
    t0 = time.perf_counter()
    manifest = replay_data(work / "data", args)
    cases, against = read_cases(manifest)
    refs = [PairRef(i, c.case_id, str(c.pre), str(c.post), f"{i:064d}") for i, c in enumerate(cases)]
    x = features_for(refs, None)
    truth = np.asarray([c.truth for c in cases])
    recorded = np.asarray([c.recorded for c in cases])
    print(
        f"data: {len(cases)} {args.difficulty} pairs at {args.size}, noise {args.noise}; guided mix {mix}; features "
        f"{time.perf_counter() - t0:.0f} s; positives counted against the {against}"
    )
    cfg = ReplayConfig(
        dataset=manifest,
        out=work / "out",
        seeds=[0],
        strategies=["default"],
        initial=args.initial,
        rounds=args.rounds,
        batch=args.batch,
    )
    per: dict[str, list[tuple[float, float, float]]] = {s: [] for s in STRATEGIES}
    curves: list[dict[str, object]] = []  # replay_stats' rows: the baseline refitted before each round

    def test_auprc(labelled: list[int]) -> float:
        fitted = fit_features(x[labelled], recorded[labelled])
        return float(average_precision_score(truth[test], fitted.score(x[test])))

    slices: Counter[str] = Counter()
    slice_pos: Counter[str] = Counter()
    for seed in range(args.seeds):
        parts = deal(cases, seed, cfg)
        val, test = np.asarray(parts["val"]), np.asarray(parts["test"])
        base = float(truth[parts["pool"]].mean())
        line = []
        for name in STRATEGIES:
            labelled, pool = list(parts["initial"]), list(parts["pool"])
            rng = np.random.default_rng([seed, 0x0AC1E])
            found = 0
            for rnd in range(1, args.rounds + 1):
                ids = np.asarray(pool)
                y = recorded[labelled]
                few = not can_fit(y)
                curves.append(
                    {
                        "strategy": name,
                        "seed": seed,
                        "round": rnd,
                        "pool_base_rate": base,
                        "labels_trained": len(labelled),
                        "test_auprc": None if few else test_auprc(labelled),
                        "queried": args.batch * (rnd - 1),
                        "found": found,
                    }
                )
                if name == "random":
                    picks = [int(i) for i in rng.choice(ids, args.batch, replace=False)]
                elif name == "cold_start" or few:
                    picks = [int(ids[p.index]) for p in typical_picks(x[ids], args.batch, seed=seed)]
                else:
                    chosen = guided_batch(
                        x[labelled], y, x[val], recorded[val], x[ids], ids, args.batch, mix, seed=seed
                    ).batch
                    picks = [s.case_id for s in chosen]
                    for s in chosen:
                        slices[s.strategy] += 1
                        slice_pos[s.strategy] += int(truth[s.case_id])
                found += int(truth[picks].sum())
                labelled += picks
                taken = set(picks)
                pool = [i for i in pool if i not in taken]
                curves[-1].update(queried=args.batch * rnd, found=found)
            queried = args.rounds * args.batch
            ap_test = test_auprc(labelled)
            per[name].append((100.0 * found / queried, found / queried / base, ap_test))
            line.append(f"{name} {found}/{queried} ({found / queried / base:.2f}x), test AUPRC {ap_test:.3f}")
        print(f"seed {seed} (pool base rate {base:.3f}): " + "; ".join(line), flush=True)

    def fmt(values: list[float], digits: int = 2) -> str:
        m, lo, hi = mean_interval(values)
        return f"{m:.{digits}f}" + ("" if lo is None else f" [{lo:.{digits}f}, {hi:.{digits}f}]")

    print(
        f"\n{args.seeds} seeds, {args.rounds} rounds of {args.batch} after {args.initial} initial labels; "
        f"brackets: {INTERVAL}; {time.perf_counter() - t0:.0f} s, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        "| strategy | positives /100 queries | x expected rate | paired minus random /100 | test AUPRC of the baseline on its labels |"
    )
    print("|---|---:|---:|---:|---:|")
    rand = per["random"]
    for name in STRATEGIES:
        rows = per[name]
        diff = [a[0] - b[0] for a, b in zip(rows, rand, strict=True)]
        print(
            f"| {name} | {fmt([r[0] for r in rows], 1)} | {fmt([r[1] for r in rows])} | "
            f"{'0' if name == 'random' else fmt(diff, 1)} | {fmt([r[2] for r in rows], 3)} |"
        )
    print(
        "\nAs the replay summarises it (the baseline refitted on the labels before each round stands for the "
        "round's version; final = round "
        f"{args.rounds}'s, trained on {args.initial + (args.rounds - 1) * args.batch} labels):\n"
        + summary_text(summarise_replay(curves), against)
    )
    print(
        "guided slices (positives / picks, all seeds): "
        + ", ".join(f"{k} {slice_pos[k]}/{slices[k]} ({slice_pos[k] / slices[k]:.3f})" for k in slices)
    )


if __name__ == "__main__":
    main()
