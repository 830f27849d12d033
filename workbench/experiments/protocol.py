"""Simulation mode: replay a fully labelled data set with the pool labels hidden, to measure how fast each
acquisition strategy finds positives and improves test AUPRC compared with random sampling.

No database is involved. The protocol, per seed (every strategy of a seed shares its split, initial
labelled set and feature extractor, so the differences between strategies are due to the strategy only):

1. **Split.** A fixed TEST set (``test_fraction``, default 25%) is dealt by patient and stratified by label
   with :func:`workbench.data.splits.assign_patient_splits`; it is never queried nor trained on. The rest is
   the POOL.
2. **Initial labels.** ``initial`` pool cases drawn at random, stratified by label: ``round(initial x pool
   prevalence)`` positives but at least 2 (and at least 1 negative), as far as the pool allows.
3. **Feature extractor.** The CPU preset's backbone has no pretrained weights, so "frozen backbone" means:
   the full model is trained end to end on the initial labels only (fixed ``feature_epochs``, class
   weights, the preset's pair augmentation, no validation slice: with ~4 positives a validation split would
   be noise), its backbone is frozen, and the backbone features of every image are computed ONCE into a
   :class:`~workbench.model.features.FeatureCache` under ``OUT/features``. A preset with pretrained weights
   (``card``) uses the pretrained backbone as is.
4. **Rounds.** Each round retrains ONLY the fusion head on the cached features of all labelled cases, for a
   fixed number of epochs (Adam, class-weighted BCE, warm-started from the head of step 3, the same seed for
   the same round of every strategy), then predicts the pool and the test set. MC-dropout samples
   (``mc_samples`` replays of the head's dropout, as in inference.py) give the uncertainty and BALD inputs;
   the head's pooled "embedding" feeds the k-center de-duplication of :func:`select_batch`, as queue
   building does. Probabilities are the raw sigmoid outputs (no calibration).
5. **Operating threshold** (what ``near_threshold`` aims at): the prevalence quantile. The prevalence is
   estimated, Laplace-smoothed, from the labels of the uniformly drawn cases only (the initial set and the
   picks of the ``random`` strategy), and the threshold is the probability of the case ranked
   ``ceil(prevalence x pool size)`` over the whole pool (labelled or not): the model flags as many pool cases
   as the pool is expected to hold positives. A max-F1 threshold on the labelled set was not used: the head
   is fitted on those very cases, so its in-sample F1 optimum says little about the pool.
6. **Query.** ``batch`` cases are chosen from the unlabelled pool (``mixed``: DEFAULT_MIX; a single
   strategy: ``{name: 1.0}``; or a custom mix ``"near_threshold=0.6+likely_positive=0.4"``) and their
   labels revealed from the ground truth.

Outputs in OUT: ``curves.csv`` (one row per strategy, seed and round; round 0 is the initial set),
``summary.csv``, ``queries.csv`` (every queried case, which strategy picked it and why), ``curves.png``
(positives found and test AUPRC against labels used; mean over seeds, shaded min-max) and ``simulation.json``
(parameters and timing). ``random`` is always simulated as the baseline.
"""

from __future__ import annotations

import functools
import math
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.active.strategies import Candidates, Selected, select_batch
from workbench.errors import ValidationError
from workbench.experiments.config import (
    BASELINE,
    DEFAULT_FEATURE_EPOCHS,
    DEFAULT_HEAD_BATCH,
    DEFAULT_HEAD_EPOCHS,
    DEFAULT_STRATEGIES,
    SimulationConfig,
    check_config,
)
from workbench.experiments.head import HeadTrainer, fit_predict, silence_tf, train_feature_extractor
from workbench.experiments.oracle import LabelledCase, load_labelled
from workbench.experiments.report import ProgressFn, Records, SimulationResult, write_report
from workbench.experiments.splits import SeedSplit, deal_splits

#: Retrains the head on the labelled case indices for a round and predicts every case.
FitFn = Callable[[np.ndarray, int], dict[str, Any]]


def prevalence_threshold(pool_prob: np.ndarray, prevalence: float) -> float:
    """Probability of the pool case ranked ``ceil(prevalence x n)``: flag as many as are expected positive."""
    p = np.sort(np.asarray(pool_prob, dtype=np.float64))[::-1]
    if p.size == 0:
        return 0.5
    k = min(max(1, math.ceil(prevalence * p.size)), p.size)
    return float(np.clip(p[k - 1], 0.0, 1.0))


@dataclass
class _Progress:
    """Head fits done out of ``total`` (one initial fit per seed, one per strategy and round), reported as a
    fraction with each message."""

    callback: ProgressFn | None
    total: int
    done: int = 0

    def report(self, message: str) -> None:
        """Pass ``message`` on with the fraction of fits done so far."""
        if self.callback is not None:
            self.callback(min(self.done / self.total, 1.0), message)


@dataclass(frozen=True)
class _Data:
    """The replayed data set: its cases, their labels (the oracle's answers) and image pairs."""

    cases: list[LabelledCase]
    y: np.ndarray
    pairs: list[tuple[str, str]]


