"""When a warm-started round refreshes its backbone instead of training the head on frozen features.

A warm-started round trains only the fusion head on the frozen backbone's cached features (or on the
images, when caching does not pay: ``model.features.cache_pays``): fast, but new labels never reach
the backbone. So every so often a round **refreshes** the backbone: phase 1
trains the head on the cached features as usual, then phase 2 fine-tunes the backbone (the preset's
``fine_tune_from_block`` on, batch norm frozen) end to end on the images with augmentation. The
refreshed backbone has other weights, so its features live under another backbone id in the feature
cache (``features.FeatureCache`` keys on a sha256 of the weights): the next rounds compute and use
the new features; the old folder is simply no longer read.

The schedule (``Settings``): refresh when ``backbone_refresh_rounds`` (K) rounds in a row have kept
the backbone frozen, or when the labelled training set has grown by ``backbone_refresh_growth`` (X, a
fraction) since the backbone was last trained, whichever comes first; 0 turns a rule off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine

from workbench.db.engine import session_scope
from workbench.db.models import ModelVersion


@dataclass(frozen=True)
class RefreshDecision:
    """Whether the next round refreshes the backbone, and why (recorded in the round's train step)."""

    refresh: bool
    reason: str
    frozen_rounds: int  # versions since the backbone was last trained (the parent included)
    labels_then: int | None  # labelled training cases when it was last trained (None: unknown)
    labels_now: int
    trained_in: int | None  # the version whose training last changed the backbone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trained_backbone(version: ModelVersion) -> bool:
    """Whether training this version changed its backbone: trained from scratch, or with a fine-tuning
    phase. A warm-started phase-1 run freezes the backbone whether it reads cached features or the
    images (``model.features.cache_pays`` decides which)."""
    train = (version.config or {}).get("train") or {}
    return version.parent_id is None or int(train.get("phases", 1)) >= 2


def _labelled(version: ModelVersion) -> int | None:
    counts = version.data_counts or {}
    if "train" not in counts:
        return None
    return sum(int((counts.get(role) or {}).get("n", 0)) for role in ("train", "tune"))


def refresh_decision(
    engine: Engine, parent_version: int, labels_now: int, every_rounds: int, growth: float
) -> RefreshDecision:
    """Walk up from ``parent_version`` to the version that last trained the backbone and apply the
    schedule (``every_rounds`` K, ``growth`` X; see the module docstring)."""
    frozen, anchor = 0, None
    with session_scope(engine) as s:
        version = s.get(ModelVersion, parent_version)
        while version is not None:
            if trained_backbone(version):
                anchor = version
                break
            frozen += 1
            version = s.get(ModelVersion, version.parent_id) if version.parent_id is not None else None
        labels_then = _labelled(anchor) if anchor is not None else None
        trained_in = anchor.id if anchor is not None else None
    facts = {
        "frozen_rounds": frozen,
        "labels_then": labels_then,
        "labels_now": labels_now,
        "trained_in": trained_in,
    }
    if every_rounds > 0 and frozen + 1 >= every_rounds:
        return RefreshDecision(
            True,
            f"backbone refresh: {frozen} round(s) since version {trained_in} trained the backbone; "
            f"every {every_rounds} rounds (WORKBENCH_BACKBONE_REFRESH_ROUNDS)",
            **facts,
        )
    if growth > 0 and labels_then and labels_now >= labels_then * (1 + growth):
        return RefreshDecision(
            True,
            f"backbone refresh: labelled training cases grew from {labels_then} to {labels_now} "
            f"(+{labels_now / labels_then - 1:.0%} >= {growth:.0%}, WORKBENCH_BACKBONE_REFRESH_GROWTH)",
            **facts,
        )
    return RefreshDecision(
        False,
        f"frozen backbone (head only): {frozen} round(s) since version {trained_in} "
        f"trained it, labels {labels_then} -> {labels_now}",
        **facts,
    )
