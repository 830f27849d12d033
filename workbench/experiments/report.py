"""The report of a simulation: the per-strategy summary, its plain-text tables, the CSV files and the plot.

Files: ``curves.csv`` (one row per strategy, seed and round; round 0 is the initial set), ``summary.csv``,
``queries.csv`` (every queried case, which strategy picked it and why), ``curves.png`` (see ``plot``) and
``simulation.json`` (parameters and timing). Each is written to a temporary name and renamed, so a reader
never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.experiments.config import BASELINE, SimulationConfig
from workbench.experiments.plot import plot_curves
from workbench.files import atomic_write_text

ProgressFn = Callable[[float, str], None]

CURVE_COLUMNS: tuple[str, ...] = (
    "strategy",
    "seed",
    "round",
    "labels_used",
    "positives_found",
    "queried",
    "test_auprc",
    "test_auroc",
    "test_n",
    "test_positives",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "seeds",
    "queried",
    "pool_positives",
    "positives_per_100_mean",
    "positives_per_100_min",
    "positives_per_100_max",
    "ratio_vs_random",
    "initial_auprc_mean",
    "final_auprc_mean",
    "final_auprc_min",
    "final_auprc_max",
    "final_auroc_mean",
)
QUERY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "seed",
    "round",
    "case_id",
    "label",
    "chosen_by",
    "score",
    "reason",
)


@dataclass
class SimulationResult:
    """Curves (one dict per strategy, seed and round), the per-strategy summary, and the files written."""

    out: Path
    dataset: str
    label_source: str
    strategies: list[str]
    seeds: list[int]
    rounds: int
    batch: int
    initial: int
    curves: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary_table(self) -> str:
        """Plain-text tables: positives found per 100 queries (vs random) and mean test AUPRC vs labels used."""
        seeds = ", ".join(str(s) for s in self.seeds)
        queried = self.rounds * self.batch
        lines = [
            f"Simulation on {self.dataset}: {self.rounds} rounds of {self.batch} after {self.initial} initial "
            f"labels, seeds {seeds} ({self.seconds:.0f} s)",
            f"Positives found per 100 queries ({queried} queries per seed; mean over seeds, [min, max]); "
            "test AUPRC after the last round",
        ]
        header = ["strategy", "pos/100 queries", "[min, max]", "x random", "final AUPRC", "[min, max]"]
        rows = []
        for s in self.summary:
            ratio = s["ratio_vs_random"]
            rows.append(
                [
                    s["strategy"],
                    _fmt(s["positives_per_100_mean"], 1),
                    f"[{_fmt(s['positives_per_100_min'], 1)}, {_fmt(s['positives_per_100_max'], 1)}]",
                    "n/a" if ratio is None else f"{ratio:.2f}",
                    _fmt(s["final_auprc_mean"], 3),
                    f"[{_fmt(s['final_auprc_min'], 3)}, {_fmt(s['final_auprc_max'], 3)}]",
                ]
            )
        lines += _table(header, rows)
        pool_pos = self.summary[0]["pool_positives"] if self.summary else None
        if pool_pos is not None:
            lines.append(
                f"(unlabelled pool positives after the initial set: {pool_pos:.1f} per seed on average)"
            )
        labels_used = sorted({int(r["labels_used"]) for r in self.curves})
        lines += ["", "Mean test AUPRC vs labels used"]
        auprc_rows = []
        for name in self.strategies:
            row = [name]
            for n in labels_used:
                vals = [
                    r["test_auprc"] for r in self.curves if r["strategy"] == name and r["labels_used"] == n
                ]
                row.append(_fmt(_nanmean(vals), 3))
            auprc_rows.append(row)
        lines += _table(["strategy", *(str(n) for n in labels_used)], auprc_rows)
        test_n = sorted({(int(r["test_n"]), int(r["test_positives"])) for r in self.curves})
        if test_n:
            spread = ", ".join(f"n={n} ({p} positive)" for n, p in test_n)
            lines.append(f"(test sets per seed: {spread})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals, or ``n/a`` when missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _nanmean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values, None when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned text lines: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> Path:
    """Rows as CSV with exactly ``columns`` (other keys ignored, None written empty), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def summarise(curves: list[dict[str, Any]], strategies: Sequence[str]) -> list[dict[str, Any]]:
    """Per strategy: positives found per 100 queries (mean, min, max over seeds), ratio of means vs random,
    mean initial and final test AUPRC (final: mean, min, max) and final AUROC."""
    out = []
    for name in strategies:
        rows = [r for r in curves if r["strategy"] == name]
        seeds = sorted({r["seed"] for r in rows})
        per100, final_ap, final_roc, init_ap, pool_pos = [], [], [], [], []
        queried = 0
        for seed in seeds:
            mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["round"])
            first, last = mine[0], mine[-1]
            queried = last["queried"]
            if queried:
                per100.append(100.0 * (last["positives_found"] - first["positives_found"]) / queried)
            final_ap.append(last["test_auprc"])
            final_roc.append(last["test_auroc"])
            init_ap.append(first["test_auprc"])
            pool_pos.append(first.get("_pool_positives", math.nan))
        finite_ap = [v for v in final_ap if v is not None and math.isfinite(v)]
        out.append(
            {
                "strategy": name,
                "seeds": len(seeds),
                "queried": queried,
                "pool_positives": _nanmean(pool_pos),
                "positives_per_100_mean": float(np.mean(per100)) if per100 else None,
                "positives_per_100_min": float(np.min(per100)) if per100 else None,
                "positives_per_100_max": float(np.max(per100)) if per100 else None,
                "ratio_vs_random": None,
                "initial_auprc_mean": _nanmean(init_ap),
                "final_auprc_mean": _nanmean(final_ap),
                "final_auprc_min": float(np.min(finite_ap)) if finite_ap else None,
                "final_auprc_max": float(np.max(finite_ap)) if finite_ap else None,
                "final_auroc_mean": _nanmean(final_roc),
            }
        )
    base = next((s for s in out if s["strategy"] == BASELINE), None)
    for s in out:
        if base is not None and base["positives_per_100_mean"] and s["positives_per_100_mean"] is not None:
            s["ratio_vs_random"] = s["positives_per_100_mean"] / base["positives_per_100_mean"]
    return out


