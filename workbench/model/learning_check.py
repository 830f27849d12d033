"""Did a training run learn anything? A check run at the end of every training run.

A collapsed network (constant output, loss stuck at the prior's entropy) trains "successfully" as far
as Keras is concerned; calibrating and queueing on it would waste expert time. Three criteria, each
reported with its numbers (pure NumPy, deterministic):

(a) **ranking above chance**: validation AUROC with a stratified bootstrap 95% interval (the
    project's ``workbench.evaluation`` helpers, fixed seed); fails when the lower bound is <= 0.5.
    With fewer than ``MIN_CLASS_COUNT`` positives (or negatives) in validation it is *inconclusive*
    and never fails the run on its own.
(b) **outputs vary**: fails when the validation logits are near-constant (standard deviation below
    ``MIN_LOGIT_STD``) or the spread of validation probabilities (max - min) is below
    ``MIN_PROB_SPREAD``: such outputs give no usable threshold, ranking or calibration.
(c) **training loss left the prior**: fails when the training loss at the best epoch (the weights
    that were kept) is at least ``FLAT_LOSS_RATIO`` x the loss of the best *constant* predictor under
    the same loss and imbalance handling: ln 2 with class weights or balanced batches (both make the
    classes weigh the same), H(prevalence) without, and for the class-balanced focal loss
    2 pi (1 - pi) 0.5^gamma ln 2 (the constant minimising it is 0.5). The constant loss is found by
    minimising over constant probabilities, so it is right for any of these modes.

The run is ``did_not_learn`` when any criterion fails, otherwise ``learned``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

LEARNED = "learned"
DID_NOT_LEARN = "did_not_learn"
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"

MIN_CLASS_COUNT = 3  # fewer validation positives (or negatives) than this: AUROC is inconclusive
MIN_LOGIT_STD = 1e-3
MIN_PROB_SPREAD = 1e-3
FLAT_LOSS_RATIO = 0.97
N_BOOT = 1000
BOOT_SEED = 0
LEVEL = 0.95


@dataclass
class Criterion:
    """One criterion: ``status`` is pass, fail or inconclusive; ``detail`` says it with numbers."""

    name: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class LearningCheck:
    """Verdict (``learned`` or ``did_not_learn``), the failed criteria's reasons and what to try."""

    verdict: str
    criteria: list[Criterion]
    reasons: list[str]
    advice: list[str]

    @property
    def learned(self) -> bool:
        return self.verdict == LEARNED

    def criterion(self, name: str) -> Criterion:
        return next(c for c in self.criteria if c.name == name)

    def summary(self) -> str:
        """One line: the verdict, the reasons (or every criterion when it learned) and the advice."""
        if self.learned:
            return "learned: " + "; ".join(c.detail for c in self.criteria)
        text = "did not learn: " + "; ".join(self.reasons)
        if self.advice:
            text += "; try: " + "; ".join(self.advice)
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def constant_predictor_loss(
    prevalence: float, imbalance: str, focal_gamma: float = 2.0, focal_alpha: float | None = None
) -> tuple[float, str]:
    """(loss of the best constant prediction, how it arises) for the training loss of ``imbalance``.

    ``prevalence`` is the training set's fraction of positives. Class weights ("balanced": n / 2n_c)
    and balanced batches make both classes weigh half; focal loss uses Keras's class balancing
    (weight ``alpha`` on positives, ``1 - alpha`` on negatives; alpha = fraction of negatives).
    """
    pi = min(max(float(prevalence), 1e-12), 1.0 - 1e-12)
    p = np.linspace(1e-4, 1.0 - 1e-4, 19999)
    nll_pos, nll_neg = -np.log(p), -np.log1p(-p)
    if imbalance in ("class_weight", "balanced"):
        how = "ln 2: " + ("class weights" if imbalance == "class_weight" else "balanced batches")
        return math.log(2.0), how
    if imbalance == "focal":
        alpha = 1.0 - pi if focal_alpha is None else float(focal_alpha)
        g = float(focal_gamma)
        loss = pi * alpha * (1.0 - p) ** g * nll_pos + (1.0 - pi) * (1.0 - alpha) * p**g * nll_neg
        i = int(np.argmin(loss))
        return float(loss[i]), f"focal loss (gamma {g:g}, alpha {alpha:.3f}) of the constant {p[i]:.2f}"
    entropy = -(pi * math.log(pi) + (1.0 - pi) * math.log(1.0 - pi))
    return entropy, f"H({pi:.3f}): no imbalance handling"


def _training_losses(history: Mapping[str, Mapping[str, Sequence[float]]]) -> list[float]:
    """Per-epoch training losses over the phases, in order (phase1, phase2)."""
    out: list[float] = []
    for phase in sorted(history):
        out.extend(float(v) for v in (history[phase] or {}).get("loss", []))
    return out


def _check_auroc(y: np.ndarray, z: np.ndarray) -> Criterion:
    from workbench.evaluation.bootstrap import bootstrap_interval, point_estimate
    from workbench.evaluation.metrics import auroc_statistic

    pos, neg = int(y.sum()), int(len(y) - y.sum())
    values: dict[str, Any] = {"n": len(y), "positives": pos, "auroc": None, "ci": None}
    if pos < MIN_CLASS_COUNT or neg < MIN_CLASS_COUNT:
        detail = (
            f"validation AUROC inconclusive: {pos} positive and {neg} negative case(s) "
            f"(at least {MIN_CLASS_COUNT} of each are needed to judge ranking)"
        )
        return Criterion("auroc_above_chance", INCONCLUSIVE, detail, values)
    stat = auroc_statistic(y, z)
    auc = point_estimate(stat, len(y))
    ci = bootstrap_interval(y, stat, n_boot=N_BOOT, seed=BOOT_SEED, level=LEVEL)
    values.update(auroc=auc, ci=list(ci) if ci else None)
    if auc is None or ci is None:
        detail = f"validation AUROC inconclusive (undefined; n={len(y)}, {pos} positives)"
        return Criterion("auroc_above_chance", INCONCLUSIVE, detail, values)
    text = f"validation AUROC {auc:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] (n={len(y)}, {pos} positives)"
    if ci[0] <= 0.5:
        return Criterion(
            "auroc_above_chance", FAIL, f"{text}: its 95% interval includes chance (0.5)", values
        )
    return Criterion("auroc_above_chance", PASS, f"{text}: above chance", values)


