"""The pair sanity check as the Data page shows it: cases per pair status and the flagged pairs.

Read-only: plain dataclasses and dicts out (see :mod:`workbench.data.pair_check`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine


@dataclass(frozen=True)
class PairCheckView:
    """The pair sanity check for the Data page: cases per pair status and the flagged pairs."""

    counts: dict[str, int]
    #: suspect and rejected pairs, most suspect first: case, split, status, score, reason, evaluation flag
    flagged: list[dict[str, Any]]
    #: evaluation split -> number of its cases whose pair is suspect or rejected (their metrics include them)
    evaluation_flagged: dict[str, int]


def pair_check_view(engine: Engine) -> PairCheckView:
    """Counts per pair status and the suspect/rejected pairs (see :mod:`workbench.data.pair_check`)."""
    from workbench.data.pair_check import EXCLUDED_FROM_TRAINING, flagged_pairs, pair_status_counts

    rows = flagged_pairs(engine, EXCLUDED_FROM_TRAINING)
    evaluation: dict[str, int] = defaultdict(int)
    flagged = []
    for r in rows:
        in_eval = r.split in ("val", "test")
        if in_eval:
            evaluation[r.split] += 1
        flagged.append(
            {
                "case": r.external_id,
                "case_id": r.case_id,
                "split": r.split,
                "status": r.status,
                "score": None if r.score is None else round(r.score, 2),
                "reason": r.reason,
                "evaluation split": in_eval,
            }
        )
    return PairCheckView(pair_status_counts(engine), flagged, dict(evaluation))
