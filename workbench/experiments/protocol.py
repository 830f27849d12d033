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

import csv
import functools
import io
import json
import math
import os
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.active.strategies import DEFAULT_MIX, STRATEGIES, Candidates, select_batch, validate_mix
from workbench.errors import ValidationError

ProgressFn = Callable[[float, str], None]

DEFAULT_STRATEGIES: tuple[str, ...] = ("mixed", "near_threshold", "likely_positive", "random")
BASELINE = "random"
#: Strategies that need inputs the simulation does not produce (test-time augmentation).
UNSUPPORTED = {"tta_spread": "needs test-time augmentation spreads, which the simulation does not compute"}
CURVE_COLUMNS: tuple[str, ...] = (
    "strategy",
    "seed",
    "round",
    "labels_used",
    "positives_found",
    "queried",
    "test_auprc",
    "test_auroc",
    "test_n",
    "test_positives",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "seeds",
    "queried",
    "pool_positives",
    "positives_per_100_mean",
    "positives_per_100_min",
    "positives_per_100_max",
    "ratio_vs_random",
    "initial_auprc_mean",
    "final_auprc_mean",
    "final_auprc_min",
    "final_auprc_max",
    "final_auroc_mean",
)
QUERY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "seed",
    "round",
    "case_id",
    "label",
    "chosen_by",
    "score",
    "reason",
)
GROUND_TRUTH_NAME = "ground_truth.csv"
#: End-to-end epochs of each seed's feature extractor. With ~40 initial labels an epoch is only ~3 steps, and
#: the from-scratch CNN needs ~180 steps to pick up the lesion: on 600 synthetic pairs (seeds 0-2) 25 or 40
#: epochs left the frozen features near chance (test AUROC 0.4-0.8 after the head), 60 gave 0.87-0.94.
DEFAULT_FEATURE_EPOCHS = 60
#: Head-only epochs per round, and the head's batch size (larger than the preset's 16: the head is cheap
#: per case, and a step costs about the same at 32, so a fit takes half the steps).
DEFAULT_HEAD_EPOCHS = 30
DEFAULT_HEAD_BATCH = 32


# --------------------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledCase:
    """One fully labelled pair: absolute image paths, label 0/1 and patient (the case id when not given)."""

    case_id: str
    pre: Path
    post: Path
    label: int
    patient_id: str


