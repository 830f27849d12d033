"""Aligned shots: how much does registering pre onto post help a change map? (``ModelConfig.align_shots``)

Usage::

    python bench/bench_alignment.py TRAIN_SYNTH_DIR TEST_SYNTH_DIR [--n-train 700] [--size 192]

Both folders are ``workbench synth`` outputs (their ``ground_truth.csv`` gives the truth of the test
set). No model is trained: the shipped baseline's hand-written change features
(``workbench.evaluation.whitening``, a logistic regression fitted on the first ``--n-train`` pairs of the
first folder with their recorded labels) are computed on the pairs as decoded and on the pairs with pre
aligned onto post (``workbench.data.alignment.align_pre``, the function the model's pipeline calls),
each with the baseline's tolerance window (max filter over pre, 4.5 % of the side) and with smaller
ones. Prints the test AUROC by truth with stratified bootstrap 95 % intervals, the alignment's time per
pair, and the share of pairs it left unmoved ("identity").
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import print_machine  # noqa: E402

TOLERANCES = (0.045, 0.02, 0.01)
SIZE = 192


def read_set(root: Path) -> tuple[list[tuple[Path, Path]], np.ndarray, np.ndarray]:
    with (root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (root / "ground_truth.csv").open(newline="") as fh:
        truth = {r["case_id"]: int(r["label"]) for r in csv.DictReader(fh)}
    pairs = [(root / r["pre_path"], root / r["post_path"]) for r in rows]
    return pairs, np.array([int(r["label"]) for r in rows]), np.array([truth[r["case_id"]] for r in rows])


def pair_rows(pair: tuple[Path, Path]) -> tuple[np.ndarray, float, str]:
    """Features for (unaligned, aligned) x TOLERANCES, the alignment's seconds and method."""
    from workbench.data.alignment import estimate, warp_pre
    from workbench.data.images import load_rgb
    from workbench.evaluation.whitening import features_from_arrays

    pre_u8, post_u8 = (load_rgb(p, (SIZE, SIZE)) for p in pair)
    t0 = time.perf_counter()
    found = estimate(pre_u8, post_u8)
    aligned_u8 = warp_pre(pre_u8, found)
    seconds = time.perf_counter() - t0
    post = post_u8.astype(np.float32) / 255.0
    feats = [
        features_from_arrays(pre.astype(np.float32) / 255.0, post, tol)
        for pre in (pre_u8, aligned_u8)
        for tol in TOLERANCES
    ]
    return np.stack(feats), seconds, found.method


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--n-train", type=int, default=700)
    args = parser.parse_args()
    print_machine()
    from workbench.evaluation.baseline import fit_features
    from workbench.evaluation.report import evaluate

    tr_pairs, y_tr, _ = read_set(args.train)
    te_pairs, _, truth = read_set(args.test)
    tr_pairs, y_tr = tr_pairs[: args.n_train], y_tr[: args.n_train]
    with ProcessPoolExecutor(2) as pool:
        tr = list(pool.map(pair_rows, tr_pairs, chunksize=8))
        te = list(pool.map(pair_rows, te_pairs, chunksize=8))
    x_tr, x_te = np.stack([r[0] for r in tr]), np.stack([r[0] for r in te])
    seconds = np.array([r[1] for r in tr + te])
    identity = np.mean([r[2] == "identity" for r in tr + te])
    print(
        f"alignment at {SIZE}x{SIZE}: median {1000 * np.median(seconds):.1f} ms a pair (p95 "
        f"{1000 * np.percentile(seconds, 95):.1f} ms); left unmoved: {100 * identity:.1f} % of {len(seconds)} pairs"
    )
    print(f"fitted on {len(y_tr)} pairs ({int(y_tr.sum())} positive, recorded labels); test n={len(truth)}, "
          f"{int(truth.sum())} positive by truth")  # fmt: skip
    for a, aligned in enumerate(("as decoded", "aligned")):
        for t, tol in enumerate(TOLERANCES):
            i = a * len(TOLERANCES) + t
            fitted = fit_features(x_tr[:, i], y_tr)
            rep = evaluate(truth, fitted.score(x_te[:, i]), split="test", threshold=0.5, n_boot=2000, seed=0)
            e = rep.auroc
            print(f"  pairs {aligned:<10} tolerance {100 * tol:4.1f} % of the side: test AUROC by truth "
                  f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
