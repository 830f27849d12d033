"""A baseline to beat: a NON-LEARNED pre/post whitening score, and the model's paired comparison with it.

Why: an attention model on a few hundred pairs can look good on paper while learning less than a
hand-written rule would give. Every model evaluation therefore shows, on the same split and the same
cases, what a score built from hand-designed image features reaches, and flags a model that does not
beat it by a clear margin.

The score (nothing about the image features is learned; only a small logistic regression on top):

1. Both images are decoded with :func:`workbench.data.images.load_rgb` at ``WORK_SIZE`` x ``WORK_SIZE``.
2. **Tissue mask**: bright (relative to the central region's bright level), reddish pixels of a central
   disk in BOTH images, minus near-saturated glare (specular highlights) of EITHER image, dilated a little
   so a highlight's halo is excluded too. Dark background, speculum-like dark areas and glare drop out.
3. **Photometric normalisation**: each image's channels are divided by their median over the tissue, so
   exposure, white-balance drift and a uniform stain tint cancel; typical tissue becomes (1, 1, 1).
4. **Whiteness** per pixel: ``log(mean(r, g, b)) + log(mean(g, b) / r)`` on the normalised image, i.e.
   brighter than typical tissue plus paler (less red, less saturated) than typical tissue. Acetowhite
   tissue scores high on both; vessels and the os score low.
5. **Change**: post whiteness (3x3 mean) minus the *maximum* of pre whiteness over a window of about 4.5%
   of the image side (``scipy.ndimage.maximum_filter``), so a small misalignment between the shots, or a
   white spot present in both images, does not look like new whitening.
6. **Summary features** over the tissue: log fractions of tissue above three change levels, the mean of
   the top 1% and top 5% of the change, the log area (fraction of tissue) of the largest connected region
   above two levels, and the mean change.
7. ``StandardScaler`` + ``LogisticRegression(class_weight="balanced")`` fitted on the TRAIN split only
   (adjudicated labels, as training uses); never on validation, test or the pool.

Feature vectors are cached per pair under ``<artifact root>/baseline/v<BASELINE_VERSION>-<size>/``, keyed
by the pair's sha256, written atomically, so a re-evaluation does not decode again.

The comparison (:func:`baseline_section`) evaluates the baseline on exactly the model's cases and labels,
with the same stratified bootstrap resamples (same labels, resample count and seed), and bootstraps the
paired difference model minus baseline for AUROC and AUPRC. A model is FLAGGED when its AUROC is less
than ``FLAG_MARGIN`` above the baseline's, or the paired 95% interval of the difference includes 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from workbench.config import Settings
from workbench.data.images import load_rgb
from workbench.data.labels import latest_label_subquery, training_labels
from workbench.db.engine import session_scope
from workbench.db.models import Case
from workbench.errors import ValidationError, WorkbenchError
from workbench.evaluation.baseline_verdict import DESCRIPTION, FLAG_MARGIN, NAME, flag_verdict
from workbench.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    bootstrap_distribution,
    percentile_interval,
)
from workbench.evaluation.metrics import auroc_statistic, average_precision_statistic, validate_binary
from workbench.evaluation.report import evaluate
from workbench.evaluation.whitening import FEATURE_NAMES, WORK_SIZE, features_from_arrays
from workbench.files import atomic_replace

#: Bumped whenever the features change, so cached vectors of an older definition are never reused.
BASELINE_VERSION = 1


BASELINE_SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------
# Features of one pair (pure: files in, vector out)


def _rgb01(path: str | os.PathLike[str], size: int) -> np.ndarray:
    return load_rgb(Path(path), (size, size)).astype(np.float32) / 255.0


def pair_features(
    pre_path: str | os.PathLike[str], post_path: str | os.PathLike[str], size: int = WORK_SIZE
) -> np.ndarray:
    """Decode a pair at ``size`` x ``size`` and return its feature vector (ValidationError if unreadable)."""
    return features_from_arrays(_rgb01(pre_path, size), _rgb01(post_path, size))


# ------------------------------------------------------------------------------------------------
# Cache (per pair, atomic)


def cache_dir(settings: Settings, size: int = WORK_SIZE) -> Path:
    return Path(settings.artifacts) / "baseline" / f"v{BASELINE_VERSION}-{size}"


def _cache_path(root: Path, pair_sha256: str) -> Path:
    return root / pair_sha256[:2] / f"{pair_sha256}.npy"


def _read_cached(path: Path) -> np.ndarray | None:
    try:
        vec = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return vec if vec.shape == (len(FEATURE_NAMES),) and np.isfinite(vec).all() else None


def _write_cached(path: Path, vec: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, vec, allow_pickle=False)


@dataclass(frozen=True)
class PairRef:
    case_id: int
    external_id: str
    pre_path: str
    post_path: str
    pair_sha256: str


def features_for(
    refs: Sequence[PairRef],
    settings: Settings | None,
    *,
    size: int = WORK_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``(len(refs), n_features)`` feature matrix; cached vectors are reused, new ones are cached.

    ``settings`` None disables the cache. A pair that cannot be decoded raises ValidationError naming
    the case.
    """
    root = cache_dir(settings, size) if settings is not None else None
    out = np.zeros((len(refs), len(FEATURE_NAMES)), dtype=np.float64)
    todo: list[int] = []
    for i, ref in enumerate(refs):
        vec = _read_cached(_cache_path(root, ref.pair_sha256)) if root is not None else None
        if vec is None:
            todo.append(i)
        else:
            out[i] = vec

    def one(i: int) -> tuple[int, np.ndarray]:
        ref = refs[i]
        try:
            vec = pair_features(ref.pre_path, ref.post_path, size)
        except ValidationError as exc:
            raise ValidationError(f"baseline: case {ref.external_id}: {exc}") from None
        if root is not None:
            _write_cached(_cache_path(root, ref.pair_sha256), vec)
        return i, vec

    if todo:
        n_workers = workers or min(4, os.cpu_count() or 1)
        done = 0
        with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
            for i, vec in pool.map(one, todo):
                out[i] = vec
                done += 1
                if progress:
                    progress(done, len(todo))
    return out


