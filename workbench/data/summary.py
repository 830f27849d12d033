"""Counts of cases per split and current label, for the CLI, the UI and reports."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.models import Case

SPLIT_ORDER = ("train", "val", "test", "pool")
CLASS_NAMES = {0: "negative", 1: "positive", None: "unlabelled"}


def split_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """``{split: {negative, positive, unlabelled, total}}`` using each case's current label."""
    cur = latest_label_subquery()
    out = {s: {"negative": 0, "positive": 0, "unlabelled": 0, "total": 0} for s in SPLIT_ORDER}
    with session_scope(engine) as session:
        rows = session.execute(
            select(Case.split, cur.c.value, func.count())
            .outerjoin(cur, cur.c.case_id == Case.id)
            .group_by(Case.split, cur.c.value)
        )
        for split, value, n in rows:
            out[split][CLASS_NAMES[value]] += n
            out[split]["total"] += n
    return out


def format_split_counts(counts: dict[str, dict[str, int]]) -> str:
    """A small fixed-width table of split counts ("unlabelled" includes cases marked unsure)."""
    lines = [f"{'split':<6} {'total':>7} {'negative':>9} {'positive':>9} {'unlabelled':>11}"]
    for split in SPLIT_ORDER:
        c = counts.get(split, {})
        lines.append(
            f"{split:<6} {c.get('total', 0):>7} {c.get('negative', 0):>9} {c.get('positive', 0):>9} "
            f"{c.get('unlabelled', 0):>11}"
        )
    total = {
        k: sum(counts.get(s, {}).get(k, 0) for s in SPLIT_ORDER)
        for k in ("total", "negative", "positive", "unlabelled")
    }
    lines.append(
        f"{'all':<6} {total['total']:>7} {total['negative']:>9} {total['positive']:>9} {total['unlabelled']:>11}"
    )
    return "\n".join(lines)
