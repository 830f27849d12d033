"""The plot of a simulation: positives found and test AUPRC against labels used, one line per strategy
(mean over seeds, shaded min-max), the ``random`` baseline dashed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.experiments.config import BASELINE


def plot_curves(curves: list[dict[str, Any]], strategies: Sequence[str], path: str | os.PathLike) -> Path:
    """Two panels against labels used: positives found and test AUPRC; mean over seeds, shaded min-max."""
    from matplotlib.figure import Figure

    from workbench.evaluation.report_plot import save_figure

    fig = Figure(figsize=(11.0, 4.4))
    ax_pos, ax_ap = fig.subplots(1, 2)
    for i, name in enumerate(strategies):
        rows = [r for r in curves if r["strategy"] == name]
        xs = sorted({r["labels_used"] for r in rows})
        color = f"C{i % 10}"
        for ax, key in ((ax_pos, "positives_found"), (ax_ap, "test_auprc")):
            vals = [
                np.array([np.nan if r[key] is None else r[key] for r in rows if r["labels_used"] == x], float)
                for x in xs
            ]
            mean = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
            low = np.array([np.nanmin(v) if np.isfinite(v).any() else np.nan for v in vals])
            high = np.array([np.nanmax(v) if np.isfinite(v).any() else np.nan for v in vals])
            ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
            ax.plot(
                xs,
                mean,
                marker="o",
                ms=3,
                color=color,
                label=name,
                lw=2.0 if name == BASELINE else 1.6,
                ls="--" if name == BASELINE else "-",
            )
    prevalence = [r["test_positives"] / r["test_n"] for r in curves if r["round"] == 0 and r["test_n"]]
    if prevalence:
        ax_ap.axhline(
            float(np.mean(prevalence)), color="grey", ls=":", lw=1.0, label="chance (test prevalence)"
        )
    seeds = len({r["seed"] for r in curves})
    ax_pos.set(
        xlabel="Labels used",
        ylabel="Positives found (labelled positives)",
        title=f"Positives found (mean of {seeds} seeds, band: min-max)",
    )
    ax_ap.set(xlabel="Labels used", ylabel="Test AUPRC", title="Test AUPRC (fixed test set per seed)")
    ax_ap.set_ylim(0, 1)
    for ax, where in ((ax_pos, "upper left"), (ax_ap, "lower right")):
        ax.grid(alpha=0.3)
        ax.legend(loc=where, fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)
