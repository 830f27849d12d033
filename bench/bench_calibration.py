"""Calibration methods on simulated over-confident scores: ECE, Brier and NLL on a test split.

Usage::

    python bench/bench_calibration.py [--seeds 10] [--n-val 400] [--n-test 400] [--prevalence 0.1]
        [--overconfidence 2.5] [--n-boot 500] [--budget-s 300]

Scores are simulated so the truth is known. Each case has a latent z drawn from a class-conditional
normal: negatives N(0, 1), positives N(d, s^2), positives at the given prevalence. The true probability
of a case is the Bayes posterior P(y=1 | z) (perfectly calibrated); the "model" reports
``sigmoid(k * logit(posterior))`` with k = ``--overconfidence`` (k > 1: too sure of itself, as deep
networks trained with cross-entropy often are). Two scenarios:

* **equal variance** (d=2, s=1): the posterior logit is linear in z, so the miscalibration is exactly
  a temperature k (temperature scaling is the right model and should find T ~= k);
* **unequal variance** (d=2, s=1.6): the posterior logit is quadratic in z, the miscalibration is not
  a pure temperature (beta / isotonic have something to add).

For every seed a validation split (``--n-val``) and a test split (``--n-test``) are drawn; each method
(identity, temperature, isotonic, platt, beta) is fitted on validation with
``workbench.calibration.compare.fit_calibrator`` and scored on test with ``workbench.calibration.measures``
(ECE with 15 equal-width bins, ECE with 15 equal-mass bins, Brier, NLL). The table shows the mean and
standard deviation over seeds, how often the method beat the uncalibrated scores on test, and the
"oracle" row (the true posteriors: the floor that finite test sets allow). For seed 0 it also runs
``compare.assess`` (the workbench's own report) and prints its paired-bootstrap verdicts on test.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
from common import Budget, noise_note, print_machine  # noqa: E402

from workbench.calibration.compare import assess, fit_calibrator  # noqa: E402
from workbench.calibration.measures import brier, ece, nll  # noqa: E402

METHODS = ("identity", "temperature", "isotonic", "platt", "beta", "histogram", "bbq")
MEASURES = ("ece15", "ece_mass15", "brier", "nll")


@dataclass(frozen=True)
class Scenario:
    name: str
    shift: float  # d: mean of positives' z
    spread: float  # s: standard deviation of positives' z (negatives: 1)


SCENARIOS = (Scenario("equal variance", 2.0, 1.0), Scenario("unequal variance", 2.0, 1.6))


def posterior_logit(z: np.ndarray, prevalence: float, sc: Scenario) -> np.ndarray:
    """log P(y=1|z) / P(y=0|z) for the two class-conditional normals."""
    log_pos = -0.5 * ((z - sc.shift) / sc.spread) ** 2 - np.log(sc.spread)
    log_neg = -0.5 * z**2
    return np.log(prevalence / (1 - prevalence)) + log_pos - log_neg


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def draw(
    n: int, prevalence: float, sc: Scenario, k: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, the model's over-confident logits, and the true posteriors of n cases."""
    y = (rng.random(n) < prevalence).astype(np.int64)
    while y.sum() < 2 or y.sum() > n - 2:  # calibrators need both classes
        y = (rng.random(n) < prevalence).astype(np.int64)
    z = np.where(y == 1, rng.normal(sc.shift, sc.spread, n), rng.normal(0.0, 1.0, n))
    true_logit = posterior_logit(z, prevalence, sc)
    return y, k * true_logit, sigmoid(true_logit)


def score(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "ece15": ece(y, p, 15, "uniform"),
        "ece_mass15": ece(y, p, 15, "quantile"),
        "brier": brier(y, p),
        "nll": nll(y, p),
    }


