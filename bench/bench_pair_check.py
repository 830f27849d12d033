"""Pair sanity check: recall and precision on planted swapped and mismatched pairs.

Usage::

    python bench/bench_pair_check.py [--settings realistic:600:0,hard:600:0,...] [--swap-rate 0.05]
        [--mismatch-rate 0.05] [--workers 2] [--budget-s 300]

Each setting ``difficulty:n:seed[:WxH[:sites[:cases_per_patient]]]`` is a synthetic data set
(``workbench synth --swap-rate --mismatch-rate``; defaults 128x128, 1 site, 1.3 cases per patient) with
exactly ``round(n x rate)`` swapped pairs (pre and post files exchanged) and as many mismatched ones
(post replaced by another patient's post); ``ground_truth.csv`` says which. The check
(``workbench.data.pair_check.check_pair_files``, the function the import and the round call) runs on
every pair of the set with no knowledge of the faults. A planted pair counts as found when it is flagged
suspect (recall), and as found *with the right reason* when the fault named is the planted one;
precision is the share of flagged pairs that were planted. Target: recall >= 90% with precision >= 80%
on the two 600-pair settings (realistic and hard); the third default setting (other seed, size,
difficulty, sites and patients) checks that nothing is tuned to one configuration.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from common import Budget, noise_note, print_machine  # noqa: E402

from workbench.data.pair_check import FAULT_LLR, MISMATCH_MAX_Z, check_pair_files  # noqa: E402
from workbench.data.synth import generate_dataset, parse_size  # noqa: E402

DEFAULT_SETTINGS = "realistic:600:0,hard:600:0,hard:400:7:192x144:2:2"
TARGET_RECALL, TARGET_PRECISION = 0.90, 0.80


@dataclass(frozen=True)
class Setting:
    difficulty: str
    n: int
    seed: int
    size: tuple[int, int] = (128, 128)
    sites: int = 1
    cases_per_patient: float = 1.3

    @property
    def label(self) -> str:
        w, h = self.size
        return (
            f"{self.difficulty}, n={self.n}, seed {self.seed}, {w}x{h}, {self.sites} site(s), "
            f"{self.cases_per_patient:g} cases/patient"
        )


def parse_settings(text: str) -> list[Setting]:
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) < 3:
            raise SystemExit(f"bad setting {item!r}: use difficulty:n:seed[:WxH[:sites[:cases_per_patient]]]")
        size = parse_size(parts[3]) if len(parts) > 3 else (128, 128)
        sites = int(parts[4]) if len(parts) > 4 else 1
        cpp = float(parts[5]) if len(parts) > 5 else 1.3
        out.append(Setting(parts[0], int(parts[1]), int(parts[2]), size, sites, cpp))
    return out


@dataclass(frozen=True)
class Outcome:
    setting: Setting
    planted: dict[str, int]
    found: dict[str, int]  # flagged, whatever the reason
    right: dict[str, int]  # flagged with the planted reason
    false_alarms: dict[str, int]  # sound pairs flagged, by the reason given
    flagged: int
    seconds_generate: float
    seconds_check: float
    stats: dict

    @property
    def recall(self) -> float:
        return sum(self.found.values()) / max(1, sum(self.planted.values()))

    @property
    def precision(self) -> float:
        return sum(self.found.values()) / max(1, self.flagged)


def run_setting(
    setting: Setting, swap_rate: float, mismatch_rate: float, workers: int, root: Path
) -> Outcome:
    t0 = time.perf_counter()
    data = generate_dataset(
        root / f"{setting.difficulty}-{setting.n}-{setting.seed}",
        n=setting.n,
        seed=setting.seed,
        size=setting.size,
        difficulty=setting.difficulty,
        sites=setting.sites,
        cases_per_patient=setting.cases_per_patient,
        swap_rate=swap_rate,
        mismatch_rate=mismatch_rate,
    )
    generated = time.perf_counter() - t0
    with data.manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with data.ground_truth.open(newline="", encoding="utf-8") as fh:
        truth = {r["case_id"]: r["pair_fault"] for r in csv.DictReader(fh)}
    t0 = time.perf_counter()
    result = check_pair_files(
        [(data.root / r["pre_path"], data.root / r["post_path"]) for r in rows],
        [r["patient_id"] for r in rows],
        workers=workers,
    )
    checked = time.perf_counter() - t0
    faults = ("swapped", "mismatched")
    planted = {f: 0 for f in faults}
    found = {f: 0 for f in faults}
    right = {f: 0 for f in faults}
    false_alarms = {f: 0 for f in faults}
    flagged = 0
    for k, row in enumerate(rows):
        fault = truth[row["case_id"]]
        verdict = result.verdicts.get(k)
        suspect = verdict is not None and verdict.status == "suspect"
        flagged += suspect
        if fault:
            planted[fault] += 1
            found[fault] += suspect
            right[fault] += suspect and verdict.fault == fault
        elif suspect:
            false_alarms[verdict.fault] += 1
    return Outcome(setting, planted, found, right, false_alarms, flagged, generated, checked, result.stats)


def report(o: Outcome) -> None:
    n_planted, n_found = sum(o.planted.values()), sum(o.found.values())
    sound = o.setting.n - n_planted
    alarms = sum(o.false_alarms.values())
    print(f"\n{o.setting.label}")
    print(
        f"  recall    {o.recall:6.1%}  ({n_found}/{n_planted} planted pairs flagged; with the right reason "
        f"{sum(o.right.values())}/{n_planted})"
    )
    for fault in o.planted:
        print(
            f"    {fault:<10} {o.found[fault]:>3}/{o.planted[fault]:<3} flagged, {o.right[fault]:>3} as {fault}"
        )
    print(f"  precision {o.precision:6.1%}  ({n_found}/{o.flagged} flagged pairs were planted)")
    print(
        f"  false alarms on sound pairs: {alarms}/{sound} ({alarms / max(1, sound):.1%}; "
        f"{o.false_alarms['swapped']} as swapped, {o.false_alarms['mismatched']} as mismatched)"
    )
    s = o.stats
    print(
        f"  data set: similarity median {s['similarity_median']:.3f} vs {s['null_similarity_median']:.3f} "
        f"for pairs of different patients ({s['null_pairs']} null pairs; {s['separation_z']:.1f} robust "
        f"SDs apart); swap direction separation {s['swap_separation']:.2f}"
    )
    print(
        f"  time: generate {o.seconds_generate:.0f} s, check {o.seconds_check:.1f} s "
        f"({o.seconds_check / o.setting.n * 1000:.0f} ms per pair)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--swap-rate", type=float, default=0.05)
    parser.add_argument("--mismatch-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting settings after this")
    parser.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this folder")
    opts = parser.parse_args(argv)
    settings = parse_settings(opts.settings)
    budget = Budget(opts.budget_s)

    print("bench_pair_check: recall and precision of the pair sanity check on planted faults")
    print_machine()
    print(f"  {noise_note()}")
    print(
        f"  planted: swap rate {opts.swap_rate}, mismatch rate {opts.mismatch_rate}; decision: fault "
        f"log-likelihood ratio >= {FAULT_LLR} (and robust z <= {MISMATCH_MAX_Z} for a mismatch); "
        f"{opts.workers} worker thread(s)"
    )
    root = opts.keep or Path(tempfile.mkdtemp(prefix="bench-pair-check-"))
    outcomes: list[Outcome] = []
    try:
        for i, setting in enumerate(settings):
            if i and budget.exhausted(reserve=90):
                print(f"\n{setting.label}: not run (budget spent)")
                continue
            outcome = run_setting(setting, opts.swap_rate, opts.mismatch_rate, opts.workers, root)
            report(outcome)
            outcomes.append(outcome)
    finally:
        if opts.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    print("\nsummary (target: recall >= 90% with precision >= 80%)")
    print(f"  {'setting':<62} {'recall':>7} {'precision':>9}  target")
    for o in outcomes:
        met = o.recall >= TARGET_RECALL and o.precision >= TARGET_PRECISION
        print(f"  {o.setting.label:<62} {o.recall:7.1%} {o.precision:9.1%}  {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
