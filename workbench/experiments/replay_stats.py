"""Statistics of a replay a reader can trust: yields against the pool's expected rate and against random's
realised rate, per-seed paired differences with 95% intervals, and the labels a strategy needs to reach
random's final test AUPRC. Every interval says what it is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

BASELINE = "random"
INTERVAL = "95% t-interval over seeds"


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of a t-interval over the values (None bounds with fewer than 2)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), None, None
    m = float(v.mean())
    if v.size < 2:
        return m, None, None
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def _by(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["strategy"], int(r["seed"])), []).append(r)
    for v in out.values():
        v.sort(key=lambda r: int(r["round"]))
    return out


def _labels_to_reach(curve: list[dict[str, Any]], target: float) -> float | None:
    for r in curve:
        if r.get("test_auprc") is not None and r["test_auprc"] >= target:
            return float(r["labels_trained"])
    return None


def summarise_replay(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per strategy: yield (positives per 100 queries), x expected (pool base rate), x random
    (realised, same seed), the paired difference to random, final test AUPRC and the share of random's
    labels needed to reach random's final test AUPRC; each with its interval over seeds."""
    by = _by(rows)
    seeds = sorted({s for _, s in by})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    last = {k: v[-1] for k, v in by.items()}
    out = []
    for name in strategies:
        yields, x_expected, x_random, diff, auprc, share = [], [], [], [], [], []
        reached = 0
        for seed in seeds:
            end = last.get((name, seed))
            base = last.get((BASELINE, seed))
            if end is None or not end["queried"]:
                continue
            y = 100.0 * end["found"] / end["queried"]
            yields.append(y)
            x_expected.append(y / (100.0 * end["pool_base_rate"]))
            if base is not None and base["queried"]:
                y_base = 100.0 * base["found"] / base["queried"]
                diff.append(y - y_base)
                x_random.append(y / y_base if y_base > 0 else float("nan"))
                target = base.get("test_auprc")
                if target is not None:
                    need = _labels_to_reach(by[(name, seed)], target)
                    if need is not None:
                        reached += 1
                        share.append(need / float(base["labels_trained"]))
            if end.get("test_auprc") is not None:
                auprc.append(float(end["test_auprc"]))
        row: dict[str, Any] = {"strategy": name, "seeds": len(yields), "interval": INTERVAL}
        for key, values in (
            ("yield_per_100", yields),
            ("x_expected_rate", x_expected),
            ("x_random_realised", x_random),
            ("diff_vs_random_per_100", diff),
            ("final_test_auprc", auprc),
            ("share_of_random_labels_to_reach_its_auprc", share),
        ):
            m, lo, hi = mean_interval(values)
            row[key], row[f"{key}_low"], row[f"{key}_high"] = m, lo, hi
        row["seeds_reaching_random_auprc"] = reached
        out.append(row)
    return out


def summary_text(summary: Sequence[dict[str, Any]], against: str) -> str:
    """The summary as a Markdown table; brackets are the 95% t-interval over seeds."""

    def cell(row: dict[str, Any], key: str, digits: int = 2) -> str:
        m, lo, hi = row[key], row[f"{key}_low"], row[f"{key}_high"]
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return "-"
        return f"{m:.{digits}f}" + ("" if lo is None else f" [{lo:.{digits}f}, {hi:.{digits}f}]")

    lines = [
        f"Brackets: {INTERVAL}. Yield = positives (by {against}) per 100 queried cases; x expected = yield / "
        "(100 x the pool's base rate at the start); x random = yield / random's realised yield in the same seed; "
        "share = labels trained on when the strategy's test AUPRC first reached random's final one / random's "
        "final labels (seeds that never reached it are left out and counted).",
        "",
        "| strategy | seeds | yield /100 | x expected | x random | diff vs random /100 | final test AUPRC | "
        "share of random's labels | seeds reaching |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['strategy']} | {r['seeds']} | {cell(r, 'yield_per_100', 1)} | {cell(r, 'x_expected_rate')} | "
            f"{cell(r, 'x_random_realised')} | {cell(r, 'diff_vs_random_per_100', 1)} | "
            f"{cell(r, 'final_test_auprc', 3)} | {cell(r, 'share_of_random_labels_to_reach_its_auprc')} | "
            f"{r['seeds_reaching_random_auprc']}/{r['seeds']} |"
        )
    return "\n".join(lines)
