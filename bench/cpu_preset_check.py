"""CPU preset check: synthetic data -> 70:20:10 split -> train the "cpu" preset -> test AUROC.

Usage::

    python bench/cpu_preset_check.py [--n 400] [--positive-rate 0.1] [--data-seed 0]
        [--size 128x128] [--format jpg] [--train-seed 0] [--set model.field=value ...]

Generates the synthetic pairs (workbench.data.synth) under --work, splits them stratified by label
and grouped by patient (StratifiedGroupKFold, 10 folds: 7 train, 2 val, 1 test), trains the preset
with workbench.model.training.train, predicts the test split with workbench.model.inference and
prints test AUROC/AUPRC with a 2000-sample bootstrap 95% interval and the wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def split_702010(labels: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """Indices of train/val/test: 10 stratified folds grouped by patient; 7 train, 2 val, 1 test."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed)
    fold_of = np.empty(len(labels), dtype=int)
    for k, (_, idx) in enumerate(folds.split(np.zeros(len(labels)), labels, groups)):
        fold_of[idx] = k
    return np.where(fold_of < 7)[0], np.where((fold_of == 7) | (fold_of == 8))[0], np.where(fold_of == 9)[0]


def bootstrap(y: np.ndarray, score: np.ndarray, metric, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            values.append(metric(y[idx], score[idx]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def parse_override(text: str) -> tuple[str, str, object]:
    key, _, value = text.partition("=")
    section, _, name = key.partition(".")
    if section not in ("model", "train") or not name:
        raise SystemExit(f"--set expects model.FIELD=VALUE or train.FIELD=VALUE, got {text!r}")
    return section, name, json.loads(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--positive-rate", type=float, default=0.1)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--size", default="128x128", help="synthetic image size WxH")
    parser.add_argument("--format", default="jpg", choices=["jpg", "png"])
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for data and model (default: a temp folder)")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. model.input_size=[64,64]")
    args = parser.parse_args()

    from sklearn.metrics import average_precision_score, roc_auc_score

    from workbench.data.synth import generate_dataset
    from workbench.model.config import ModelConfig, TrainConfig, preset
    from workbench.model.inference import predict_pairs
    from workbench.model.training import train

    started = time.monotonic()
    work = Path(args.work or tempfile.mkdtemp(prefix="cpu_preset_"))
    w, h = (int(v) for v in args.size.lower().split("x"))
    data = work / f"synth_n{args.n}_s{args.data_seed}_{w}x{h}_{args.format}"
    generate_dataset(
        data,
        n=args.n,
        positive_rate=args.positive_rate,
        seed=args.data_seed,
        size=(w, h),
        image_format=args.format,
        difficulty="easy",
    )
    with (data / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    pairs = [(str(data / r["pre_path"]), str(data / r["post_path"])) for r in rows]
    labels = np.array([int(r["label"]) for r in rows])
    groups = np.array([r["patient_id"] for r in rows])
    tr, va, te = split_702010(labels, groups, args.data_seed)
    data_seconds = time.monotonic() - started

    model_cfg, train_cfg = preset("cpu")
    md, td = model_cfg.to_dict(), train_cfg.to_dict()
    for section, name, value in (parse_override(s) for s in args.set):
        (md if section == "model" else td)[name] = value
    td["seed"] = args.train_seed
    model_cfg, train_cfg = ModelConfig.from_dict(md), TrainConfig.from_dict(td)

    def show(event: dict) -> None:
        if event.get("event") == "epoch":
            keys = ("loss", "val_loss", "val_auc_pr", "val_auc")
            print(
                f"  phase {event['phase']} epoch {event['epoch']:>2}/{event['epochs']}: "
                + " ".join(f"{k}={event[k]:.3f}" for k in keys if k in event),
                flush=True,
            )

    t0 = time.monotonic()
    result = train(
        model_cfg,
        train_cfg,
        [pairs[i] for i in tr],
        labels[tr].tolist(),
        [pairs[i] for i in va],
        labels[va].tolist(),
        work / "model.keras",
        progress=show,
    )
    train_seconds = time.monotonic() - t0

    import keras

    model = keras.models.load_model(work / "model.keras")
    pred = predict_pairs(model, [pairs[i] for i in te], batch_size=32)
    y_te, p_te = labels[te], pred["probability"]
    auroc, auprc = roc_auc_score(y_te, p_te), average_precision_score(y_te, p_te)
    lo, hi = bootstrap(y_te, p_te, roc_auc_score)
    plo, phi = bootstrap(y_te, p_te, average_precision_score)
    total = time.monotonic() - started
    print(json.dumps({"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}))
    print(
        f"data: n={args.n} seed={args.data_seed} size={w}x{h} {args.format}; split train {len(tr)} "
        f"({labels[tr].sum()} pos) / val {len(va)} ({labels[va].sum()} pos) / test {len(te)} "
        f"({labels[te].sum()} pos); data generation {data_seconds:.0f}s"
    )
    print(
        f"training: {train_seconds:.0f}s, {result.epochs_run} epochs, best epoch {result.best_epoch}, "
        f"val {json.dumps({k: round(v, 3) for k, v in result.val_metrics.items()})}"
    )
    print(
        f"TEST AUROC {auroc:.3f} (95% bootstrap CI {lo:.3f}-{hi:.3f}); AUPRC {auprc:.3f} ({plo:.3f}-{phi:.3f})"
    )
    print(f"WALL {total:.0f}s (limit 600s): {'PASS' if auroc >= 0.85 and total <= 600 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
