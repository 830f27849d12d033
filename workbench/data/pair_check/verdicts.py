"""A set of pairs, pure (files in, verdicts out): data-relative thresholds for "not the same cervix" and
"probably swapped" (see the package docstring).

Why apart: the statistics need only the files and the patient of each case, so benchmarks run them
without a database.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.data.pair_check.features import (
    _N_COLOUR,
    CHANGE_FEATURES,
    Registration,
    _rgb8,
    band_image,
    change_features,
    register,
)
from workbench.errors import ValidationError

PAIR_CHECK_VERSION = 1
FAULTS = ("swapped", "mismatched")
FAULT_LLR = 1.5
MISMATCH_MAX_Z = -3.0
MIN_PAIRS = 30
MIN_PATIENTS = 5
#: Cases whose thumbnails make the data set's mean thumbnail and the different-patient null pairs.
SAMPLE_SIZE = 300
NULL_PAIRS = 300
FOLDS = 5
_FISHER_CLIP = 0.999
_LLR_CLIP = 50.0


@dataclass(frozen=True)
class PairVerdict:
    """The check's answer for one pair: ``status`` ok/suspect, ``fault`` ("" when ok), score and reason."""

    status: str
    fault: str
    score: float
    reason: str
    similarity: float
    similarity_z: float
    mismatch_llr: float
    swap_llr: float


@dataclass
class PairCheckResult:
    """Verdicts by index of the pairs given (targets only), unreadable pairs and the data set's figures."""

    verdicts: dict[int, PairVerdict] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def _robust(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based SD (falls back to the SD, then to 1, when the MAD is 0)."""
    med = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - med)))
    if spread <= 1e-9:
        spread = float(np.std(values)) or 1.0
    return med, spread


def _fisher(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -_FISHER_CLIP, _FISHER_CLIP))


def _gauss_loglik(z: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return -0.5 * ((z - mean) / sd) ** 2 - math.log(sd)


def _mirror_llr(changes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-fitted log-likelihood ratio mirrored : as observed of each change vector, with the scales and
    the mean weights of the no-intercept logistic regression (for the reasons)."""
    from sklearn.linear_model import LogisticRegression

    scale = np.array([_robust(col)[1] for col in changes.T])
    z = np.clip(changes / scale, -10.0, 10.0)
    n = len(z)
    out = np.zeros(n)
    weights = []
    order = np.random.default_rng(seed).permutation(n)
    folds = min(FOLDS, n)
    for f in range(folds):
        test = np.sort(order[f::folds])
        train = np.setdiff1d(np.arange(n), test)
        x = np.concatenate([z[train], -z[train]])
        y = np.concatenate([np.zeros(len(train)), np.ones(len(train))])
        model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000).fit(x, y)
        out[test] = model.decision_function(z[test])
        weights.append(model.coef_[0])
    return np.clip(out, -_LLR_CLIP, _LLR_CLIP), scale, np.mean(weights, axis=0)