@dataclass
class Records:
    """What the rounds produce: curve rows (with ``_pool_positives`` for the summary), queried cases and
    the seconds each seed spent on its feature extractor, its features and its rounds."""

    curves: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)
    seed_seconds: dict[int, dict[str, float]] = field(default_factory=dict)


def write_report(
    cfg: SimulationConfig,
    dataset: str,
    label_source: str,
    y_all: np.ndarray,
    out_dir: Path,
    records: Records,
    started: float,
    progress: ProgressFn | None,
) -> SimulationResult:
    """Summarise the curves, write the CSV files, the plot and ``simulation.json``; return the result."""
    curves = records.curves
    summary = summarise(curves, cfg.strategies)
    files = {
        "curves": write_csv(out_dir / "curves.csv", CURVE_COLUMNS, curves),
        "summary": write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, summary),
        "queries": write_csv(out_dir / "queries.csv", QUERY_COLUMNS, records.queries),
    }
    files["plot"] = plot_curves(curves, cfg.strategies, out_dir / "curves.png")
    seconds = time.monotonic() - started
    notes = [
        "features: backbone trained end to end on each seed's initial labels only, then frozen"
        if not cfg.model_cfg.pretrained
        else "features: pretrained backbone, frozen",
        "threshold: prevalence quantile of the pool probabilities (prevalence from uniformly drawn labels)",
    ]
    meta = _meta(cfg, dataset, label_source, y_all, seconds, records.seed_seconds, notes)
    files["meta"] = atomic_write_text(out_dir / "simulation.json", json.dumps(meta, indent=2) + "\n")
    if progress is not None:
        progress(1.0, f"done in {seconds:.0f} s; results in {out_dir}")
    return SimulationResult(
        out=out_dir,
        dataset=dataset,
        label_source=label_source,
        strategies=cfg.strategies,
        seeds=cfg.seeds,
        rounds=cfg.rounds,
        batch=cfg.batch,
        initial=cfg.initial,
        curves=[{k: v for k, v in r.items() if not k.startswith("_")} for r in curves],
        summary=summary,
        seconds=seconds,
        files=files,
        notes=notes,
    )


def _meta(
    cfg: SimulationConfig,
    dataset: str,
    label_source: str,
    y_all: np.ndarray,
    seconds: float,
    seed_seconds: dict[int, dict[str, float]],
    notes: list[str],
) -> dict[str, Any]:
    """The content of ``simulation.json``: the data set, every setting, the timings and the notes."""
    return {
        "dataset": dataset,
        "label_source": label_source,
        "cases": len(y_all),
        "positives": int(y_all.sum()),
        "strategies": {n: cfg.mixes[n] for n in cfg.strategies},
        "rounds": cfg.rounds,
        "batch": cfg.batch,
        "initial": cfg.initial,
        "seeds": cfg.seeds,
        "test_fraction": cfg.test_fraction,
        "preset": cfg.preset,
        "model": cfg.model_cfg.to_dict(),
        "feature_epochs": cfg.feature_epochs,
        "head_epochs": cfg.head_epochs,
        "head_lr": cfg.head_lr,
        "head_batch": cfg.head_batch,
        "mc_samples": cfg.mc_samples,
        "use_embeddings": cfg.use_embeddings,
        "seconds": round(seconds, 2),
        "seconds_per_seed": seed_seconds,
        "notes": notes,
    }
