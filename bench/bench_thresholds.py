"""Guaranteed vs point-estimate operating thresholds on simulated validation splits.

Usage::

    python bench/bench_thresholds.py [--draws 4000] [--positives 10,20,30,40,80] [--random-n 300]
        [--separation 1.6] [--prevalence 0.1] [--target 0.9] [--confidence 95] [--seed 0]

Scores follow a binormal model, so the population curve is known exactly: latent z ~ N(0, 1) for
negatives and N(d, 1) for positives (d = ``--separation``; AUROC = Phi(d / sqrt 2), 0.87 for d = 1.6), and
the model reports p = sigmoid(z). A threshold t on p therefore has true sensitivity 1 - Phi(logit t - d)
and true specificity Phi(logit t): no test split is drawn, every chosen threshold is judged against the
population it would be deployed on.

For each number of validation positives (negatives: positives x (1 - prevalence) / prevalence, i.e. 10 %
prevalence), ``--draws`` validation splits are drawn; on each, ``workbench.calibration.threshold_choice.
choose_threshold`` picks a threshold with the point policy ``sensitivity>=X`` and with the guaranteed
policy ``sensitivity>=X@L``. The table shows how often the chosen threshold's TRUE sensitivity is >= X,
how often a guarantee was possible (the guaranteed policy falls back to the point policy when it is not),
and the true specificity each policy keeps. One more row draws splits of ``--random-n`` cases with a
binomial number of positives, where a guarantee is possible only in some draws. The "binomial" columns
are the exact coverage expected from order statistics, as a check on the simulation.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
from common import noise_note, print_machine  # noqa: E402
from scipy.special import expit, logit, ndtr, ndtri  # noqa: E402
from scipy.stats import binom  # noqa: E402

from workbench.calibration.threshold_choice import choose_threshold  # noqa: E402
from workbench.calibration.thresholds import parse_policy  # noqa: E402
from workbench.evaluation.bootstrap import clopper_pearson_lower, clopper_pearson_min_total  # noqa: E402

SEPARATION = 1.6  # AUROC = Phi(1.6 / sqrt 2) = 0.871


@dataclass(frozen=True)
class SimResult:
    """What one setting (number of validation positives) gave over its draws."""

    label: str
    draws: int
    positives_min: int
    positives_max: int
    point_coverage: float  # fraction of draws whose point-policy threshold truly reaches the target
    guaranteed_coverage: float  # same for the guaranteed policy, fallback draws included
    guarantee_possible: float  # fraction of draws where the guaranteed policy could guarantee
    coverage_when_guaranteed: float | None  # coverage over the draws that were guaranteed
    point_specificity: float  # mean true specificity of the point-policy thresholds
    guaranteed_specificity: float  # mean true specificity of the guaranteed-policy thresholds
    point_sensitivity: float
    guaranteed_sensitivity: float
    seconds: float


def true_sensitivity(t: float, separation: float) -> float:
    """Population sensitivity of ``p >= t`` under the binormal model."""
    return float(1.0 - ndtr(logit(t) - separation))


def true_specificity(t: float) -> float:
    return float(ndtr(logit(t)))


def draw_split(
    n_pos: int, n_neg: int, separation: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of one simulated validation split."""
    y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]
    z = np.r_[rng.normal(separation, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)]
    return y, expit(z)


def simulate(
    n_pos: int | None,
    draws: int,
    seed: int = 0,
    *,
    n_total: int | None = None,
    target: float = 0.9,
    confidence: float = 95.0,
    separation: float = SEPARATION,
    prevalence: float = 0.1,
) -> SimResult:
    """Draw ``draws`` validation splits and judge both policies' thresholds on the population curve.

    ``n_pos`` fixes the positives (negatives follow the prevalence); with ``n_pos=None`` each split has
    ``n_total`` cases and a Binomial(n_total, prevalence) number of positives (at least 1).
    """
    if (n_pos is None) == (n_total is None):
        raise ValueError("give exactly one of n_pos and n_total")
    point = parse_policy(f"sensitivity>={target:g}")
    guaranteed = parse_policy(f"sensitivity>={target:g}@{confidence:g}")
    rng = np.random.default_rng([seed, n_pos or 0, n_total or 0])
    ok_point, ok_guar, possible = [], [], []
    spec_point, spec_guar, sens_point, sens_guar, positives = [], [], [], [], []
    t0 = time.perf_counter()
    for _ in range(draws):
        if n_pos is not None:
            k = n_pos
            n_neg = round(n_pos * (1.0 - prevalence) / prevalence)
        else:
            assert n_total is not None
            k = max(1, int(rng.binomial(n_total, prevalence)))
            n_neg = n_total - k
        y, p = draw_split(k, n_neg, separation, rng)
        a = choose_threshold(point, y, p)
        b = choose_threshold(guaranteed, y, p)
        sa, sb = true_sensitivity(a.value, separation), true_sensitivity(b.value, separation)
        ok_point.append(sa >= target)
        ok_guar.append(sb >= target)
        possible.append(bool(b.guaranteed))
        sens_point.append(sa)
        sens_guar.append(sb)
        spec_point.append(true_specificity(a.value))
        spec_guar.append(true_specificity(b.value))
        positives.append(k)
    poss = np.array(possible)
    guar_ok = np.array(ok_guar)
    return SimResult(
        label=str(n_pos) if n_pos is not None else f"Bin({n_total}, {prevalence:g})",
        draws=draws,
        positives_min=min(positives),
        positives_max=max(positives),
        point_coverage=float(np.mean(ok_point)),
        guaranteed_coverage=float(guar_ok.mean()),
        guarantee_possible=float(poss.mean()),
        coverage_when_guaranteed=float(guar_ok[poss].mean()) if poss.any() else None,
        point_specificity=float(np.mean(spec_point)),
        guaranteed_specificity=float(np.mean(spec_guar)),
        point_sensitivity=float(np.mean(sens_point)),
        guaranteed_sensitivity=float(np.mean(sens_guar)),
        seconds=time.perf_counter() - t0,
    )


