"""Cold start: the first batch to label when no model exists yet (round 0).

Without a model there are no scores to rank by, and a uniform sample of a pool with rare positives
spends most labels on look-alike negatives. TypiClust (Hacohen et al. 2022, "Active Learning on a
Budget: Opposite Strategies Suit High and Low Budgets") picks cases that are both *typical* (from a
dense region, so the model can generalise from them) and *diverse* (one per region):

1. Label-free features of every unlabelled pool case: the non-learned baseline's hand-written pair
   features (``evaluation.baseline``, cached per pair; nothing in them was fitted to a label),
   standardised so no feature dominates by its units.
2. k-means into ``n`` clusters (one per case to label).
3. In each cluster, the most typical case: highest typicality = 1 / (mean Euclidean distance to its
   ``K`` nearest neighbours in the cluster), ``K = min(TYPICALITY_NEIGHBOURS, cluster size - 1)``.
   Clusters are queued largest first (priority), as TypiClust covers the largest clusters first.

:func:`queue_cold_start` enqueues the picks as ``label`` items (strategy ``cold_start``), each with a
reason naming its cluster and typicality. Only pool cases are considered: validation and test cases
are never queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.active.labelling_queue import OPEN_STATUSES, enqueue
from workbench.active.strategies import Selected
from workbench.config import Settings
from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.models import Case, QueueItem
from workbench.errors import ValidationError

STRATEGY = "cold_start"
#: TypiClust's K: neighbours whose mean distance defines a case's typicality (the paper uses 20).
TYPICALITY_NEIGHBOURS = 20
#: k-means restarts (best inertia kept); the seed makes the clustering reproducible.
KMEANS_INIT = 4


@dataclass(frozen=True)
class TypicalPick:
    """The most typical case of one cluster: its row index, cluster number, size and typicality."""

    index: int
    cluster: int
    cluster_size: int
    typicality: float
    neighbours: int


def typicality(features: np.ndarray, k: int) -> np.ndarray:
    """1 / mean Euclidean distance to each row's ``k`` nearest other rows (inf when ``k`` is 0)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float64)
    if k <= 0:
        return np.full(x.shape[0], np.inf)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)  # column 0: the row itself
    return 1.0 / np.maximum(dist[:, 1:].mean(axis=1), 1e-12)


def typical_picks(features: np.ndarray, n: int, seed: int = 0) -> list[TypicalPick]:
    """TypiClust: k-means of the (standardised) ``features`` into ``n`` clusters and the most typical
    row of each, largest cluster first. Raises ValidationError for ``n`` < 1 or more than the rows."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValidationError(f"features must be a finite N x D matrix, got shape {x.shape}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValidationError(f"the number of cases to pick must be at least 1, got {n!r}")
    if n > x.shape[0]:
        raise ValidationError(f"cannot pick {n} cases from a pool of {x.shape[0]}")
    spread = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    clusters = KMeans(n_clusters=n, n_init=KMEANS_INIT, random_state=seed).fit_predict(x)
    picks = []
    for c in range(n):
        members = np.flatnonzero(clusters == c)
        if members.size == 0:  # k-means on duplicate rows can leave a cluster empty
            continue
        k = min(TYPICALITY_NEIGHBOURS, members.size - 1)
        typ = typicality(x[members], k)
        best = int(np.argmax(typ))
        picks.append(TypicalPick(int(members[best]), c, int(members.size), float(typ[best]), k))
    picks.sort(key=lambda p: (-p.cluster_size, p.cluster))
    return picks


def unlabelled_pool(engine: Engine) -> list[tuple[int, str, str, str, str]]:
    """(id, external id, pre path, post path, pair digest) of pool cases with no 0/1 label and no open
    labelling item, by id."""
    cur = latest_label_subquery()
    with session_scope(engine) as s:
        open_items = select(QueueItem.case_id).where(
            QueueItem.kind == "label", QueueItem.status.in_(OPEN_STATUSES)
        )
        rows = s.execute(
            select(Case.id, Case.external_id, Case.pre_path, Case.post_path, Case.pair_sha256)
            .outerjoin(cur, cur.c.case_id == Case.id)
            .where(Case.split == "pool", cur.c.value.is_(None), Case.id.not_in(open_items))
            .order_by(Case.id)
        ).all()
    return [(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def queue_cold_start(
    engine: Engine, settings: Settings, n: int, seed: int = 0, round_id: int | None = None
) -> dict[str, Any]:
    """Queue ``n`` typical and diverse unlabelled pool cases as ``label`` items (TypiClust), tied to
    ``round_id`` when given; returns counts. Raises ValidationError when the pool is empty, ``n`` < 1 or
    ``n`` exceeds the pool."""
    from workbench.evaluation.baseline import PairRef, features_for

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError(f"the number of cases to queue must be at least 1, got {n!r}")
    pool = unlabelled_pool(engine)
    if not pool:
        raise ValidationError(
            "no unlabelled pool cases to choose from (without an open labelling item): import cases first"
        )
    if n > len(pool):
        raise ValidationError(f"cannot queue {n} cases: the pool holds {len(pool)} unlabelled case(s)")
    features = features_for([PairRef(*row) for row in pool], settings)
    picks = typical_picks(features, n, seed)
    selected = [
        Selected(
            pool[p.index][0],
            STRATEGY,
            p.typicality if np.isfinite(p.typicality) else 0.0,
            f"cold start (TypiClust): most typical of cluster {p.cluster + 1}/{n} ({p.cluster_size} cases), "
            + (
                f"typicality {p.typicality:.3f} = 1 / mean distance to its {p.neighbours} nearest neighbours"
                if p.neighbours
                else "the cluster's only case"
            ),
        )
        for p in picks
    ]
    ids = enqueue(engine, selected, kind="label", round_id=round_id)
    return {
        "queued": len(ids),
        "strategy": STRATEGY,
        "pool_cases": len(pool),
        "clusters": n,
        "features": "baseline (hand-written pair features, label-free)",
    }
