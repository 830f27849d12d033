"""How a baseline comparison reads: the flag rule (a model must beat the non-learned baseline's AUROC by
``FLAG_MARGIN`` with a paired interval above 0), the baseline's name, and its plain-text lines.

Pure (dicts in, verdicts and text out), so reports, the card, the CLI and the UI read a stored
comparison without the database or the image features.
"""

from __future__ import annotations

from typing import Any

from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
)
from workbench.evaluation.report import split_context

#: The model must beat the baseline's AUROC by at least this much (and with a paired interval above 0).
FLAG_MARGIN = 0.05
NAME = "non-learned whitening baseline"
DESCRIPTION = (
    "hand-designed pre/post whitening-change features (tissue mask, per-channel median normalisation, "
    "post whiteness minus max-filtered pre whiteness) + logistic regression fitted on the train split"
)


def flag_verdict(delta: dict[str, Any], margin: float = FLAG_MARGIN) -> tuple[bool | None, str]:
    """(flagged, reason) from the AUROC difference; flagged None when the comparison is undefined."""
    d, low = delta.get("delta"), delta.get("low")
    if d is None:
        return None, "AUROC is undefined on this split (one class), so the model cannot be compared"
    if d < margin:
        return True, f"model AUROC is only {d:+.3f} above the baseline's (a clear margin is {margin:.2f})"
    if low is None or low <= 0:
        return True, "the paired 95% interval of the AUROC difference includes 0"
    return False, f"model beats the baseline by {d:+.3f} AUROC, paired interval above 0"


# ------------------------------------------------------------------------------------------------
# Text


def _num(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _est(e: dict[str, Any] | None) -> str:
    if not e or e.get("value") is None:
        reason = (e or {}).get("reason")
        return f"undefined ({reason})" if reason else "undefined"
    out = _num(e["value"])
    if e.get("low") is not None and e.get("high") is not None:
        out += f" [{_num(e['low'])}, {_num(e['high'])}]"
    return out


def delta_text(d: dict[str, Any] | None, digits: int = 2, missing: str = "undefined") -> str:
    """A model-minus-baseline difference with its paired interval, e.g. ``+0.12 [+0.05, +0.19]``."""
    if not d or d.get("delta") is None:
        return missing
    out = f"{d['delta']:+.{digits}f}"
    if d.get("low") is not None and d.get("high") is not None:
        out += f" [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"
    return out


def baseline_lines(b: dict[str, Any] | None, bullet: str = "") -> list[str]:
    """Plain-text lines for a baseline dict; every metric line names split, n and positives."""
    if not b:
        return []
    ctx = split_context(b.get("split", "?"), int(b.get("n", 0)), int(b.get("positives", 0)))
    if b.get("available") is False:
        return [f"{bullet}{ctx}: baseline ({NAME}) not available: {b.get('reason')}"]
    pct = int(round(float(b.get("level", DEFAULT_LEVEL)) * 100))
    fit = b.get("fitted_on") or {}
    fit_ctx = split_context(fit.get("split", "train"), int(fit.get("n", 0)), int(fit.get("positives", 0)))
    lines = [
        f"{bullet}{ctx}: Baseline ({NAME}, v{b.get('version')}, fitted on {fit_ctx}) "
        f"AUROC {_est(b.get('auroc'))}, AUPRC {_est(b.get('auprc'))}",
    ]
    cmp = b.get("comparison")
    if cmp:
        lines.append(
            f"{bullet}{ctx}: Model minus baseline (paired, same cases, {pct}% bootstrap): "
            f"AUROC {delta_text(cmp.get('auroc'))}, AUPRC {delta_text(cmp.get('auprc'))}"
        )
        if cmp.get("flagged"):
            lines.append(
                f"{bullet}FLAG {ctx}: the model does NOT clearly beat the baseline: {cmp.get('reason')}"
            )
        elif cmp.get("flagged") is False:
            lines.append(f"{bullet}{ctx}: {cmp.get('reason')}")
        else:
            lines.append(f"{bullet}{ctx}: no comparison: {cmp.get('reason')}")
    for note in b.get("notes") or []:
        lines.append(f"{bullet}{ctx}: note: {note}")
    return lines