# ------------------------------------------------------------------------------------------------
# Fitting on train, scoring any cases


@dataclass
class FittedBaseline:
    """Scaler + logistic regression fitted on the train split; ``fitted_on`` names it with n and positives."""

    scaler: Any
    model: Any
    fitted_on: dict[str, Any]

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.scaler.transform(x))[:, 1].astype(np.float64)


def _check_classes(y: Any, split: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.int64)
    positives = int(y.sum())
    if y.size == 0 or positives == 0 or positives == y.size:
        raise WorkbenchError(
            f"baseline: the {split} split needs labelled positive and negative cases to fit on; "
            f"it has {y.size} labelled ({positives} positive)"
        )
    return y


def fit_features(x: np.ndarray, y: np.ndarray, split: str = "train") -> FittedBaseline:
    """Fit the scaler and the balanced logistic regression; a clear error without both classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y = _check_classes(y, split)
    positives = int(y.sum())
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(class_weight="balanced", C=1.0, max_iter=2000).fit(scaler.transform(x), y)
    return FittedBaseline(scaler, model, {"split": split, "n": int(y.size), "positives": positives})


def case_refs(engine: Engine, case_ids: Sequence[int]) -> list[PairRef]:
    by_id: dict[int, PairRef] = {}
    ids = [int(c) for c in case_ids]
    with session_scope(engine) as s:
        for i in range(0, len(ids), 500):
            for c in s.scalars(select(Case).where(Case.id.in_(ids[i : i + 500]))):
                by_id[c.id] = PairRef(c.id, c.external_id, c.pre_path, c.post_path, c.pair_sha256)
    missing = [c for c in ids if c not in by_id]
    if missing:
        raise WorkbenchError(f"baseline: no case with id {missing[0]}")
    return [by_id[c] for c in ids]


def fit_baseline(
    engine: Engine, settings: Settings | None, splits: Sequence[str] = ("train",), **kw: Any
) -> FittedBaseline:
    """Fit on the labelled cases of ``splits`` (the train split by default; adjudicated labels, as model
    training uses them). Never pass validation or test: they judge the fit."""
    labels = training_labels(engine, splits=tuple(splits))
    ids = sorted(labels)
    y = np.asarray([labels[c] for c in ids], dtype=np.int64)
    named = "+".join(splits)
    if not ids:
        raise WorkbenchError(f"baseline: the {named} split has no labelled cases to fit on")
    _check_classes(y, named)  # before any image is decoded
    x = features_for(case_refs(engine, ids), settings, **kw)
    return fit_features(x, y, split=named)


def score_cases(
    engine: Engine, settings: Settings | None, fitted: FittedBaseline, case_ids: Sequence[int], **kw: Any
) -> np.ndarray:
    return fitted.score(features_for(case_refs(engine, case_ids), settings, **kw))


def labelled_split(engine: Engine, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(case ids, current 0/1 labels) of a split's labelled cases, by id (the evaluation's notion)."""
    cur = latest_label_subquery()
    with session_scope(engine) as s:
        rows = s.execute(
            select(Case.id, cur.c.value)
            .join(cur, cur.c.case_id == Case.id)
            .where(Case.split == split, cur.c.value.is_not(None))
            .order_by(Case.id)
        ).all()
    return (
        np.asarray([r[0] for r in rows], dtype=np.int64),
        np.asarray([r[1] for r in rows], dtype=np.int64),
    )


def check_split(split: str) -> str:
    if split not in BASELINE_SPLITS:
        raise ValidationError(f"split must be one of {', '.join(BASELINE_SPLITS)}, got {split!r}")
    return split


