"""Relabel candidates: labelled cases whose given label looks wrong, found out of fold.

A version was trained on its labelled cases, so its own (in-sample) scores agree with their labels,
wrong ones included: ranking on them hides label errors. Here every labelled train/pool case gets a
probability from a model that did not see its label: k-fold (stratified by label, grouped by patient
so no patient sits on both sides of a fold) logistic regression on features that exist without
retraining the network, and ``cleanlab``'s confident learning picks and ranks the suspected errors.

Features (``FEATURE_SOURCES``, the first available wins): the non-learned baseline's hand-written pair
features (``evaluation.baseline``, cached per pair), which no label has shaped; else the version's
backbone feature maps pooled per pair (means of pre, post and their change, and the change's maximum;
through the feature cache); else the fused embeddings its inference stored. The network was trained
on these labels, so its features are not fully out of sample: a flipped label it memorised pulls its
case's features towards the wrong class (the head's embedding most; measured in
``bench/bench_relabel.py``). With too few labelled patients of a class for k folds, or no features,
the version's in-sample scores are used and each reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.active.labelling_queue.rules import LABELLABLE_SPLITS
from workbench.calibration.service import calibrated_probabilities
from workbench.config import Settings
from workbench.data.labels import latest_label_subquery
from workbench.db.engine import session_scope
from workbench.db.models import Case, ModelVersion
from workbench.errors import ValidationError, WorkbenchError
from workbench.model.predictions import load_predictions
from workbench.model.scoring import load_embeddings

FOLDS = 5
FEATURE_CHUNK = 512  # pairs whose feature maps are held at once
# Tried in order, the first available wins. Measured in bench/bench_relabel.py (docs/benchmarks.md,
# "relabel"; four hard data sets, 82 flipped labels): the top 20 held 43 flips on the hand-written
# pair features, 35 on backbone + hand-written, 33 on the backbone, 28 on the head's embedding and 32
# for the old in-sample ranking. The hand-written features were fitted to no label at all; the
# network's features were (the embedding most: its out-of-fold AUROC against the truth is the
# highest, yet it finds the fewest flips). Where a trained model clearly beats the baseline
# (``workbench evaluate`` shows both), its backbone may see errors the hand-written features cannot.
FEATURE_SOURCES = ("baseline", "backbone", "embedding")
# Logistic regression on standardised features, strength strong enough that a fold's model cannot
# memorise its few positives (hundreds of feature dimensions, tens of positives). Unweighted, so its
# probabilities keep the base rate, which confident learning's per-class thresholds assume: over four
# bench_relabel data sets and three fold seeds each, the top 20 held 107 flipped labels unweighted
# against 84 with class_weight="balanced".
LOGREG_C = 0.1
# In-sample fallback only: 1 - self-confidence above which a case is suspected.
IN_SAMPLE_MIN_DISAGREEMENT = 0.8


@dataclass(frozen=True)
class LabelledCases:
    """Labelled (0/1 current label) cases of the labellable splits, aligned arrays."""

    case_ids: np.ndarray
    y: np.ndarray
    patients: np.ndarray
    pairs: list[tuple[str, str]]
    digests: list[tuple[str, str]]
    external_ids: list[str]
    pair_digests: list[str]

    @property
    def n(self) -> int:
        return int(self.case_ids.shape[0])


@dataclass(frozen=True)
class Suspect:
    """A suspected label error: the given label, the likely one, P(positive) and the ranking score."""

    case_id: int
    given: int
    p_positive: float
    quality: float  # label quality in [0, 1]: lower is more suspect
    reason: str

    @property
    def likely(self) -> int:
        return 1 - self.given


def name(value: int) -> str:
    return "positive" if value == 1 else "negative"


def labelled_cases(engine: Engine, splits: Sequence[str] = LABELLABLE_SPLITS) -> LabelledCases:
    """Cases of ``splits`` whose current label is 0 or 1 (never validation/test: they are not queued)."""
    cur = latest_label_subquery()
    with session_scope(engine) as s:
        rows = s.execute(
            select(
                Case.id,
                cur.c.value,
                Case.patient_id,
                Case.pre_path,
                Case.post_path,
                Case.pre_sha256,
                Case.post_sha256,
                Case.external_id,
                Case.pair_sha256,
            )
            .join(cur, cur.c.case_id == Case.id)
            .where(Case.split.in_(list(splits)), cur.c.value.is_not(None))
            .order_by(Case.id)
        ).all()
    return LabelledCases(
        case_ids=np.asarray([r[0] for r in rows], dtype=np.int64),
        y=np.asarray([int(r[1]) for r in rows], dtype=np.int64),
        patients=np.asarray([str(r[2]) for r in rows], dtype=object),
        pairs=[(r[3], r[4]) for r in rows],
        digests=[(r[5], r[6]) for r in rows],
        external_ids=[r[7] for r in rows],
        pair_digests=[r[8] for r in rows],
    )


def folds_possible(y: np.ndarray, patients: np.ndarray, folds: int = FOLDS) -> str | None:
    """None when ``folds``-fold cross-fitting is possible; else why not (for the fallback's reason)."""
    for value in (0, 1):
        groups = len(set(patients[y == value]))
        if groups < folds:
            return f"{groups} {name(value)} patient(s) labelled, {folds}-fold needs {folds}"
    return None


def out_of_fold_probabilities(
    x: np.ndarray, y: np.ndarray, patients: np.ndarray | None = None, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """(N, 2) class probabilities, each row from a logistic regression fitted without that case's
    patient: stratified k-fold, grouped by patient when a patient has several labelled cases."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, dtype=np.int64)
    grouped = patients is not None and len(set(patients)) < len(patients)
    if grouped:
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, patients)
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
    out = np.zeros((len(y), 2))
    for train, held in splits:
        if len(set(y[train])) < 2:  # a grouped fold can leave one class out: its prior is all we know
            out[held, 1] = y[train].mean()
        else:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=LOGREG_C, max_iter=2000))
            out[held, 1] = clf.fit(x[train], y[train]).predict_proba(x[held])[:, 1]
    out[:, 0] = 1 - out[:, 1]
    return out


def confident_learning(y: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of suspected label errors, most suspect first; every case's label quality): cleanlab's
    confident learning (``prune_by_noise_rate``) ranked by self-confidence."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    issues = find_label_issues(
        y, pred_probs, filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence"
    )
    quality = get_label_quality_scores(y, pred_probs, method="self_confidence")
    return np.asarray(issues, dtype=np.int64), np.asarray(quality, dtype=np.float64)


def rank_out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    folds: int = FOLDS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(suspected label errors as indices into ``y``, most suspect first; out-of-fold P(positive))."""
    pred_probs = out_of_fold_probabilities(x, y, patients, folds, seed)
    issues, _ = confident_learning(y, pred_probs)
    return issues, pred_probs[:, 1]


def pooled_backbone_features(
    engine: Engine, settings: Settings, version_id: int, cases: LabelledCases
) -> np.ndarray:
    """The version's backbone feature maps pooled per pair: the means of pre, post and their change,
    and the change's maximum (through the feature cache: a cached image costs a file read)."""
    from pathlib import Path

    from workbench.model.config import ModelConfig
    from workbench.model.features import FeatureCache, pair_features
    from workbench.model.registry import load_version_model

    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        model_cfg = ((version.config or {}) if version else {}).get("model")
    if not model_cfg:
        raise LookupError(f"model version {version_id} has no stored model config")
    model = load_version_model(engine, version_id)
    cfg = ModelConfig.from_dict(model_cfg)
    cache = FeatureCache(Path(settings.artifacts) / "features")
    parts = []
    for lo in range(0, cases.n, FEATURE_CHUNK):  # chunks: a large backbone's maps of 10k pairs fill memory
        maps = pair_features(
            model, cfg, cache, cases.pairs[lo : lo + FEATURE_CHUNK], cases.digests[lo : lo + FEATURE_CHUNK]
        )
        pre, post = maps["pre_features"], maps["post_features"]
        change = post - pre  # a lesion is local: its strongest change survives max pooling, not the mean
        parts.append(
            np.concatenate(
                [
                    pre.mean(axis=(1, 2)),
                    post.mean(axis=(1, 2)),
                    change.mean(axis=(1, 2)),
                    change.max(axis=(1, 2)),
                ],
                axis=1,
            )
        )
    return np.concatenate(parts).astype(np.float64)


def stored_embeddings(settings: Settings, version_id: int, cases: LabelledCases) -> np.ndarray:
    """The pooled fused embeddings the version's inference stored for ``cases`` (all of them or an error)."""
    by_case = load_embeddings(settings, version_id)
    missing = [int(c) for c in cases.case_ids if int(c) not in by_case]
    if missing:
        raise LookupError(
            f"{len(missing)} labelled case(s) have no stored embedding (e.g. case {missing[0]})"
        )
    return np.stack([by_case[int(c)] for c in cases.case_ids]).astype(np.float64)


def hand_written_features(settings: Settings, cases: LabelledCases) -> np.ndarray:
    """The non-learned baseline's pair features (``evaluation.baseline``): nothing in them was fitted to
    any label, so a fold's logistic regression is the only thing that saw labels (cached per pair)."""
    from workbench.evaluation.baseline import PairRef, features_for

    refs = [
        PairRef(int(cid), ext, pre, post, pair)
        for cid, ext, (pre, post), pair in zip(
            cases.case_ids, cases.external_ids, cases.pairs, cases.pair_digests, strict=True
        )
    ]
    return features_for(refs, settings)


def case_features(
    engine: Engine,
    settings: Settings,
    version_id: int,
    cases: LabelledCases,
    sources: Sequence[str] = FEATURE_SOURCES,
) -> tuple[np.ndarray, str] | tuple[None, str]:
    """(features, source) from the first of ``sources`` available (a source joins components with "+",
    their features side by side); (None, why none was) otherwise."""
    makers = {
        "backbone": lambda: pooled_backbone_features(engine, settings, version_id, cases),
        "embedding": lambda: stored_embeddings(settings, version_id, cases),
        "baseline": lambda: hand_written_features(settings, cases),
    }
    unknown = [part for source in sources for part in source.split("+") if part not in makers]
    if unknown:
        raise ValidationError(
            f"unknown feature source(s) {unknown} (parts of {', '.join(makers)}, joined by +)"
        )
    why = []
    for source in sources:
        try:
            return np.concatenate([makers[part]() for part in source.split("+")], axis=1), source
        except (LookupError, OSError, WorkbenchError) as exc:  # no config, artifact, embeddings or images
            why.append(f"{source}: {str(exc).splitlines()[0][:160]}")
    return None, "; ".join(why)


SOURCE_NAMES = {
    "backbone": "pooled backbone features",
    "embedding": "stored embeddings",
    "baseline": "hand-written pair features",
}


def source_name(source: str) -> str:
    return " + ".join(SOURCE_NAMES[part] for part in source.split("+"))


def out_of_fold_suspects(
    engine: Engine,
    settings: Settings,
    version_id: int,
    limit: int,
    *,
    sources: Sequence[str] = FEATURE_SOURCES,
    folds: int = FOLDS,
    seed: int = 0,
) -> list[Suspect] | str:
    """Up to ``limit`` suspected label errors among labelled train/pool cases, most suspect first; or
    why out-of-fold ranking is not possible (the caller falls back to in-sample scores)."""
    cases = labelled_cases(engine)
    if cases.n == 0:
        return "no labelled train/pool cases"
    why = folds_possible(cases.y, cases.patients, folds)
    if why is not None:
        return why
    x, source = case_features(engine, settings, version_id, cases, sources)
    if x is None:
        return f"no features for out-of-fold scoring ({source})"
    issues, p_pos = rank_out_of_fold(x, cases.y, cases.patients, folds=folds, seed=seed)
    method = f"{folds}-fold logistic regression on {source_name(source)}, cleanlab self-confidence"
    out = []
    for i in issues[:limit]:
        given = int(cases.y[i])
        quality = float(p_pos[i] if given == 1 else 1 - p_pos[i])
        out.append(
            Suspect(
                int(cases.case_ids[i]),
                given,
                float(p_pos[i]),
                quality,
                f"possible label error: labelled {name(given)}, likely {name(1 - given)}, "
                f"out-of-fold p={p_pos[i]:.2f} ({method})",
            )
        )
    return out


def in_sample_suspects(engine: Engine, version_id: int, limit: int, why: str = "") -> list[Suspect]:
    """Labelled train/pool cases the version's calibrated in-sample scores contradict (disagreement at
    least ``IN_SAMPLE_MIN_DISAGREEMENT``), most suspect first: the fallback, and the old ranking."""
    out: list[Suspect] = []
    note = f"in-sample score: {why}" if why else "in-sample score"
    for split in LABELLABLE_SPLITS:
        preds = load_predictions(engine, version_id, split).labelled()
        if preds.n == 0:
            continue
        prob = calibrated_probabilities(engine, version_id, preds.logit)
        doubt = np.where(preds.y == 1, 1 - prob, prob)  # 1 - self-confidence in the given label
        for i in np.flatnonzero(doubt >= IN_SAMPLE_MIN_DISAGREEMENT):
            given = int(preds.y[i])
            reason = f"possible label error: labelled {name(given)}, model p={prob[i]:.2f} ({note})"
            out.append(Suspect(int(preds.case_ids[i]), given, float(prob[i]), float(1 - doubt[i]), reason))
    out.sort(key=lambda s: s.quality)
    return out[:limit]


def relabel_suspects(
    engine: Engine, settings: Settings, version_id: int, limit: int, **options: Any
) -> list[Suspect]:
    """Out-of-fold suspects when k-fold is possible, else in-sample ones whose reason says why."""
    if limit <= 0:
        return []
    found = out_of_fold_suspects(engine, settings, version_id, limit, **options)
    if isinstance(found, str):
        return in_sample_suspects(engine, version_id, limit, why=found)
    return found
