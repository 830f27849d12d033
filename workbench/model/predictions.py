"""Stored predictions: bulk writes from inference, and reads joined with current labels and splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, select

from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.models import Case, Prediction, utcnow


@dataclass
class PredictionSet:
    """Predictions of one version on one split, aligned arrays (labels NaN-free only when ``labelled``)."""

    split: str
    case_ids: np.ndarray
    logit: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    label: np.ndarray  # float: 0, 1, or NaN when unlabelled / unsure
    mutual_information: np.ndarray | None = None  # BALD, bits; NaN where no MC passes ran

    @property
    def n(self) -> int:
        return int(self.case_ids.shape[0])

    def labelled(self) -> PredictionSet:
        """Only the cases with a 0/1 label."""
        keep = ~np.isnan(self.label)
        return PredictionSet(
            self.split,
            self.case_ids[keep],
            self.logit[keep],
            self.probability[keep],
            self.uncertainty[keep],
            self.label[keep],
            None if self.mutual_information is None else self.mutual_information[keep],
        )

    @property
    def y(self) -> np.ndarray:
        return self.label.astype(np.int64)


def write_predictions(
    engine: Engine,
    version_id: int,
    case_ids: list[int],
    logit: np.ndarray,
    probability: np.ndarray,
    uncertainty: np.ndarray | None,
    mutual_information: np.ndarray | None = None,
) -> int:
    """Bulk-insert one batch of predictions (one statement per batch); returns the rows given.

    Written once per (version, case): a case already scored (by an earlier attempt of a shard whose
    worker was lost after the write, or by a duplicate delivery) keeps its first row."""
    if not case_ids:
        return 0
    now = utcnow()
    rows = [
        {
            "model_version_id": version_id,
            "case_id": int(cid),
            "logit": float(logit[i]),
            "probability": float(probability[i]),
            "uncertainty": None if uncertainty is None else float(uncertainty[i]),
            "mutual_information": None if mutual_information is None else float(mutual_information[i]),
            "created_at": now,
        }
        for i, cid in enumerate(case_ids)
    ]
    with session_scope(engine) as s:
        stmt = _insert_once(s.get_bind().dialect.name)
        s.execute(stmt, rows)
    return len(rows)


def _insert_once(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (version, case) DO NOTHING in the database's own dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(Prediction).on_conflict_do_nothing(index_elements=["model_version_id", "case_id"])
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(Prediction).on_conflict_do_nothing(
            index_elements=["model_version_id", "case_id"]
        )
    return insert(Prediction)


def scored_case_ids(engine: Engine, version_id: int) -> set[int]:
    """Cases this version has already scored (inference resumes after them)."""
    with session_scope(engine) as s:
        return set(s.scalars(select(Prediction.case_id).where(Prediction.model_version_id == version_id)))


def load_predictions(engine: Engine, version_id: int, split: str) -> PredictionSet:
    """Predictions of a version on a split with each case's current label (NaN when none/unsure)."""
    cur = latest_label_subquery()
    with session_scope(engine) as s:
        rows = s.execute(
            select(
                Prediction.case_id,
                Prediction.logit,
                Prediction.probability,
                Prediction.uncertainty,
                cur.c.value,
                Prediction.mutual_information,
            )
            .join(Case, Case.id == Prediction.case_id)
            .outerjoin(cur, cur.c.case_id == Case.id)
            .where(Prediction.model_version_id == version_id, Case.split == split)
            .order_by(Prediction.case_id)
        ).all()
    if not rows:
        empty = np.zeros(0)
        return PredictionSet(split, np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    arr = list(zip(*rows, strict=True))
    return PredictionSet(
        split=split,
        case_ids=np.asarray(arr[0], dtype=np.int64),
        logit=np.asarray(arr[1], dtype=np.float64),
        probability=np.asarray(arr[2], dtype=np.float64),
        uncertainty=np.asarray([np.nan if u is None else u for u in arr[3]], dtype=np.float64),
        label=np.asarray([np.nan if v is None else v for v in arr[4]], dtype=np.float64),
        mutual_information=np.asarray([np.nan if m is None else m for m in arr[5]], dtype=np.float64),
    )