# ------------------------------------------------------------------------------------------------
# Reports


def _estimate_dict(est: Any) -> dict[str, Any]:
    d = est.to_dict()
    return {k: d.get(k) for k in ("value", "low", "high", "reason")}


def _base_report(
    y: np.ndarray, p: np.ndarray, split: str, fitted: FittedBaseline, n_boot: int, seed: int, level: float
) -> dict[str, Any]:
    rep = evaluate(y, p, split=split, threshold=0.5, n_boot=n_boot, seed=seed, level=level)
    out: dict[str, Any] = {
        "name": NAME,
        "version": BASELINE_VERSION,
        "description": DESCRIPTION,
        "work_size": WORK_SIZE,
        "split": split,
        "n": rep.n,
        "positives": rep.positives,
        "negatives": rep.negatives,
        "fitted_on": dict(fitted.fitted_on),
        "auroc": _estimate_dict(rep.auroc),
        "auprc": _estimate_dict(rep.auprc),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "notes": [],
    }
    if split == fitted.fitted_on["split"]:
        out["notes"].append(f"the baseline was fitted on {split}: these numbers are in-sample (optimistic)")
    return out


def evaluate_baseline(
    engine: Engine,
    settings: Settings | None,
    split: str = "test",
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    **kw: Any,
) -> dict[str, Any]:
    """The baseline alone on a split's labelled cases (no model needed): AUROC/AUPRC with intervals."""
    check_split(split)
    ids, y = labelled_split(engine, split)
    if ids.size == 0:
        raise WorkbenchError(f"baseline: split {split} has no labelled cases to evaluate on")
    t0 = time.perf_counter()
    fitted = fit_baseline(engine, settings, **kw)
    p = score_cases(engine, settings, fitted, ids.tolist(), **kw)
    out = _base_report(y, p, split, fitted, n_boot, seed, level)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def paired_difference(
    y: Any,
    p_model: Any,
    p_base: Any,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, Any]]:
    """Model minus baseline AUROC and AUPRC, bootstrapped on the SAME stratified resamples of the cases."""
    y, p_model = validate_binary(y, p_model, what="model")
    _, p_base = validate_binary(y, p_base, what="baseline")
    stats = {
        "auroc": (auroc_statistic(y, p_model), auroc_statistic(y, p_base)),
        "auprc": (average_precision_statistic(y, p_model), average_precision_statistic(y, p_base)),
    }
    deltas = {name: (lambda w, a=a, b=b: a(w) - b(w)) for name, (a, b) in stats.items()}
    boot = bootstrap_distribution(y, deltas, n_boot=n_boot, seed=seed)
    ones = np.ones((1, y.shape[0]))
    out: dict[str, dict[str, Any]] = {}
    for name, (a, b) in stats.items():
        va, vb = float(a(ones)[0]), float(b(ones)[0])
        if not (math.isfinite(va) and math.isfinite(vb)):
            out[name] = {"model": None, "baseline": None, "delta": None, "low": None, "high": None}
            continue
        ci = percentile_interval(boot[name], level)
        out[name] = {
            "model": va,
            "baseline": vb,
            "delta": va - vb,
            "low": ci[0] if ci else None,
            "high": ci[1] if ci else None,
        }
    return out


def baseline_section(
    engine: Engine,
    settings: Settings | None,
    case_ids: Sequence[int],
    y: Any,
    p_model: Any,
    split: str,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    fitted: FittedBaseline | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """The baseline on the model's cases, plus the paired model-minus-baseline comparison and the flag.

    Never raises a WorkbenchError: when the baseline cannot be computed the dict says
    ``{"available": False, "reason": ...}``, so a model evaluation is never lost to it.
    """
    y_arr = np.asarray(y, dtype=np.int64)
    try:
        fitted = fitted or fit_baseline(engine, settings, **kw)
        p_base = score_cases(engine, settings, fitted, [int(c) for c in case_ids], **kw)
    except WorkbenchError as exc:
        return {
            "available": False,
            "reason": str(exc).removeprefix("baseline: "),
            "name": NAME,
            "version": BASELINE_VERSION,
            "split": split,
            "n": int(y_arr.size),
            "positives": int(y_arr.sum()),
        }
    out = {"available": True, **_base_report(y_arr, p_base, split, fitted, n_boot, seed, level)}
    diff = paired_difference(y_arr, p_model, p_base, n_boot=n_boot, seed=seed, level=level)
    flagged, reason = flag_verdict(diff["auroc"])
    out["comparison"] = {
        "what": "model minus baseline, paired on the same cases and bootstrap resamples",
        "margin": FLAG_MARGIN,
        "auroc": diff["auroc"],
        "auprc": diff["auprc"],
        "flagged": flagged,
        "reason": reason,
    }
    return out