def run_scenario(sc: Scenario, args: argparse.Namespace, budget: Budget) -> None:
    print(f"\n=== {sc.name}: negatives N(0, 1), positives N({sc.shift:g}, {sc.spread:g}^2) ===", flush=True)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in (*METHODS, "oracle")}
    fit_times: dict[str, list[float]] = {m: [] for m in METHODS}
    temperatures: list[float] = []
    positives: list[tuple[int, int]] = []
    warm_y, warm_z, _ = draw(args.n_val, args.prevalence, sc, args.overconfidence, np.random.default_rng(99))
    for method in METHODS:  # warm-up: netcal / torch imports are not part of the fit times
        fit_calibrator(method, warm_z, warm_y)
    for seed in range(args.seeds):
        if seed and budget.exhausted(reserve=20):
            print(f"  budget spent: stopped after {seed} seeds")
            break
        rng = np.random.default_rng([seed, int(sc.spread * 100)])
        y_val, z_val, _ = draw(args.n_val, args.prevalence, sc, args.overconfidence, rng)
        y_test, z_test, true_test = draw(args.n_test, args.prevalence, sc, args.overconfidence, rng)
        positives.append((int(y_val.sum()), int(y_test.sum())))
        results["oracle"].append(score(y_test, true_test))
        for method in METHODS:
            t0 = time.perf_counter()
            cal = fit_calibrator(method, z_val, y_val)
            fit_times[method].append(time.perf_counter() - t0)
            results[method].append(score(y_test, cal.transform(z_test)))
            if method == "temperature":
                temperatures.append(float(cal.temperature))
        if seed == 0 and args.n_boot > 0:
            print_assess(z_val, y_val, z_test, y_test, args.n_boot)

    n = len(results["oracle"])
    pv = np.array(positives)
    print(
        f"\n  {n} seeds; positives per split: val {pv[:, 0].min()}-{pv[:, 0].max()} of {args.n_val}, "
        f"test {pv[:, 1].min()}-{pv[:, 1].max()} of {args.n_test}"
    )
    print("  test split, mean (sd) over seeds; 'wins' = seeds where the method beat the uncalibrated scores")
    header = f"  {'method':<12}" + "".join(
        f"{m:>20}" for m in ("ECE 15 bins", "ECE 15 equal-mass", "Brier", "NLL")
    )
    print(header + f"{'wins ECE/Brier/NLL':>22}{'fit ms':>9}")
    base = results["identity"]
    for method in (*METHODS, "oracle"):
        rows = results[method]
        cells = ""
        for key in MEASURES:
            vals = np.array([r[key] for r in rows])
            cells += f"{vals.mean():>11.4f} ({vals.std(ddof=1) if n > 1 else 0.0:.4f})"
        wins = "/".join(
            str(sum(r[key] < b[key] for r, b in zip(rows, base, strict=True)))
            for key in ("ece15", "brier", "nll")
        )
        fit = f"{np.median(fit_times[method]) * 1e3:9.0f}" if method in fit_times else f"{'-':>9}"
        label = "uncalibrated" if method == "identity" else method
        print(f"  {label:<12}{cells}{wins + f' of {n}':>22}{fit}")
    t = np.array(temperatures)
    print(
        f"  fitted temperature: median {np.median(t):.2f} (range {t.min():.2f}-{t.max():.2f}); "
        f"simulated over-confidence k = {args.overconfidence:g}"
        + (" (a pure temperature here)" if sc.spread == 1.0 else " (not a pure temperature here)")
    )


def print_assess(
    z_val: np.ndarray, y_val: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, n_boot: int
) -> None:
    """compare.assess on seed 0: its paired bootstrap of calibrated minus uncalibrated on test."""
    print(f"  seed 0, compare.assess (fit on val, paired bootstrap on test, {n_boot} resamples):")
    for method in METHODS[1:]:
        rep = assess(method, z_val, y_val, z_test, y_test, n_boot=n_boot, seed=0)
        test = next(e for e in rep["splits"] if e["split"] == "test")
        parts = []
        for key, m in test["calibrated_vs_uncalibrated"]["metrics"].items():
            parts.append(f"{key} {m['delta']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}] {m['verdict']}")
        verdicts = "; ".join(parts).replace("a better", "calibrated better").replace("b better", "worse")
        print(f"    {method:<12} delta (calibrated - uncalibrated): {verdicts}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="calibration methods on simulated over-confident scores")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--prevalence", type=float, default=0.1)
    parser.add_argument(
        "--overconfidence", type=float, default=2.5, help="k: scores = sigmoid(k * true logit)"
    )
    parser.add_argument(
        "--n-boot", type=int, default=500, help="compare.assess resamples on seed 0 (0: skip)"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="overall wall-clock budget")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.n_val < 20 or args.n_test < 20:
        parser.error("need --seeds >= 1 and --n-val, --n-test >= 20")
    if not 0 < args.prevalence < 1 or args.overconfidence <= 0:
        parser.error("--prevalence must be in (0, 1) and --overconfidence > 0")
    budget = Budget(args.budget_s)
    print("bench_calibration: calibrators on simulated over-confident scores (fit on val, score on test)")
    print_machine()
    print(f"  {noise_note()}")
    print(
        f"  n_val={args.n_val}, n_test={args.n_test}, prevalence={args.prevalence:g}, "
        f"over-confidence k={args.overconfidence:g}, seeds={args.seeds}"
    )
    t0 = time.perf_counter()
    for sc in SCENARIOS:
        run_scenario(sc, args, budget)
    print(f"\n  total {time.perf_counter() - t0:.0f} s; {noise_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