def _map(fn: Callable[[int], Any], items: Sequence[int], workers: int) -> list[Any]:
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def check_pair_files(
    pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    patients: Sequence[str],
    *,
    targets: Sequence[int] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PairCheckResult:
    """Check the pairs at ``targets`` (default: all) against the whole set (see the module docstring).

    ``pairs`` are (pre path, post path), ``patients`` their patient ids (the null pairs combine different
    patients). A pair that cannot be decoded gets an entry in ``errors`` and no verdict. Raises
    ValidationError when fewer than ``MIN_PAIRS`` readable pairs or ``MIN_PATIENTS`` patients remain.
    """
    n = len(pairs)
    if len(patients) != n:
        raise ValidationError(f"got {n} pairs but {len(patients)} patient ids")
    target_set = sorted(set(range(n)) if targets is None else {int(t) for t in targets})
    if target_set and not 0 <= target_set[0] <= target_set[-1] < n:
        raise ValidationError(f"target indices must be in 0..{n - 1}")
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    rng = np.random.default_rng(seed)
    result = PairCheckResult()
    _enough(n, len(set(patients)))

    # Pass 1: band thumbnails of a sample: the data set's mean thumbnail and the null pairs come from it.
    sample = np.sort(rng.choice(n, size=min(n, SAMPLE_SIZE), replace=False))

    def bands(i: int) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
        try:
            return i, band_image(_rgb8(pairs[i][0])), band_image(_rgb8(pairs[i][1])), None
        except ValidationError as exc:
            return i, None, None, str(exc)

    sample_bands: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, pre_b, post_b, err in _map(bands, sample.tolist(), workers):
        if err is not None:
            result.errors[i] = err
        else:
            sample_bands[i] = (pre_b, post_b)
    if not sample_bands:
        raise ValidationError("no pair of the sample could be read")
    mean_band = np.mean([b for pair in sample_bands.values() for b in pair], axis=0).astype(np.float32)

    # Pass 2: every readable pair: similarity, registration and change.
    todo = [i for i in range(n) if i not in result.errors]
    done = {"n": 0}

    def analyse(i: int) -> tuple[int, Registration | None, np.ndarray | None, str | None]:
        try:
            pre8, post8 = _rgb8(pairs[i][0]), _rgb8(pairs[i][1])
            reg = register(band_image(pre8) - mean_band, band_image(post8) - mean_band)
            vec = change_features(pre8, post8, reg)
        except ValidationError as exc:
            return i, None, None, str(exc)
        finally:
            done["n"] += 1
            if progress:
                progress(done["n"], len(todo))
        return i, reg, vec, None

    regs: dict[int, Registration] = {}
    vecs: dict[int, np.ndarray] = {}
    for i, reg, vec, err in _map(analyse, todo, workers):
        if err is not None:
            result.errors[i] = err
        else:
            regs[i], vecs[i] = reg, vec
    good = sorted(regs)
    _enough(len(good), len({patients[i] for i in good}))

    # The null: pre of one patient against post of another, from the sample.
    usable = [i for i in sample.tolist() if i in sample_bands]
    null_pairs: list[tuple[int, int]] = []
    n_null = min(NULL_PAIRS, 3 * len(usable))
    for k in range(n_null * 3):
        if len(null_pairs) >= n_null:
            break
        i = usable[k % len(usable)]
        j = usable[int(rng.integers(len(usable)))]
        if patients[i] != patients[j]:
            null_pairs.append((i, j))
    if len(null_pairs) < 20:
        raise ValidationError(
            "too few pairs of different patients to learn what a mismatched pair looks like"
        )

    def null_sim(p: tuple[int, int]) -> float:
        return register(sample_bands[p[0]][0] - mean_band, sample_bands[p[1]][1] - mean_band).similarity

    null = _fisher(np.asarray(_map(null_sim, null_pairs, workers)))
    sims = np.array([regs[i].similarity for i in good])
    zs = _fisher(sims)
    m_med, m_sd = _robust(zs)
    n_med, n_sd = _robust(null)
    sim_z = (zs - m_med) / m_sd
    mismatch_llr = np.clip(
        _gauss_loglik(zs, n_med, n_sd) - _gauss_loglik(zs, m_med, m_sd), -_LLR_CLIP, _LLR_CLIP
    )
    changes = np.stack([vecs[i] for i in good])
    mirror_score, scale, weights = _mirror_llr(changes, seed)
    t_med, t_sd = _robust(mirror_score)
    # Sound pairs ~ N(t_med, t_sd), swapped ones the mirror; no learned direction (t_med >= 0): no flags.
    swap_llr = np.clip(-2.0 * mirror_score * min(t_med, 0.0) / t_sd**2, -_LLR_CLIP, _LLR_CLIP)
    typical = np.median(changes, axis=0)
    result.stats = {
        "version": PAIR_CHECK_VERSION,
        "pairs": len(good),
        "patients": len({patients[i] for i in good}),
        "similarity_median": float(np.tanh(m_med)),
        "null_similarity_median": float(np.tanh(n_med)),
        "null_pairs": len(null_pairs),
        "separation_z": float((m_med - n_med) / m_sd),
        "swap_separation": float(-t_med / t_sd),
        "unreadable": len(result.errors),
    }
    ctx = _Context(float(np.tanh(m_med)), float(np.tanh(n_med)), typical, scale, weights)
    position = {i: k for k, i in enumerate(good)}
    for i in target_set:
        k = position.get(i)
        if k is None:
            continue
        result.verdicts[i] = _verdict(
            float(sims[k]), float(sim_z[k]), float(mismatch_llr[k]), float(swap_llr[k]), changes[k], ctx
        )
    return result


def _enough(pairs: int, patients: int) -> None:
    if pairs < MIN_PAIRS or patients < MIN_PATIENTS:
        raise ValidationError(
            f"{pairs} readable pair(s) of {patients} patient(s): the check needs at least {MIN_PAIRS} "
            "pairs of "
            f"{MIN_PATIENTS} patients to know what a typical pair of this data set looks like"
        )


@dataclass(frozen=True)
class _Context:
    similarity_median: float
    null_median: float
    typical: np.ndarray
    scale: np.ndarray
    weights: np.ndarray


def _verdict(
    sim: float, z: float, m_llr: float, s_llr: float, change: np.ndarray, ctx: _Context
) -> PairVerdict:
    """Decide one pair and say why, in words a reviewer can check against the images."""
    base = dict(similarity=sim, similarity_z=z, mismatch_llr=m_llr, swap_llr=s_llr)
    if m_llr >= FAULT_LLR and z <= MISMATCH_MAX_Z:
        reason = (
            f"not the same cervix: structural similarity {sim:.2f} is {-z:.1f} robust SDs below this data "
            f"set's median {ctx.similarity_median:.2f} and nearer pairs of different patients (median "
            f"{ctx.null_median:.2f}); log-likelihood ratio {m_llr:.1f} >= {FAULT_LLR}"
        )
        return PairVerdict("suspect", "mismatched", m_llr, reason, **base)
    if s_llr >= FAULT_LLR:
        reason = (
            "probably swapped: the pre-to-post change runs against this data set's "
            f"({_direction(change, ctx)}); log-likelihood ratio {s_llr:.1f} >= {FAULT_LLR}"
        )
        return PairVerdict("suspect", "swapped", s_llr, reason, **base)
    reason = (
        f"ok: structural similarity {sim:.2f} (data set median {ctx.similarity_median:.2f}, robust z "
        f"{z:+.1f}); pre-to-post change consistent with the data set's (swap log-likelihood ratio "
        f"{s_llr:+.1f})"
    )
    return PairVerdict("ok", "", max(m_llr, s_llr), reason, **base)


def _direction(change: np.ndarray, ctx: _Context) -> str:
    """The evidence behind a swap verdict: colour shift and new whitening, against their typical values."""
    contrib = ctx.weights * np.clip(change / ctx.scale, -10, 10)  # > 0 pushes towards "mirrored"
    colour, white = float(contrib[:_N_COLOUR].sum()), float(contrib[_N_COLOUR:].sum())
    parts = []
    top = CHANGE_FEATURES.index("whitening_top3pct_k3")  # top 3% of whiteness gained minus lost
    if white > 0:
        parts.append(
            f"post is less white than pre where they differ: net whitening {change[top]:+.2f}, "
            f"typical {ctx.typical[top]:+.2f}"
        )
    if colour > 0:
        parts.append(
            f"tissue colour moves the other way: log blue/red {change[0]:+.2f}, typical {ctx.typical[0]:+.2f}"
        )
    return "; ".join(parts) or "several weak signs together"