def simulate(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    strategies: Sequence[str] | str = DEFAULT_STRATEGIES,
    rounds: int = 5,
    batch: int = 20,
    initial: int = 40,
    seeds: Sequence[int] | int = 3,
    *,
    preset: str = "cpu",
    model_overrides: Mapping[str, Any] | None = None,
    feature_epochs: int = DEFAULT_FEATURE_EPOCHS,
    head_epochs: int = DEFAULT_HEAD_EPOCHS,
    head_lr: float | None = None,
    head_batch: int = DEFAULT_HEAD_BATCH,
    test_fraction: float = 0.25,
    mc_samples: int = 10,
    use_embeddings: bool = True,
    imagenet_weights_path: str | None = None,
    progress: ProgressFn | None = None,
) -> SimulationResult:
    """Replay ``dataset`` with the pool labels hidden; write curves, summary, queries and a PNG to ``out``.

    ``strategies``: names of :data:`STRATEGIES`, ``"mixed"`` (DEFAULT_MIX) or custom mixes
    (``"a=0.7+b=0.3"``); ``random`` is added as the baseline when missing. ``seeds``: a list, or a count S
    for seeds 0..S-1. ``model_overrides`` are ModelConfig fields over the preset's (e.g. a smaller
    ``input_size``); ``feature_epochs`` trains the feature extractor end to end, ``head_epochs`` /
    ``head_lr`` (default: the preset's phase-1 rate) / ``head_batch`` retrain the head each round.
    ``progress(fraction, message)`` is called as the work advances. Raises ValidationError for bad inputs.
    """
    started = time.monotonic()
    cfg = check_config(
        rounds=rounds,
        batch=batch,
        initial=initial,
        seeds=seeds,
        strategies=strategies,
        preset=preset,
        model_overrides=model_overrides,
        feature_epochs=feature_epochs,
        head_epochs=head_epochs,
        head_lr=head_lr,
        head_batch=head_batch,
        test_fraction=test_fraction,
        mc_samples=mc_samples,
        use_embeddings=use_embeddings,
    )
    cases, label_source = load_labelled(dataset)
    y_all = np.array([c.label for c in cases], dtype=int)
    splits = deal_splits(
        y_all,
        [c.patient_id for c in cases],
        cfg.seeds,
        initial=cfg.initial,
        rounds=cfg.rounds,
        batch=cfg.batch,
        test_fraction=cfg.test_fraction,
    )
    out_dir = _output_folder(Path(out))
    silence_tf()
    data = _Data(cases, y_all, [(str(c.pre), str(c.post)) for c in cases])
    tracker = _Progress(progress, len(cfg.seeds) * (1 + (len(cfg.strategies) * cfg.rounds)))
    records = Records()
    for seed in cfg.seeds:
        _run_seed(cfg, seed, splits[seed], data, out_dir, imagenet_weights_path, tracker, records)
    return write_report(cfg, str(dataset), label_source, y_all, out_dir, records, started, progress)


def _output_folder(out_dir: Path) -> Path:
    """Create the output folder; refuse a path that exists and is not a folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValidationError(f"output path {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _feature_model(
    cfg: SimulationConfig,
    seed: int,
    sp: SeedSplit,
    data: _Data,
    imagenet_weights_path: str | None,
    tracker: _Progress,
) -> Any:
    """The seed's model whose frozen backbone gives the features: pretrained as is, else trained end to
    end on the seed's initial labels."""
    from workbench.model.builder import build_model
    from workbench.model.training import seed_everything

    model_cfg = cfg.model_cfg
    if model_cfg.pretrained:
        tracker.report(f"seed {seed}: pretrained {model_cfg.backbone} backbone, no end-to-end training")
        seed_everything(seed, deterministic=True)
        return build_model(model_cfg, imagenet_weights_path)
    tracker.report(
        f"seed {seed}: training the feature extractor end to end on {len(sp.initial)} initial labels"
    )
    return train_feature_extractor(
        model_cfg,
        cfg.train_cfg,
        [data.pairs[i] for i in sp.initial],
        data.y[sp.initial],
        cfg.feature_epochs,
        seed,
    )


