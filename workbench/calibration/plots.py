"""Reliability diagram shared by the UI and the CLI: several labelled curves overlaid, with Wilson bands,
and the per-bin case counts underneath (a point backed by 3 cases should look like it)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.evaluation.report_plot import save_figure


def _arr(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _legend_label(label: str, curve: dict[str, Any]) -> str:
    bits = []
    if curve.get("split"):
        bits.append(str(curve["split"]))
    if curve.get("n") is not None:
        bits.append(f"n={curve['n']}")
    if curve.get("positives") is not None:
        bits.append(f"{curve['positives']} positive")
    return f"{label} ({', '.join(bits)})" if bits else label


def plot_reliability(
    curves: list[tuple[str, dict[str, Any]]], path: str | os.PathLike[str] | None = None
) -> Any:
    """Overlay reliability curves (from :func:`~workbench.calibration.reliability.reliability_curve`).

    Each curve is drawn as mean predicted vs observed frequency with its Wilson band; the lower panel shows
    the bin counts as steps. Returns the matplotlib ``Figure``; also writes a PNG when ``path`` is given.
    """
    from matplotlib.figure import Figure

    if not curves:
        raise ValidationError("plot_reliability needs at least one (label, curve) pair")
    fig = Figure(figsize=(6.4, 7.2))
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    for i, (label, curve) in enumerate(curves):
        try:
            x = _arr(curve["mean_predicted"])
            obs = _arr(curve["observed"])
            lo = _arr(curve["wilson_low"])
            hi = _arr(curve["wilson_high"])
            edges = np.asarray(curve["edges"], dtype=np.float64)
            counts = np.asarray(curve["counts"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"curve {label!r} is not a reliability curve dict: {exc}") from exc
        color = f"C{i % 10}"
        keep = np.isfinite(x) & np.isfinite(obs)
        order = np.argsort(x[keep])
        xs, ys = x[keep][order], obs[keep][order]
        ax.fill_between(xs, lo[keep][order], hi[keep][order], color=color, alpha=0.15, lw=0)
        ax.plot(xs, ys, marker="o", ms=4, color=color, label=_legend_label(label, curve))
        ax_hist.stairs(counts, edges, color=color, lw=1.4, label=label)
    ax.set(ylabel="Observed positive frequency", title="Reliability (bands: Wilson 95% per bin)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize="small")
    ax_hist.set(xlabel="Mean predicted probability", ylabel="Cases per bin")
    ax_hist.set_yscale("symlog", linthresh=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
