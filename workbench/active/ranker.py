"""Which scorer ranks the pool for the queue: the model version, or the non-learned baseline when it
ranks the validation split better.

A version can pass the learning check and still rank worse than the hand-written baseline
(``evaluation.baseline``): in the replay on hard data a version with a test AUPRC of 0.11 found 3
positives in 20 queries where the baseline-guided rounds around it found 5-7. The queue's slices
(near the threshold, likely positive) are only as useful as the ranking under them, so with
``ranker="auto"`` (the default) the queue compares both scorers on the same labelled validation
cases, by AUPRC (the rare class is what the batch hunts), and ranks the pool by the better one:

- the version's stored validation logits against the baseline fitted on the labelled train/pool
  cases (as ``active.guided`` fits it; never validation or test) and scored on those cases;
- the version keeps the pool when it ties or wins, when the baseline cannot be fitted (fewer than
  ``guided.MIN_PER_CLASS`` labels of a class, or an image it needs no longer decodes) and when
  validation lacks a class (nothing to compare); the result's note says which;
- with the baseline, the pool is scored by it, its threshold is chosen on validation by the version's
  own policy, and every pick's reason says why the baseline ranked it (both AUPRCs, n, positives).

Validation is only compared on (read), never trained on. ``ranker="version"`` skips the comparison
(no image is read); ``"baseline"`` forces the baseline. The pool's baseline features are computed only
when the baseline ranks (they are cached per pair, see ``evaluation.baseline``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine

from workbench.active.guided import TRAINABLE, baseline_candidates, baseline_threshold, can_fit
from workbench.active.strategies import Candidates
from workbench.config import Settings
from workbench.defaults import DEFAULT_RANKER, RANKERS
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class RankerChoice:
    """The scorer that ranks the pool and why; AUPRCs on the same ``n`` validation cases (None when not compared)."""

    ranker: str  # "version" or "baseline"
    asked: str
    note: str
    version_auprc: float | None = None
    baseline_auprc: float | None = None
    n: int = 0
    positives: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reason(self) -> str:
        """The prefix of a baseline pick's reason."""
        return f"baseline ranker ({self.note})"


def compare_on_val(
    y_val: np.ndarray, version_scores: np.ndarray, baseline_scores: np.ndarray
) -> RankerChoice:
    """``auto`` on aligned validation arrays (pure): the baseline only when its AUPRC is strictly higher."""
    from workbench.evaluation.metrics import average_precision

    y = np.asarray(y_val, dtype=np.int64)
    positives = int(y.sum())
    if positives == 0 or positives == y.size:
        return _nothing_to_compare(y)
    v = float(average_precision(y, _ranks(version_scores)))
    b = float(average_precision(y, _ranks(baseline_scores)))
    winner = "baseline" if b > v else "version"
    note = (
        f"val AUPRC baseline {b:.3f} {'>' if b > v else '<='} version {v:.3f}, "
        f"n={y.size}, {positives} positive"
    )
    return RankerChoice(winner, "auto", note, v, b, int(y.size), positives)