def expected_coverage(n_pos: int, target: float, confidence: float | None) -> float:
    """Exact coverage: the policy picks the k-th highest positive score, which truly reaches ``target``
    unless at least k of the n positives score above the population's target quantile (Bin(n, target)).

    k is ceil(target * n) for the point policy and, for the guaranteed one, the least k whose
    Clopper-Pearson bound reaches the target (the point k when no k does: the fallback).
    """
    k = math.ceil(target * n_pos - 1e-9)
    if confidence is not None:
        level = confidence / 100.0
        ks = [j for j in range(1, n_pos + 1) if (clopper_pearson_lower(j, n_pos, level) or 0.0) >= target]
        k = ks[0] if ks else k
    return float(1.0 - binom.sf(k - 1, n_pos, target))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="guaranteed vs point operating thresholds, simulated")
    parser.add_argument("--draws", type=int, default=4000, help="validation splits per setting")
    parser.add_argument("--positives", default="10,20,30,40,80", help="validation positives per setting")
    parser.add_argument("--random-n", type=int, default=300, help="cases of the binomial row (0: none)")
    parser.add_argument("--separation", type=float, default=SEPARATION, help="d: positives' mean latent")
    parser.add_argument("--prevalence", type=float, default=0.1)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--confidence", type=float, default=95.0, help="one-sided level in percent")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.positives.split(",") if x.strip()]
    if args.draws < 1 or not counts or min(counts) < 1:
        parser.error("need --draws >= 1 and positive --positives")
    if not 0 < args.prevalence < 1 or not 0 < args.target < 1 or not 50 <= args.confidence < 100:
        parser.error("need 0 < prevalence < 1, 0 < target < 1 and 50 <= confidence < 100")

    point = f"sensitivity>={args.target:g}"
    guar = f"{point}@{args.confidence:g}"
    auroc = ndtr(args.separation / math.sqrt(2.0))
    q = args.separation + ndtri(1.0 - args.target)  # latent threshold with true sensitivity = target
    needed = clopper_pearson_min_total(args.target, args.confidence / 100.0)
    print(f"bench_thresholds: '{point}' (point estimate) vs '{guar}' (Clopper-Pearson lower bound)")
    print_machine()
    print(f"  {noise_note()}")
    print(
        f"  binormal scores: negatives N(0, 1), positives N({args.separation:g}, 1), AUROC {auroc:.3f}; "
        f"prevalence {args.prevalence:g}; {args.draws} validation draws per row; seed {args.seed}"
    )
    print(
        f"  judged on the population curve; the ideal threshold (true sensitivity {args.target:g}) has "
        f"true specificity {ndtr(q):.3f}; a {args.confidence:g}% guarantee of {args.target:g} needs "
        f">= {needed} validation positives"
    )
    settings: list[tuple[int | None, int | None]] = [(n, None) for n in counts]
    if args.random_n > 0:
        settings.append((None, args.random_n))
    print()
    print(
        "| val positives | draws | point: true sens >= target | (binomial) | guarantee possible | "
        "guaranteed: true sens >= target | (binomial) | ... when guaranteed | "
        "mean true spec point | mean true spec guaranteed | spec paid | mean true sens point / guaranteed |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    t0 = time.perf_counter()
    for n_pos, n_total in settings:
        r = simulate(
            n_pos,
            args.draws,
            args.seed,
            n_total=n_total,
            target=args.target,
            confidence=args.confidence,
            separation=args.separation,
            prevalence=args.prevalence,
        )
        exp_point = _pct(expected_coverage(n_pos, args.target, None)) if n_pos else "-"
        exp_guar = _pct(expected_coverage(n_pos, args.target, args.confidence)) if n_pos else "-"
        label = r.label if n_pos else f"{r.label} ({r.positives_min}-{r.positives_max})"
        print(
            f"| {label} | {r.draws} | {_pct(r.point_coverage)} | {exp_point} | {_pct(r.guarantee_possible)} | "
            f"{_pct(r.guaranteed_coverage)} | {exp_guar} | {_pct(r.coverage_when_guaranteed)} | "
            f"{r.point_specificity:.3f} | {r.guaranteed_specificity:.3f} | "
            f"{r.point_specificity - r.guaranteed_specificity:+.3f} | "
            f"{r.point_sensitivity:.3f} / {r.guaranteed_sensitivity:.3f} |",
            flush=True,
        )
    print(
        "\n  'spec paid': mean true specificity lost by the guaranteed policy; where no guarantee is "
        "possible it falls back to the point threshold (paid 0, coverage as the point policy)."
    )
    print(f"  total {time.perf_counter() - t0:.1f} s; {noise_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
