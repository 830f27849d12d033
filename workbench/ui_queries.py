"""Read-only views the Streamlit pages need, so that no page holds SQL.

Every function takes an Engine, reads in one short session and returns plain dataclasses or dicts
(never ORM rows bound to a session). Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.db.engine import session_scope
from workbench.db.models import (
    Calibration,
    Case,
    Evaluation,
    Label,
    ModelVersion,
    Prediction,
    Round,
)
from workbench.errors import NotFoundError, WorkbenchError

# A round whose batch is being labelled; "labelling" is what workbench.rounds sets when the queue is built.
LABELLING_STATUSES = ("labelling", "open")


@dataclass(frozen=True)
class CaseContext:
    """What the model says about one case: raw and calibrated probability, threshold, uncertainty.

    ``version_id`` is None when no model version has scored the case yet (``note`` says so).
    """

    version_id: int | None
    probability: float | None = None
    calibrated: float | None = None
    calibration_method: str | None = None
    threshold: float | None = None
    threshold_policy: str | None = None
    uncertainty: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class RoundView:
    """One active-learning round as the pages show it."""

    id: int
    number: int
    status: str
    model_version_id: int | None
    threshold: float | None
    batch_size: int | None
    report: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class VersionRow:
    """A model version with everything the Models page lists."""

    id: int
    status: str
    parent_id: int | None
    round_number: int | None
    preset: str
    backbone: str
    data_counts: dict[str, Any] | None
    test: dict[str, Any] | None  # the test-split evaluation report (calibrated, at the threshold)
    calibration_method: str | None
    threshold: float | None
    threshold_policy: str | None
    promoted: bool
    created_by: str
    created_at: datetime
    error: str | None


@dataclass(frozen=True)
class CalibratedVersion:
    """A version that has stored calibrations: its methods and the selected one."""

    id: int
    methods: list[str]
    selected: str | None
    threshold: float | None
    threshold_policy: str | None


@dataclass(frozen=True)
class ThresholdView:
    """A version's operating point and the card's threshold sweep on each evaluated split."""

    version_id: int
    threshold: float | None
    policy: str | None
    method: str | None
    chosen_on: dict[str, Any] | None
    test: dict[str, Any] | None
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> report dict


def _round_view(r: Round) -> RoundView:
    return RoundView(
        id=r.id,
        number=r.number,
        status=r.status,
        model_version_id=r.model_version_id,
        threshold=r.threshold,
        batch_size=r.batch_size,
        report=dict(r.report) if r.report else None,
        created_at=r.created_at,
    )


def current_round(engine: Engine) -> RoundView | None:
    """The round being labelled (the latest in a labelling status), else the latest round; None if none."""
    with session_scope(engine) as s:
        r = s.scalar(
            select(Round).where(Round.status.in_(LABELLING_STATUSES)).order_by(Round.number.desc()).limit(1)
        )
        if r is None:
            r = s.scalar(select(Round).order_by(Round.number.desc()).limit(1))
        return None if r is None else _round_view(r)


def list_rounds(engine: Engine) -> list[RoundView]:
    """All rounds, oldest first."""
    with session_scope(engine) as s:
        return [_round_view(r) for r in s.scalars(select(Round).order_by(Round.number))]


def case_context(engine: Engine, case_id: int, round_id: int | None = None) -> CaseContext:
    """The model's view of a case: the round's version (else the latest round's, else the newest
    ready version that scored it), its raw and calibrated probability, threshold and uncertainty."""
    from workbench.calibration.service import calibrated_probabilities

    with session_scope(engine) as s:
        version_id = None
        round_threshold = None
        if round_id is not None:
            rnd = s.get(Round, round_id)
            if rnd is not None:
                version_id, round_threshold = rnd.model_version_id, rnd.threshold
        if version_id is None:
            row = s.execute(
                select(Round.model_version_id, Round.threshold)
                .where(Round.model_version_id.is_not(None))
                .order_by(Round.number.desc())
                .limit(1)
            ).first()
            if row is not None:
                version_id, round_threshold = row
        if version_id is None:
            version_id = s.scalar(
                select(ModelVersion.id)
                .join(Prediction, Prediction.model_version_id == ModelVersion.id)
                .where(ModelVersion.status == "ready", Prediction.case_id == case_id)
                .order_by(ModelVersion.id.desc())
                .limit(1)
            )
        if version_id is None:
            return CaseContext(None, note="no model version has scored this case yet")
        version = s.get(ModelVersion, version_id)
        if version is None:
            return CaseContext(None, note=f"model version {version_id} no longer exists")
        pred = s.scalar(
            select(Prediction).where(Prediction.model_version_id == version_id, Prediction.case_id == case_id)
        )
        cal = s.get(Calibration, version.calibration_id) if version.calibration_id else None
        threshold = version.threshold if version.threshold is not None else round_threshold
        policy, method = version.threshold_policy, (cal.method if cal else None)
        if pred is None:
            return CaseContext(
                version_id,
                calibration_method=method,
                threshold=threshold,
                threshold_policy=policy,
                note=f"model version {version_id} has no prediction for this case",
            )
        raw, unc = float(pred.probability), pred.uncertainty
        raw_logit = float(pred.logit)
    calibrated = float(calibrated_probabilities(engine, version_id, np.array([raw_logit]))[0])
    return CaseContext(
        version_id,
        probability=raw,
        calibrated=calibrated,
        calibration_method=method,
        threshold=threshold,
        threshold_policy=policy,
        uncertainty=None if unc is None else float(unc),
    )


def version_rows(engine: Engine) -> list[VersionRow]:
    """Every model version, newest first, with round, calibration, threshold and test report."""
    from workbench.export.promotion import current_best

    best = current_best(engine)
    with session_scope(engine) as s:
        versions = list(s.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))
        rounds = dict(s.execute(select(Round.id, Round.number)).all())
        methods = dict(s.execute(select(Calibration.id, Calibration.method)).all())
        tests: dict[int, Evaluation] = {}
        for ev in s.scalars(select(Evaluation).where(Evaluation.split == "test").order_by(Evaluation.id)):
            tests[ev.model_version_id] = ev  # latest wins
        out = []
        for v in versions:
            method = methods.get(v.calibration_id) if v.calibration_id else None
            ev = tests.get(v.id)
            if ev is not None and method is not None and ev.method != method:
                ev = (
                    s.scalar(
                        select(Evaluation).where(
                            Evaluation.model_version_id == v.id,
                            Evaluation.split == "test",
                            Evaluation.method == method,
                        )
                    )
                    or ev
                )
            out.append(
                VersionRow(
                    id=v.id,
                    status=v.status,
                    parent_id=v.parent_id,
                    round_number=rounds.get(v.round_id) if v.round_id else None,
                    preset=v.preset,
                    backbone=v.backbone,
                    data_counts=dict(v.data_counts) if v.data_counts else None,
                    test=dict(ev.report, method=ev.method) if ev is not None else None,
                    calibration_method=method,
                    threshold=v.threshold,
                    threshold_policy=v.threshold_policy,
                    promoted=v.id == best,
                    created_by=v.created_by,
                    created_at=v.created_at,
                    error=v.error,
                )
            )
        return out


def ready_versions(engine: Engine) -> list[int]:
    """Ids of ready versions, newest first (choices for fine-tuning, inference, calibration)."""
    with session_scope(engine) as s:
        return list(
            s.scalars(
                select(ModelVersion.id).where(ModelVersion.status == "ready").order_by(ModelVersion.id.desc())
            )
        )


def calibrated_versions(engine: Engine) -> list[CalibratedVersion]:
    """Versions with stored calibrations, newest first."""
    with session_scope(engine) as s:
        rows = s.execute(
            select(Calibration.model_version_id, Calibration.id, Calibration.method).order_by(
                Calibration.model_version_id.desc(), Calibration.id
            )
        ).all()
        by_version: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for vid, cid, method in rows:
            by_version[vid].append((cid, method))
        out = []
        for vid, cals in by_version.items():
            v = s.get(ModelVersion, vid)
            if v is None:
                continue
            selected = next((m for cid, m in cals if cid == v.calibration_id), None)
            out.append(
                CalibratedVersion(vid, [m for _, m in cals], selected, v.threshold, v.threshold_policy)
            )
        return out


def calibration_rows(
    engine: Engine, version_ids: list[int], methods: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row per (version, method, split) from the stored ``Calibration.metrics`` (see
    :func:`workbench.calibration.views.calibration_readings`: ECE, Brier, NLL, slope, intercept, ...)."""
    from workbench.calibration.views import calibration_readings

    return calibration_readings(engine, version_ids, methods)