def _read_ground_truth(path: Path) -> dict[str, tuple[str, str]]:
    """case_id -> (label text, patient id) from a synth ``ground_truth.csv``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read ground truth ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if "case_id" not in header or "label" not in header:
        raise ValidationError(f"{path}: ground truth needs columns case_id,label[,patient_id]")
    reader.fieldnames = header
    out: dict[str, tuple[str, str]] = {}
    for rec in reader:
        cid = (rec.get("case_id") or "").strip()
        out[cid] = ((rec.get("label") or "").strip(), (rec.get("patient_id") or "").strip())
    return out


def load_labelled(dataset: str | os.PathLike) -> tuple[list[LabelledCase], str]:
    """Read a manifest CSV or case folder (import format) in which EVERY case has a label.

    When a ``ground_truth.csv`` lies next to the manifest (a synth output), its labels are used, so a synth
    set written with unlabelled cases can still be replayed. Returns the cases and where the labels came
    from. Raises ValidationError for unreadable rows, missing images, unlabelled cases or a single class.
    """
    from workbench.data.images import resolve_inside
    from workbench.data.importer import parse_label
    from workbench.data.sources import read_source

    source = read_source(Path(dataset))
    truth_path = source.path.parent / GROUND_TRUTH_NAME if source.format == "manifest" else None
    truth = _read_ground_truth(truth_path) if truth_path is not None and truth_path.is_file() else None
    label_source = str(truth_path) if truth is not None else str(source.path)
    cases: list[LabelledCase] = []
    seen: set[str] = set()
    unlabelled: list[str] = []
    for row in source.rows:
        where = f"{source.path.name} line {row.line}" if row.line else f"case folder {row.case_id!r}"
        if row.problem:
            raise ValidationError(f"{where}: {row.problem}")
        cid = row.case_id.strip()
        if not cid:
            raise ValidationError(f"{where}: empty case_id")
        if cid in seen:
            raise ValidationError(f"{where}: duplicate case_id {cid!r}")
        seen.add(cid)
        label_text, patient = row.label, row.patient_id
        if truth is not None:
            if cid not in truth:
                raise ValidationError(f"case {cid!r} is missing from {truth_path}")
            label_text, patient = truth[cid][0], truth[cid][1] or patient
        try:
            label = parse_label(label_text)
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc}") from None
        if label is None:
            unlabelled.append(cid)
            continue
        pre, post = resolve_inside(source.root, row.pre), resolve_inside(source.root, row.post)
        for p in (pre, post):
            if not p.is_file():
                raise ValidationError(f"{where}: image file not found: {p}")
        cases.append(LabelledCase(cid, pre, post, int(label), patient.strip() or cid))
    if unlabelled:
        shown = ", ".join(unlabelled[:3]) + (
            f" and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        )
        raise ValidationError(
            f"simulation needs every case labelled, but {len(unlabelled)} case(s) in {label_source} have no "
            f"label ({shown}); give a fully labelled manifest (or a synth folder with {GROUND_TRUTH_NAME})"
        )
    if not cases:
        raise ValidationError(f"{source.path}: no cases")
    positives = sum(c.label for c in cases)
    if positives == 0 or positives == len(cases):
        only = "positive" if positives else "negative"
        raise ValidationError(
            f"{label_source}: all {len(cases)} cases are {only}; simulation needs both classes"
        )
    return cases, label_source


# --------------------------------------------------------------------------------------------------------
# Strategies, splits, threshold
# --------------------------------------------------------------------------------------------------------


def parse_strategy(spec: str) -> dict[str, float]:
    """The mix a strategy name stands for: ``mixed`` -> DEFAULT_MIX, ``name`` -> {name: 1.0}, or a custom
    mix ``"near_threshold=0.6+likely_positive=0.4"`` (shares summing to 1)."""
    text = (spec or "").strip()
    if not text:
        raise ValidationError("strategy name is empty")
    if text == "mixed":
        mix = dict(DEFAULT_MIX)
    elif "=" in text:
        mix = {}
        for part in text.split("+"):
            name, sep, share = part.partition("=")
            if not sep:
                raise ValidationError(f"strategy mix {text!r}: write parts as name=share joined by '+'")
            try:
                mix[name.strip()] = float(share)
            except ValueError:
                raise ValidationError(f"strategy mix {text!r}: share {share!r} is not a number") from None
    else:
        if text not in STRATEGIES:
            known = ", ".join(["mixed", *(s for s in STRATEGIES if s not in UNSUPPORTED)])
            raise ValidationError(f"unknown strategy {text!r} (one of {known}, or a mix like a=0.5+b=0.5)")
        mix = {text: 1.0}
    mix = validate_mix(mix)
    for name, share in mix.items():
        if share > 0 and name in UNSUPPORTED:
            raise ValidationError(f"strategy {name!r} cannot be simulated: it {UNSUPPORTED[name]}")
    return mix


@dataclass(frozen=True)
class SeedSplit:
    """Indices into the case list: the never-queried test set, the pool, and the initial labelled subset."""

    test: np.ndarray
    pool: np.ndarray
    initial: np.ndarray


def split_for_seed(
    labels: Sequence[int], patients: Sequence[str], seed: int, initial: int, test_fraction: float
) -> SeedSplit:
    """Test set by patient, stratified (assign_patient_splits); initial set stratified with >= 2 positives."""
    from workbench.data.splits import PatientCases, assign_patient_splits

    y = np.asarray(labels, dtype=int)
    by_patient: dict[str, PatientCases] = {}
    for label, pid in zip(y, patients, strict=True):
        by_patient.setdefault(pid, PatientCases(pid)).labels.append(int(label))
    proportions = {"train": 1.0 - test_fraction, "val": 0.0, "test": test_fraction}
    assigned = assign_patient_splits(list(by_patient.values()), {}, proportions, seed=seed)
    is_test = np.array([assigned[p] == "test" for p in patients])
    test, pool = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    rng = np.random.default_rng([seed, 0x1A1])
    pos, neg = pool[y[pool] == 1], pool[y[pool] == 0]
    if initial > len(pool):
        raise ValidationError(f"initial ({initial}) is larger than the pool ({len(pool)} cases)")
    n_pos = max(2, round(initial * len(pos) / max(len(pool), 1)))
    n_pos = min(n_pos, len(pos), initial - min(1, len(neg)))
    n_neg = min(initial - n_pos, len(neg))
    n_pos = initial - n_neg
    chosen = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
    return SeedSplit(test=test, pool=pool, initial=np.sort(chosen))


def prevalence_threshold(pool_prob: np.ndarray, prevalence: float) -> float:
    """Probability of the pool case ranked ``ceil(prevalence x n)``: flag as many as are expected positive."""
    p = np.sort(np.asarray(pool_prob, dtype=np.float64))[::-1]
    if p.size == 0:
        return 0.5
    k = min(max(1, math.ceil(prevalence * p.size)), p.size)
    return float(np.clip(p[k - 1], 0.0, 1.0))


# --------------------------------------------------------------------------------------------------------
# Model: feature extractor and head
# --------------------------------------------------------------------------------------------------------


def _silence_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train_feature_extractor(
    model_cfg: Any, train_cfg: Any, pairs: list[tuple[str, str]], y: np.ndarray, epochs: int, seed: int
) -> Any:
    """Full model trained end to end on the initial labels for a fixed number of epochs (no validation)."""
    import keras

    from workbench.model.builder import build_model
    from workbench.model.pipeline import make_dataset
    from workbench.model.training import compute_class_weights, seed_everything

    seed_everything(seed, deterministic=True)
    model = build_model(model_cfg)
    train_model = keras.Model(model.input, model.output["logit"], name="sim_train_logit")
    ds = make_dataset(
        pairs,
        list(y),
        input_size=model_cfg.input_size,
        backbone=model_cfg.backbone,
        batch_size=train_cfg.phase1_batch,
        training=True,
        augment=train_cfg.augment,
        seed=seed,
    )
    train_model.compile(
        optimizer=keras.optimizers.Adam(train_cfg.phase1_lr),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    train_model.fit(ds, epochs=epochs, class_weight=compute_class_weights(y), shuffle=False, verbose=0)
    return model


class _HeadTrainer:
    """Retrains the fusion head on cached features from the same initial weights, fast and repeatably.

    One compiled train step per seed (a tf.function with a free batch dimension, traced once); each fit
    restores the initial head weights, zeroes the optimizer state and reseeds dropout, so the same
    labelled set and round seed give the same head whatever happened before.
    """

    def __init__(self, head: Any, lr: float, dropout: float) -> None:
        import keras
        import tensorflow as tf

        self.head = head
        self.logit_model = keras.Model(head.input, head.output["logit"], name="sim_head_logit")
        self.emb_model = keras.Model(head.input, head.get_layer("embedding").output, name="sim_head_emb")
        self.dropout = float(dropout)
        self.initial = [np.array(v) for v in head.get_weights()]
        self.seed_states = [v for v in self.logit_model.variables if "seed_generator_state" in v.path]
        variables = self.logit_model.trainable_variables
        self.optimizer = keras.optimizers.Adam(lr)
        self.optimizer.build(variables)
        self.opt_state = [v for v in self.optimizer.variables if "learning_rate" not in v.path]
        shape = tuple(head.input["pre_features"].shape[1:])
        spec = tf.TensorSpec((None, *shape), tf.float32)
        model, optimizer = self.logit_model, self.optimizer

        column = tf.TensorSpec((None, 1), tf.float32)

        @tf.function(input_signature=[spec, spec, column, column])
        def step(pre: Any, post: Any, y: Any, w: Any) -> Any:
            with tf.GradientTape() as tape:
                z = model({"pre_features": pre, "post_features": post}, training=True)
                per_case = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
                loss = tf.reduce_sum(w * per_case) / tf.cast(tf.shape(y)[0], tf.float32)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        self._step = step

    def fit(self, x: dict[str, np.ndarray], y: np.ndarray, epochs: int, batch: int, seed: int) -> None:
        """Train from the initial weights for ``epochs`` epochs with class-balanced weights."""
        from workbench.model.training import compute_class_weights

        self.head.set_weights(self.initial)
        for v in self.opt_state:
            v.assign(np.zeros(v.shape, dtype=v.dtype))
        for v in self.seed_states:
            v.assign(np.array([seed % (2**31), 0], dtype=np.int64))
        cw = compute_class_weights(y)
        weights = np.where(y == 1, cw[1], cw[0]).astype(np.float32).reshape(-1, 1)
        target = y.astype(np.float32).reshape(-1, 1)
        rng = np.random.default_rng([seed, 0x4EAD])
        n = len(y)
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                self._step(x["pre_features"][idx], x["post_features"][idx], target[idx], weights[idx])

    def predict(self, x: dict[str, np.ndarray], mc_samples: int, seed: int) -> dict[str, np.ndarray]:
        """Probabilities, MC-dropout samples (K x N, None when K < 2) and pooled embeddings."""
        n = len(x["pre_features"])
        emb = np.concatenate(
            [
                np.asarray(
                    self.emb_model({k: v[i : i + 512] for k, v in x.items()}, training=False), np.float64
                )
                for i in range(0, n, 512)
            ]
        )
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in self.head.get_layer("logit").get_weights())
        prob = _sigmoid(emb @ kernel[:, 0] + bias[0])
        mc = None
        if mc_samples >= 2:
            rng = np.random.default_rng([seed, 0x3C])
            keep = 1.0 - self.dropout
            samples = []
            for _ in range(mc_samples):
                mask = rng.random(emb.shape) < keep if keep < 1.0 else np.ones(emb.shape, dtype=bool)
                samples.append(_sigmoid((emb * mask / keep) @ kernel[:, 0] + bias[0]))
            mc = np.stack(samples)
        return {"prob": prob, "mc": mc, "embedding": emb}


def _fit_predict(
    trainer: _HeadTrainer,
    feats: dict[str, np.ndarray],
    y: np.ndarray,
    labelled: np.ndarray,
    rnd: int,
    *,
    epochs: int,
    batch: int,
    mc_samples: int,
    seed: int,
) -> dict[str, Any]:
    """Retrain the head on the labelled cases (seeded by seed and round) and predict every case."""
    x = {k: v[labelled] for k, v in feats.items()}
    trainer.fit(x, y[labelled], epochs, batch, seed=seed * 1000 + rnd)
    return trainer.predict(feats, mc_samples, seed=seed * 1000 + rnd)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------------
# Result and outputs
# --------------------------------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    """Curves (one dict per strategy, seed and round), the per-strategy summary, and the files written."""

    out: Path
    dataset: str
    label_source: str
    strategies: list[str]
    seeds: list[int]
    rounds: int
    batch: int
    initial: int
    curves: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary_table(self) -> str:
        """Plain-text tables: positives found per 100 queries (vs random) and mean test AUPRC vs labels used."""
        seeds = ", ".join(str(s) for s in self.seeds)
        queried = self.rounds * self.batch
        lines = [
            f"Simulation on {self.dataset}: {self.rounds} rounds of {self.batch} after {self.initial} initial "
            f"labels, seeds {seeds} ({self.seconds:.0f} s)",
            f"Positives found per 100 queries ({queried} queries per seed; mean over seeds, [min, max]); "
            "test AUPRC after the last round",
        ]
        header = ["strategy", "pos/100 queries", "[min, max]", "x random", "final AUPRC", "[min, max]"]
        rows = []
        for s in self.summary:
            ratio = s["ratio_vs_random"]
            rows.append(
                [
                    s["strategy"],
                    _fmt(s["positives_per_100_mean"], 1),
                    f"[{_fmt(s['positives_per_100_min'], 1)}, {_fmt(s['positives_per_100_max'], 1)}]",
                    "n/a" if ratio is None else f"{ratio:.2f}",
                    _fmt(s["final_auprc_mean"], 3),
                    f"[{_fmt(s['final_auprc_min'], 3)}, {_fmt(s['final_auprc_max'], 3)}]",
                ]
            )
        lines += _table(header, rows)
        pool_pos = self.summary[0]["pool_positives"] if self.summary else None
        if pool_pos is not None:
            lines.append(
                f"(unlabelled pool positives after the initial set: {pool_pos:.1f} per seed on average)"
            )
        labels_used = sorted({int(r["labels_used"]) for r in self.curves})
        lines += ["", "Mean test AUPRC vs labels used"]
        auprc_rows = []
        for name in self.strategies:
            row = [name]
            for n in labels_used:
                vals = [
                    r["test_auprc"] for r in self.curves if r["strategy"] == name and r["labels_used"] == n
                ]
                row.append(_fmt(_nanmean(vals), 3))
            auprc_rows.append(row)
        lines += _table(["strategy", *(str(n) for n in labels_used)], auprc_rows)
        test_n = sorted({(int(r["test_n"]), int(r["test_positives"])) for r in self.curves})
        if test_n:
            spread = ", ".join(f"n={n} ({p} positive)" for n, p in test_n)
            lines.append(f"(test sets per seed: {spread})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _nanmean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def _write_text_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return _write_text_atomic(path, buf.getvalue())


def summarise(curves: list[dict[str, Any]], strategies: Sequence[str]) -> list[dict[str, Any]]:
    """Per strategy: positives found per 100 queries (mean, min, max over seeds), ratio of means vs random,
    mean initial and final test AUPRC (final: mean, min, max) and final AUROC."""
    out = []
    for name in strategies:
        rows = [r for r in curves if r["strategy"] == name]
        seeds = sorted({r["seed"] for r in rows})
        per100, final_ap, final_roc, init_ap, pool_pos = [], [], [], [], []
        queried = 0
        for seed in seeds:
            mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["round"])
            first, last = mine[0], mine[-1]
            queried = last["queried"]
            if queried:
                per100.append(100.0 * (last["positives_found"] - first["positives_found"]) / queried)
            final_ap.append(last["test_auprc"])
            final_roc.append(last["test_auroc"])
            init_ap.append(first["test_auprc"])
            pool_pos.append(first.get("_pool_positives", math.nan))
        finite_ap = [v for v in final_ap if v is not None and math.isfinite(v)]
        out.append(
            {
                "strategy": name,
                "seeds": len(seeds),
                "queried": queried,
                "pool_positives": _nanmean(pool_pos),
                "positives_per_100_mean": float(np.mean(per100)) if per100 else None,
                "positives_per_100_min": float(np.min(per100)) if per100 else None,
                "positives_per_100_max": float(np.max(per100)) if per100 else None,
                "ratio_vs_random": None,
                "initial_auprc_mean": _nanmean(init_ap),
                "final_auprc_mean": _nanmean(final_ap),
                "final_auprc_min": float(np.min(finite_ap)) if finite_ap else None,
                "final_auprc_max": float(np.max(finite_ap)) if finite_ap else None,
                "final_auroc_mean": _nanmean(final_roc),
            }
        )
    base = next((s for s in out if s["strategy"] == BASELINE), None)
    for s in out:
        if base is not None and base["positives_per_100_mean"] and s["positives_per_100_mean"] is not None:
            s["ratio_vs_random"] = s["positives_per_100_mean"] / base["positives_per_100_mean"]
    return out


def plot_curves(curves: list[dict[str, Any]], strategies: Sequence[str], path: str | os.PathLike) -> Path:
    """Two panels against labels used: positives found and test AUPRC; mean over seeds, shaded min-max."""
    from matplotlib.figure import Figure

    from workbench.evaluation.report import save_figure

    fig = Figure(figsize=(11.0, 4.4))
    ax_pos, ax_ap = fig.subplots(1, 2)
    for i, name in enumerate(strategies):
        rows = [r for r in curves if r["strategy"] == name]
        xs = sorted({r["labels_used"] for r in rows})
        color = f"C{i % 10}"
        for ax, key in ((ax_pos, "positives_found"), (ax_ap, "test_auprc")):
            vals = [
                np.array([np.nan if r[key] is None else r[key] for r in rows if r["labels_used"] == x], float)
                for x in xs
            ]
            mean = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
            low = np.array([np.nanmin(v) if np.isfinite(v).any() else np.nan for v in vals])
            high = np.array([np.nanmax(v) if np.isfinite(v).any() else np.nan for v in vals])
            ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
            ax.plot(
                xs,
                mean,
                marker="o",
                ms=3,
                color=color,
                label=name,
                lw=2.0 if name == BASELINE else 1.6,
                ls="--" if name == BASELINE else "-",
            )
    prevalence = [r["test_positives"] / r["test_n"] for r in curves if r["round"] == 0 and r["test_n"]]
    if prevalence:
        ax_ap.axhline(
            float(np.mean(prevalence)), color="grey", ls=":", lw=1.0, label="chance (test prevalence)"
        )
    seeds = len({r["seed"] for r in curves})
    ax_pos.set(
        xlabel="Labels used",
        ylabel="Positives found (labelled positives)",
        title=f"Positives found (mean of {seeds} seeds, band: min-max)",
    )
    ax_ap.set(xlabel="Labels used", ylabel="Test AUPRC", title="Test AUPRC (fixed test set per seed)")
    ax_ap.set_ylim(0, 1)
    for ax, where in ((ax_pos, "upper left"), (ax_ap, "lower right")):
        ax.grid(alpha=0.3)
        ax.legend(loc=where, fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _seed_list(seeds: Sequence[int] | int) -> list[int]:
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        return list(range(_check_int("seeds", seeds, 1)))
    out = [_check_int("seed", s, 0) for s in seeds]
    if not out:
        raise ValidationError("seeds: give at least one seed")
    if len(set(out)) != len(out):
        raise ValidationError(f"seeds must be distinct, got {out}")
    return out


def _strategy_list(strategies: Sequence[str] | str) -> tuple[list[str], dict[str, dict[str, float]]]:
    names = [strategies] if isinstance(strategies, str) else list(strategies)
    names = [n.strip() for n in names]
    if not names:
        raise ValidationError("strategies: give at least one strategy")
    if len(set(names)) != len(names):
        raise ValidationError(f"strategies are repeated: {names}")
    mixes = {n: parse_strategy(n) for n in names}
    if BASELINE not in mixes:
        names.append(BASELINE)
        mixes[BASELINE] = {BASELINE: 1.0}
    return names, mixes


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
    rounds = _check_int("rounds", rounds, 1)
    batch = _check_int("batch", batch, 1)
    initial = _check_int("initial", initial, 2)
    head_epochs = _check_int("head_epochs", head_epochs, 1)
    mc_samples = _check_int("mc_samples", mc_samples, 0)
    if mc_samples == 1:
        raise ValidationError("mc_samples must be 0 (no MC dropout) or >= 2")
    if not isinstance(test_fraction, int | float) or not 0.05 <= float(test_fraction) <= 0.5:
        raise ValidationError(f"test_fraction must be between 0.05 and 0.5, got {test_fraction!r}")
    seed_list = _seed_list(seeds)
    names, mixes = _strategy_list(strategies)
    uses = {n for mix in mixes.values() for n, share in mix.items() if share > 0}
    if "diversity" in uses and not use_embeddings:
        raise ValidationError("strategy 'diversity' needs embeddings; do not turn embeddings off")
    if "bald" in uses and mc_samples < 2:
        raise ValidationError("strategy 'bald' needs MC-dropout samples: set mc_samples >= 2")

    from workbench.model.config import ModelConfig
    from workbench.model.config import preset as load_preset

    model_cfg, train_cfg = load_preset(preset)
    if model_overrides:
        model_cfg = ModelConfig.from_dict({**model_cfg.to_dict(), **dict(model_overrides)})
    feature_epochs = _check_int("feature_epochs", feature_epochs, 1)
    lr = float(head_lr if head_lr is not None else train_cfg.phase1_lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValidationError(f"head_lr must be a positive number, got {head_lr!r}")
    head_batch = _check_int("head_batch", head_batch, 1)

    cases, label_source = load_labelled(dataset)
    y_all = np.array([c.label for c in cases], dtype=int)
    patients = [c.patient_id for c in cases]
    splits = {s: split_for_seed(y_all, patients, s, initial, float(test_fraction)) for s in seed_list}
    for s, sp in splits.items():
        need = initial + rounds * batch
        if need > len(sp.pool):
            raise ValidationError(
                f"initial + rounds x batch = {initial} + {rounds} x {batch} = {need} labels, but the pool of "
                f"seed {s} holds only {len(sp.pool)} cases ({len(sp.test)} of {len(cases)} are held out for test)"
            )
        if int(y_all[sp.test].sum()) == 0:
            raise ValidationError(f"the test set of seed {s} has no positive case: use a larger data set")
        if int(y_all[sp.initial].sum()) == 0:
            raise ValidationError(f"the pool of seed {s} has no positive case to start from")

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValidationError(f"output path {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    _silence_tf()
    from workbench.model.builder import build_model
    from workbench.model.features import FeatureCache, build_head_model, graft_head, pair_features
    from workbench.model.training import seed_everything

    cache = FeatureCache(out_dir / "features")
    pairs = [(str(c.pre), str(c.post)) for c in cases]
    fits_total = len(seed_list) * (1 + (len(names) * rounds))
    done = 0

    def report(message: str) -> None:
        if progress is not None:
            progress(min(done / fits_total, 1.0), message)

    curves: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    seed_seconds: dict[int, dict[str, float]] = {}
    for seed in seed_list:
        sp = splits[seed]
        t_seed = time.monotonic()
        if model_cfg.pretrained:
            report(f"seed {seed}: pretrained {model_cfg.backbone} backbone, no end-to-end training")
            seed_everything(seed, deterministic=True)
            model = build_model(model_cfg, imagenet_weights_path)
        else:
            report(
                f"seed {seed}: training the feature extractor end to end on {len(sp.initial)} initial labels"
            )
            model = _train_feature_extractor(
                model_cfg, train_cfg, [pairs[i] for i in sp.initial], y_all[sp.initial], feature_epochs, seed
            )
        t_feat = time.monotonic()
        report(f"seed {seed}: backbone features of {len(pairs)} pairs into {cache.root}")
        feats = pair_features(model, model_cfg, cache, pairs)
        head = build_head_model(model_cfg, tuple(feats["pre_features"].shape[1:]))
        graft_head(model, head)
        trainer = _HeadTrainer(head, lr, model_cfg.dropout)
        t_rounds = time.monotonic()

        fit_predict = functools.partial(
            _fit_predict,
            trainer,
            feats,
            y_all,
            epochs=head_epochs,
            batch=head_batch,
            mc_samples=mc_samples,
            seed=seed,
        )

        y_test = y_all[sp.test]
        pool_positives = int(y_all[sp.pool].sum() - y_all[sp.initial].sum())
        base_pred = fit_predict(sp.initial, 0)
        done += 1
        for name in names:
            mix = mixes[name]
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            labelled = list(sp.initial)
            uniform = list(sp.initial)  # uniformly drawn labelled cases: the prevalence estimate
            pred = base_pred
            for rnd in range(rounds + 1):
                if rnd > 0:
                    pred = fit_predict(np.array(sorted(labelled)), rnd)
                    done += 1
                    report(f"seed {seed}, {name}: round {rnd}/{rounds}, {len(labelled)} labels")
                p_test = pred["prob"][sp.test]
                curves.append(
                    {
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
                )
                if rnd == rounds:
                    break
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
                    embeddings=pred["embedding"][cand_idx] if use_embeddings else None,
                )
                picked = select_batch(candidates, batch, mix, rng)
                for item in picked:
                    labelled.append(item.case_id)
                    if item.strategy == BASELINE:
                        uniform.append(item.case_id)
                    queries.append(
                        {
                            "strategy": name,
                            "seed": seed,
                            "round": rnd + 1,
                            "case_id": cases[item.case_id].case_id,
                            "label": int(y_all[item.case_id]),
                            "chosen_by": item.strategy,
                            "score": f"{item.score:.6g}",
                            "reason": item.reason,
                        }
                    )
        seed_seconds[seed] = {
            "feature_extractor": round(t_feat - t_seed, 2),
            "features": round(t_rounds - t_feat, 2),
            "rounds": round(time.monotonic() - t_rounds, 2),
        }

    summary = summarise(curves, names)
    files = {
        "curves": _write_csv(out_dir / "curves.csv", CURVE_COLUMNS, curves),
        "summary": _write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, summary),
        "queries": _write_csv(out_dir / "queries.csv", QUERY_COLUMNS, queries),
    }
    files["plot"] = plot_curves(curves, names, out_dir / "curves.png")
    seconds = time.monotonic() - started
    notes = [
        "features: backbone trained end to end on each seed's initial labels only, then frozen"
        if not model_cfg.pretrained
        else "features: pretrained backbone, frozen",
        "threshold: prevalence quantile of the pool probabilities (prevalence from uniformly drawn labels)",
    ]
    meta = {
        "dataset": str(dataset),
        "label_source": label_source,
        "cases": len(cases),
        "positives": int(y_all.sum()),
        "strategies": {n: mixes[n] for n in names},
        "rounds": rounds,
        "batch": batch,
        "initial": initial,
        "seeds": seed_list,
        "test_fraction": float(test_fraction),
        "preset": preset,
        "model": model_cfg.to_dict(),
        "feature_epochs": feature_epochs,
        "head_epochs": head_epochs,
        "head_lr": lr,
        "head_batch": head_batch,
        "mc_samples": mc_samples,
        "use_embeddings": bool(use_embeddings),
        "seconds": round(seconds, 2),
        "seconds_per_seed": seed_seconds,
        "notes": notes,
    }
    files["meta"] = _write_text_atomic(out_dir / "simulation.json", json.dumps(meta, indent=2) + "\n")
    if progress is not None:
        progress(1.0, f"done in {seconds:.0f} s; results in {out_dir}")
    return SimulationResult(
        out=out_dir,
        dataset=str(dataset),
        label_source=label_source,
        strategies=names,
        seeds=seed_list,
        rounds=rounds,
        batch=batch,
        initial=initial,
        curves=[{k: v for k, v in r.items() if not k.startswith("_")} for r in curves],
        summary=summary,
        seconds=seconds,
        files=files,
        notes=notes,
    )


def _metric(kind: str, y: np.ndarray, p: np.ndarray) -> float | None:
    from workbench.evaluation.metrics import average_precision, roc_auc

    return (average_precision if kind == "auprc" else roc_auc)(y, p)