def _nothing_to_compare(y: np.ndarray) -> RankerChoice:
    """``auto`` without both classes in validation: the version keeps the pool."""
    positives = int(y.sum())
    return RankerChoice(
        "version",
        "auto",
        f"validation has {y.size} labelled, {positives} positive: nothing to compare on",
        n=int(y.size),
        positives=positives,
    )


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Scores of any scale (logits, probabilities) as ranks in (0, 1), ties kept: AUPRC depends on order only."""
    from scipy.stats import rankdata

    r = rankdata(np.asarray(scores, dtype=np.float64))
    return r / (r.size + 1.0)


@dataclass(frozen=True)
class BaselineRanking:
    """The fitted baseline and the validation rows its threshold is chosen on."""

    fitted: Any
    x_val: np.ndarray
    y_val: np.ndarray

    def candidates(
        self, engine: Engine, settings: Settings, pool_ids: np.ndarray, policy: str
    ) -> tuple[Candidates, str]:
        """The pool ranked by the baseline, with its threshold by ``policy`` and how it was chosen."""
        from workbench.evaluation.baseline import case_refs, features_for

        threshold, note = baseline_threshold(self.fitted, self.x_val, self.y_val, policy)
        x_pool = features_for(case_refs(engine, [int(c) for c in pool_ids]), settings)
        return baseline_candidates(self.fitted, x_pool, pool_ids, threshold), note


def choose_ranker(
    engine: Engine, settings: Settings, version_id: int, asked: str = DEFAULT_RANKER
) -> tuple[RankerChoice, BaselineRanking | None]:
    """The scorer for ``version_id``'s queue (see the module), with the fitted baseline when it ranks.

    Raises WorkbenchError for an unknown ``asked`` and, for ``"baseline"``, when it cannot be fitted.
    """
    from workbench.data.labels import training_labels
    from workbench.evaluation.baseline import case_refs, features_for, fit_features
    from workbench.model.predictions import load_predictions

    if asked not in RANKERS:
        raise WorkbenchError(f"unknown ranker {asked!r}: use one of {', '.join(RANKERS)}")
    if asked == "version":
        return RankerChoice("version", asked, "asked for"), None
    labels = training_labels(engine, splits=TRAINABLE)
    ids = sorted(labels)
    y = np.asarray([labels[c] for c in ids], dtype=np.int64)
    if not can_fit(y):
        why = f"the baseline cannot be fitted: {y.size} labelled train/pool cases, {int(y.sum())} positive"
        if asked == "baseline":
            raise WorkbenchError(why)
        return RankerChoice("version", asked, why), None
    val = load_predictions(engine, version_id, "val").labelled()
    if asked == "auto" and not 0 < int(val.y.sum()) < val.n:  # nothing to compare on: read no image
        return _nothing_to_compare(val.y), None
    try:
        fitted = fit_features(features_for(case_refs(engine, ids), settings), y, split="train+pool")
        x_val = features_for(case_refs(engine, [int(c) for c in val.case_ids]), settings)
    except (WorkbenchError, OSError) as exc:  # e.g. a pair that no longer decodes
        if asked == "baseline":
            raise
        return RankerChoice("version", asked, f"the baseline could not be computed: {exc}"), None
    ranking = BaselineRanking(fitted, x_val, val.y)
    if asked == "baseline":
        return RankerChoice(
            "baseline", asked, f"asked for; fitted on {y.size} labels, {int(y.sum())} positive"
        ), ranking
    choice = compare_on_val(val.y, val.logit, fitted.score(x_val))
    return choice, (ranking if choice.ranker == "baseline" else None)


def ranked_by(queue_report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Who ranked a round's batch, from its report's ``queue`` (a version's queue or the guided batch of
    a round that did not learn), with a one-line ``label`` for tables; None before anything was queued."""
    from workbench.active.cold_start import STRATEGY as COLD_START
    from workbench.active.guided import STRATEGY as GUIDED

    choice = queue_report.get("ranker")
    if choice:
        if choice.get("version_auprc") is not None and choice.get("baseline_auprc") is not None:
            winner, loser = (
                ("baseline", "version") if choice["ranker"] == "baseline" else ("version", "baseline")
            )
            sign = ">" if winner == "baseline" else ">="
            why = f"val AUPRC {choice[f'{winner}_auprc']:.2f} {sign} {loser} {choice[f'{loser}_auprc']:.2f}"
        else:
            why = choice.get("note", "")
        return {**choice, "label": f"{choice['ranker']} ({why})"}
    strategy = queue_report.get("strategy")
    if strategy == GUIDED:
        return {"ranker": GUIDED, "label": "baseline-guided (the version did not learn)"}
    if strategy == COLD_START:
        return {"ranker": COLD_START, "label": "cold start (too few labels of a class)"}
    return None