def paired_predictions(
    engine: Engine, a: tuple[int, str], b: tuple[int, str], split: str = "test"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and the two calibrated probability vectors of ``(version, method)`` a and b on the SAME
    labelled cases of ``split`` (the cases both versions scored), for a paired comparison."""
    from workbench.calibration.calibrators import calibrator_from_json
    from workbench.model.predictions import load_predictions

    prepared = []
    for vid, method in (a, b):
        with session_scope(engine) as s:
            cal = s.scalar(
                select(Calibration).where(Calibration.model_version_id == vid, Calibration.method == method)
            )
            if cal is None:
                raise NotFoundError(f"model version {vid} has no {method} calibration")
            params = dict(cal.params)
        preds = load_predictions(engine, vid, split).labelled()
        p = calibrator_from_json(params).transform(preds.logit)
        prepared.append(
            dict(zip(preds.case_ids.tolist(), zip(p.tolist(), preds.y.tolist(), strict=True), strict=True))
        )
    common = sorted(set(prepared[0]) & set(prepared[1]))
    if not common:
        raise WorkbenchError(
            f"versions {a[0]} and {b[0]} have no labelled {split} cases in common: nothing to compare"
        )
    y = np.array([prepared[0][c][1] for c in common], dtype=np.int64)
    p_a = np.array([prepared[0][c][0] for c in common], dtype=np.float64)
    p_b = np.array([prepared[1][c][0] for c in common], dtype=np.float64)
    return y, p_a, p_b


def threshold_view(engine: Engine, version_id: int) -> ThresholdView:
    """A version's chosen operating point and its stored evaluations (with the threshold sweep)."""
    with session_scope(engine) as s:
        v = s.get(ModelVersion, version_id)
        if v is None:
            raise NotFoundError(f"no model version {version_id}")
        report = dict(v.threshold_report or {})
        method = report.get("method")
        evals: dict[str, dict[str, Any]] = {}
        q = select(Evaluation).where(Evaluation.model_version_id == version_id).order_by(Evaluation.id)
        for ev in s.scalars(q):
            if method is None or ev.method == method or ev.split not in evals:
                evals[ev.split] = dict(ev.report, method=ev.method)
        return ThresholdView(
            version_id=version_id,
            threshold=v.threshold,
            policy=v.threshold_policy,
            method=method,
            chosen_on=report.get("chosen_on"),
            test=report.get("test"),
            evaluations=evals,
        )


def label_history(engine: Engine) -> list[dict[str, Any]]:
    """Labelled vs pool and class balance after each round (round 0: before any round).

    Replays the append-only label log: after round r a case's label is its latest label from the
    import or from rounds up to r; rows are ``{round, labelled, positive, negative, pool_unlabelled}``.
    """
    with session_scope(engine) as s:
        numbers = dict(s.execute(select(Round.id, Round.number)).all())
        splits = dict(s.execute(select(Case.id, Case.split)).all())
        labels = s.execute(select(Label.case_id, Label.value, Label.round_id).order_by(Label.id)).all()
    round_numbers = sorted(set(numbers.values()))
    out = []
    for r in [0, *round_numbers]:
        latest: dict[int, int | None] = {}
        for case_id, value, rid in labels:
            n = numbers.get(rid, 0) if rid is not None else 0
            if n <= r:
                latest[case_id] = value
        pos = sum(1 for v in latest.values() if v == 1)
        neg = sum(1 for v in latest.values() if v == 0)
        pool_unlabelled = sum(1 for cid, sp in splits.items() if sp == "pool" and latest.get(cid) is None)
        out.append(
            {
                "round": r,
                "labelled": pos + neg,
                "positive": pos,
                "negative": neg,
                "pool_unlabelled": pool_unlabelled,
            }
        )
    return out


def versions_scoring_split(engine: Engine, split: str) -> list[int]:
    """Versions with stored predictions on cases of ``split``, newest first (choices for a comparison)."""
    with session_scope(engine) as s:
        return list(
            s.scalars(
                select(Prediction.model_version_id)
                .join(Case, Case.id == Prediction.case_id)
                .where(Case.split == split)
                .distinct()
                .order_by(Prediction.model_version_id.desc())
            )
        )


def version_comparison(engine: Engine, version_id: int, other_id: int, split: str = "test") -> dict[str, Any]:
    """Paired DeLong AUROC comparison of two versions on the labelled ``split`` cases both scored.

    Read-only: see :func:`workbench.model.evaluate.compare_versions` (raw logits, inner join on case ids).
    """
    from workbench.model.evaluate import compare_versions

    return compare_versions(engine, version_id, other_id, split)


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