def _run_seed(
    cfg: SimulationConfig,
    seed: int,
    sp: SeedSplit,
    data: _Data,
    out_dir: Path,
    imagenet_weights_path: str | None,
    tracker: _Progress,
    records: Records,
) -> None:
    """One seed: features computed once into ``OUT/features``, the initial head fit shared by every
    strategy, then each strategy's rounds; records the seed's timings."""
    from workbench.model.features import FeatureCache, build_head_model, graft_head, pair_features

    cache = FeatureCache(out_dir / "features")
    t_seed = time.monotonic()
    model = _feature_model(cfg, seed, sp, data, imagenet_weights_path, tracker)
    t_feat = time.monotonic()
    tracker.report(f"seed {seed}: backbone features of {len(data.pairs)} pairs into {cache.root}")
    feats = pair_features(model, cfg.model_cfg, cache, data.pairs)
    head = build_head_model(cfg.model_cfg, tuple(feats["pre_features"].shape[1:]))
    graft_head(model, head)
    trainer = HeadTrainer(head, cfg.head_lr, cfg.model_cfg.dropout)
    t_rounds = time.monotonic()
    fit: FitFn = functools.partial(
        fit_predict,
        trainer,
        feats,
        data.y,
        epochs=cfg.head_epochs,
        batch=cfg.head_batch,
        mc_samples=cfg.mc_samples,
        seed=seed,
    )
    base_pred = fit(sp.initial, 0)
    tracker.done += 1
    for name in cfg.strategies:
        _run_strategy(cfg, seed, name, sp, data, fit, base_pred, tracker, records)
    records.seed_seconds[seed] = {
        "feature_extractor": round(t_feat - t_seed, 2),
        "features": round(t_rounds - t_feat, 2),
        "rounds": round(time.monotonic() - t_rounds, 2),
    }


def _run_strategy(
    cfg: SimulationConfig,
    seed: int,
    name: str,
    sp: SeedSplit,
    data: _Data,
    fit: FitFn,
    base_pred: dict[str, Any],
    tracker: _Progress,
    records: Records,
) -> None:
    """The rounds of one strategy on one seed: record the test curve, query a batch, reveal its labels."""
    y_all = data.y
    pool_positives = int(y_all[sp.pool].sum() - y_all[sp.initial].sum())
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    labelled = list(sp.initial)
    uniform = list(sp.initial)  # uniformly drawn labelled cases: the prevalence estimate
    pred = base_pred
    for rnd in range(cfg.rounds + 1):
        if rnd > 0:
            pred = fit(np.array(sorted(labelled)), rnd)
            tracker.done += 1
            tracker.report(f"seed {seed}, {name}: round {rnd}/{cfg.rounds}, {len(labelled)} labels")
        records.curves.append(_curve_row(name, seed, rnd, sp, y_all, labelled, pred, pool_positives))
        if rnd == cfg.rounds:
            break
        picked = _query(cfg, sp, y_all, labelled, uniform, pred, cfg.mixes[name], rng)
        for item in picked:
            labelled.append(item.case_id)
            if item.strategy == BASELINE:
                uniform.append(item.case_id)
            records.queries.append(
                {
                    "strategy": name,
                    "seed": seed,
                    "round": rnd + 1,
                    "case_id": data.cases[item.case_id].case_id,
                    "label": int(y_all[item.case_id]),
                    "chosen_by": item.strategy,
                    "score": f"{item.score:.6g}",
                    "reason": item.reason,
                }
            )


def _curve_row(
    name: str,
    seed: int,
    rnd: int,
    sp: SeedSplit,
    y_all: np.ndarray,
    labelled: list[int],
    pred: dict[str, Any],
    pool_positives: int,
) -> dict[str, Any]:
    """One row of ``curves.csv``: labels used and positives found so far, and the test metrics."""
    y_test = y_all[sp.test]
    p_test = pred["prob"][sp.test]
    return {
        "strategy": name,
        "seed": seed,
        "round": rnd,
        "labels_used": len(labelled),
        "positives_found": int(y_all[labelled].sum()),
        "queried": len(labelled) - len(sp.initial),
        "test_auprc": _metric("auprc", y_test, p_test),
        "test_auroc": _metric("auroc", y_test, p_test),
        "test_n": len(sp.test),
        "test_positives": int(y_test.sum()),
        "_pool_positives": pool_positives,
    }


def _query(
    cfg: SimulationConfig,
    sp: SeedSplit,
    y_all: np.ndarray,
    labelled: list[int],
    uniform: list[int],
    pred: dict[str, Any],
    mix: dict[str, float],
    rng: np.random.Generator,
) -> list[Selected]:
    """The next batch from the unlabelled pool, at the prevalence-quantile threshold of this round."""
    prevalence = (y_all[uniform].sum() + 1.0) / (len(uniform) + 2.0)
    threshold = prevalence_threshold(pred["prob"][sp.pool], prevalence)
    taken = set(labelled)
    cand_idx = np.array([i for i in sp.pool if i not in taken])
    candidates = Candidates(
        case_ids=cand_idx,
        prob=pred["prob"][cand_idx],
        threshold=threshold,
        uncertainty=None if pred["mc"] is None else pred["mc"][:, cand_idx].std(axis=0),
        mc_probs=None if pred["mc"] is None else pred["mc"][:, cand_idx],
        embeddings=pred["embedding"][cand_idx] if cfg.use_embeddings else None,
    )
    return select_batch(candidates, cfg.batch, mix, rng)


def _metric(kind: str, y: np.ndarray, p: np.ndarray) -> float | None:
    """Test AUPRC (``auprc``) or AUROC of the probabilities ``p``; None where it is undefined."""
    from workbench.evaluation.metrics import average_precision, roc_auc

    return (average_precision if kind == "auprc" else roc_auc)(y, p)