def _check_spread(z: np.ndarray) -> Criterion:
    std = float(np.std(z))
    prob = _sigmoid(z)
    spread = float(prob.max() - prob.min())
    values = {"logit_std": std, "probability_spread": spread, "probability_mean": float(prob.mean())}
    text = f"validation logit std {std:.2g}, probability spread {spread:.2g} (around {prob.mean():.3f})"
    if std < MIN_LOGIT_STD or spread < MIN_PROB_SPREAD:
        detail = f"{text}: near-constant outputs (std < {MIN_LOGIT_STD:g} or spread < {MIN_PROB_SPREAD:g})"
        return Criterion("outputs_vary", FAIL, detail, values)
    return Criterion("outputs_vary", PASS, text, values)


def _check_loss(
    history: Mapping[str, Mapping[str, Sequence[float]]],
    best_epoch: int | None,
    imbalance: str,
    prevalence: float,
    focal_gamma: float,
    focal_alpha: float | None,
) -> Criterion:
    losses = [v for v in _training_losses(history) if math.isfinite(v)]
    prior, how = constant_predictor_loss(prevalence, imbalance, focal_gamma, focal_alpha)
    values: dict[str, Any] = {"constant_loss": prior, "constant_loss_is": how, "ratio_limit": FLAT_LOSS_RATIO}
    if not losses:
        detail = "training loss inconclusive: no finite training loss was recorded"
        return Criterion("loss_below_prior", INCONCLUSIVE, detail, values)
    all_losses = _training_losses(history)
    at_best = (
        best_epoch is not None
        and 1 <= best_epoch <= len(all_losses)
        and math.isfinite(all_losses[best_epoch - 1])
    )
    loss = all_losses[best_epoch - 1] if at_best else min(losses)  # type: ignore[operator]
    where = f"at the best epoch ({best_epoch})" if at_best else "(lowest epoch)"
    ratio = loss / prior if prior > 0 else float("inf")
    values.update(loss=loss, epoch=best_epoch if at_best else None, ratio=ratio, lowest=min(losses))
    text = f"training loss {where} {loss:.3f} = {ratio:.2f} x the constant predictor's {prior:.3f} ({how})"
    if ratio >= FLAT_LOSS_RATIO:
        return Criterion(
            "loss_below_prior", FAIL, f"{text}: flat at the prior (>= {FLAT_LOSS_RATIO:g} x)", values
        )
    return Criterion("loss_below_prior", PASS, text, values)


def _advice(failed: set[str], positives: int, imbalance: str) -> list[str]:
    tips: list[str] = []
    if failed & {"outputs_vary", "loss_below_prior"}:
        tips.append("train longer (--epochs) or with another learning rate (overrides train.phase1_lr)")
        if imbalance != "balanced":
            tips.append("--imbalance balanced (class-balanced batches)")
        tips.append("check that the images load and differ between cases (the Label page shows them)")
    if "auroc_above_chance" in failed:
        tips.append(
            "check that labels match their cases (a shuffled or inverted label column looks like this)"
        )
        if positives < 20:
            tips.append(f"label more validation positives ({positives} now): the interval is wide")
        tips.append("add labelled training cases")
    return tips


def check_learning(
    y_val: Sequence[int] | np.ndarray,
    val_logits: Sequence[float] | np.ndarray,
    history: Mapping[str, Mapping[str, Sequence[float]]],
    imbalance: str,
    *,
    train_prevalence: float,
    best_epoch: int | None = None,
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
) -> LearningCheck:
    """Judge a finished run from its validation labels and logits and its training history.

    ``history`` is ``TrainResult.history`` (``{"phase1": {"loss": [...], ...}, ...}``);
    ``best_epoch`` (1-based over both phases) picks the epoch whose weights were kept, else the
    lowest training loss is used. ``train_prevalence`` is the training set's positive fraction.
    """
    y = np.asarray(y_val, dtype=float).ravel()
    z = np.asarray(val_logits, dtype=float).ravel()
    if y.shape != z.shape or y.size == 0:
        raise ValueError(f"y_val and val_logits must be non-empty and aligned, got {y.shape} and {z.shape}")
    criteria = [
        _check_auroc(y, z),
        _check_spread(z),
        _check_loss(history, best_epoch, imbalance, train_prevalence, focal_gamma, focal_alpha),
    ]
    failed = [c for c in criteria if c.status == FAIL]
    verdict = DID_NOT_LEARN if failed else LEARNED
    advice = _advice({c.name for c in failed}, int(y.sum()), imbalance) if failed else []
    return LearningCheck(verdict, criteria, [c.detail for c in failed], advice)


def not_ready_message(version_id: int, status: str, error: str | None = None) -> str:
    """Why a version cannot be used (warm-start, inference, calibration, promotion, export)."""
    if status == DID_NOT_LEARN:
        why = (error or "").removeprefix("did not learn: ")
        return f"model version {version_id} did not learn" + (f": {why}" if why else "")
    return f"model version {version_id} is {status}, not ready"
