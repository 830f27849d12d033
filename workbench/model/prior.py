"""The prior shift that imbalance handling puts into a model's logits, recorded so calibration can undo it.

Class weights ``w_c = n / (2 n_c)``, class-balanced batches and Keras's class-balanced focal loss all make
the two classes weigh the same in training, so the model learns the log-odds of a world with prevalence
0.5: its logit is the true log-odds plus ``log(n0 / n1)`` (about 2.2 at 10% prevalence). Subtracting that
analytic offset before calibration gives every method, identity and bias-free temperature scaling
included, the real base rate to start from. For focal loss the offset is exact only at gamma = 0 (the
focusing term also flattens the slope, which calibration fits); with ``imbalance="none"`` it is 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SHIFTING_MODES = ("class_weight", "balanced", "focal")


@dataclass(frozen=True)
class PriorCorrection:
    """The logit offset training introduced, and how it was derived (stored with each version)."""

    offset: float
    imbalance: str
    train_positives: int
    train_negatives: int
    exact: bool
    why: str

    @property
    def train_prevalence(self) -> float:
        total = self.train_positives + self.train_negatives
        return self.train_positives / total if total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_prevalence": self.train_prevalence}


def prior_correction(
    imbalance: str, negatives: int, positives: int, focal_gamma: float = 0.0
) -> PriorCorrection:
    """The offset for training with ``imbalance`` on ``negatives``/``positives`` labelled cases."""
    if imbalance not in SHIFTING_MODES or negatives <= 0 or positives <= 0:
        why = (
            "unweighted training keeps the training prevalence"
            if imbalance not in SHIFTING_MODES
            else "one class is missing: no offset"
        )
        return PriorCorrection(0.0, imbalance, int(positives), int(negatives), True, why)
    offset = math.log(negatives / positives)
    exact = imbalance != "focal" or focal_gamma == 0.0
    why = f"{imbalance} training weighs both classes equally: logit shifted by log({negatives}/{positives})"
    if not exact:
        why += "; focal loss (gamma > 0) also flattens the slope, left to the calibrator"
    return PriorCorrection(offset, imbalance, int(positives), int(negatives), exact, why)


def prior_offset_of(
    config: dict[str, Any] | None, data_counts: dict[str, Any] | None, metrics: dict[str, Any] | None
) -> float:
    """A stored version's offset: the recorded one, else derived from its training config and counts."""
    recorded = ((metrics or {}).get("training") or {}).get("prior_correction")
    if recorded and recorded.get("offset") is not None:
        return float(recorded["offset"])
    train_cfg = (config or {}).get("train") or {}
    counts = (data_counts or {}).get("train") or {}
    if not counts:
        return 0.0
    return prior_correction(
        str(train_cfg.get("imbalance", "none")),
        int(counts.get("negative", 0)),
        int(counts.get("positive", 0)),
        float(train_cfg.get("focal_gamma", 0.0) or 0.0),
    ).offset
