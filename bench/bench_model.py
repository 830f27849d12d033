"""CPU preset throughput: the workbench's pipelines against bare Keras on in-memory tensors, in one run.

Usage::

    python bench/bench_model.py [--n 512] [--size 128x128] [--batch 64] [--work DIR]

Prints pairs/s and the ratio (pipeline / bare) for
- inference: files -> decode/resize -> model -> prediction rows in the database
  (``workbench.model.scoring.infer_version``) vs ``model.predict`` on preprocessed arrays;
- training: ``workbench.model.training.train`` from image files (decode cached, pair augmentation)
  vs ``model.fit`` on preprocessed arrays, same epochs and batch;
- phase-1 epoch time on cached backbone features (head only) vs on images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--card-pairs", type=int, default=96, help="Pairs for the card-preset inference ratio (0: skip)."
    )
    args = ap.parse_args()

    import keras
    import numpy as np

    from workbench.config import Settings
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset, parse_size
    from workbench.db.engine import create_db_engine, session_scope
    from workbench.db.models import Case, Prediction
    from workbench.db.schema import upgrade
    from workbench.jobs.params import TrainParams
    from workbench.model.builder import build_model, preprocess_fn
    from workbench.model.config import preset
    from workbench.model.features import FeatureCache
    from workbench.model.pipeline import load_arrays
    from workbench.model.registry import load_version_model, train_version
    from workbench.model.scoring import infer_version
    from workbench.model.training import train

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-model-"))
    settings = Settings(home=work / "home", database_url=f"sqlite:///{work / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        work / "data", n=args.n, positive_rate=0.2, seed=0, size=parse_size(args.size), difficulty="easy"
    )
    import_source(engine, data.manifest)
    model_cfg, train_cfg = preset("cpu")
    with session_scope(engine) as s:
        cases = s.scalars(__import__("sqlalchemy").select(Case).order_by(Case.id)).all()
        pairs = [(c.pre_path, c.post_path) for c in cases]
        labels = [int(c.labels[-1].value) for c in cases]
    print(
        f"CPU preset: {model_cfg.backbone} at {model_cfg.input_size}, {len(pairs)} pairs of {args.size} images"
    )

    # --- inference -------------------------------------------------------------------------------
    version = train_version(engine, settings, TrainParams(preset="cpu", epochs=1))["model_version"]
    model = load_version_model(engine, version)
    pre, post = load_arrays(pairs, model_cfg.input_size)
    prep = preprocess_fn(model_cfg.backbone)
    x = {"pre": prep(pre.astype(np.float32)), "post": prep(post.astype(np.float32))}
    model.predict(x, batch_size=args.batch, verbose=0)  # warm-up (tracing)
    t = time.perf_counter()
    model.predict(x, batch_size=args.batch, verbose=0)
    bare = len(pairs) / (time.perf_counter() - t)
    with session_scope(engine) as s:
        s.query(Prediction).delete()
    t = time.perf_counter()
    infer_version(
        engine, settings, version, ["train", "val", "test", "pool"], mc_samples=0, batch_size=args.batch
    )
    pipe = len(pairs) / (time.perf_counter() - t)
    print(
        f"inference: pipeline (files -> rows) {pipe:.1f} pairs/s, bare model.predict {bare:.1f} pairs/s, "
        f"ratio {pipe / bare:.2f}"
    )
    with session_scope(engine) as s:
        s.query(Prediction).delete()
    t = time.perf_counter()
    infer_version(
        engine, settings, version, ["train", "val", "test", "pool"], mc_samples=8, batch_size=args.batch
    )
    mc = len(pairs) / (time.perf_counter() - t)
    print(f"inference with 8 MC-dropout passes: {mc:.1f} pairs/s (ratio to bare {mc / bare:.2f})")

    # --- training --------------------------------------------------------------------------------
    tc = train_cfg.to_dict() | {"phase1_epochs": args.epochs, "patience": 100, "phase1_batch": 16}
    train_cfg = type(train_cfg).from_dict(tc)
    n_val = max(8, len(pairs) // 8)
    t = time.perf_counter()
    train(
        model_cfg, train_cfg, pairs[n_val:], labels[n_val:], pairs[:n_val], labels[:n_val], work / "m.keras"
    )
    piped = args.epochs * (len(pairs) - n_val) / (time.perf_counter() - t)
    fresh = build_model(model_cfg)
    logit_model = keras.Model(fresh.input, fresh.output["logit"])
    logit_model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    y = np.asarray(labels, np.float32)
    xt = {k: v[n_val:] for k, v in x.items()}
    t = time.perf_counter()
    logit_model.fit(xt, y[n_val:], batch_size=16, epochs=args.epochs, verbose=0)
    bare_fit = args.epochs * (len(pairs) - n_val) / (time.perf_counter() - t)
    print(
        f"training: pipeline (files, augmentation, validation each epoch) {piped:.1f} pairs/s, bare model.fit "
        f"{bare_fit:.1f} pairs/s, ratio {piped / bare_fit:.2f}"
    )

    # --- phase 1 on cached features vs images ----------------------------------------------------
    warm = {"phase1_epochs": args.epochs, "patience": 100}
    tc_cache = type(train_cfg).from_dict(train_cfg.to_dict() | warm)
    cache = FeatureCache(work / "features")
    parent = work / "m.keras"
    runs = {}
    for label, feature_cache in (
        ("images", None),
        ("cached features (cold)", cache),
        ("cached features (warm)", cache),
    ):
        t = time.perf_counter()
        train(
            model_cfg,
            tc_cache,
            pairs[n_val:],
            labels[n_val:],
            pairs[:n_val],
            labels[:n_val],
            work / "w.keras",
            parent_model_path=parent,
            feature_cache=feature_cache,
        )
        runs[label] = (time.perf_counter() - t) / args.epochs
    print(
        "phase-1 epoch (frozen parent backbone), seconds per epoch incl. set-up: "
        + ", ".join(f"{k} {v:.2f}" for k, v in runs.items())
        + f"; images / warm cache = {runs['images'] / runs['cached features (warm)']:.1f}x"
    )
    if args.card_pairs:
        card_inference_ratio(work, args.card_pairs)


def card_inference_ratio(work: Path, n: int) -> None:
    """The same inference comparison for the card preset (two ResNet50 at 224x224, weights none)."""
    import numpy as np

    from workbench.data.sources import read_source
    from workbench.data.synth import generate_dataset
    from workbench.model.builder import build_model, preprocess_fn
    from workbench.model.config import ModelConfig, preset
    from workbench.model.inference import predict_pairs
    from workbench.model.pipeline import load_arrays

    data = generate_dataset(work / "card-data", n=n, size=(256, 256), seed=1, difficulty="easy")
    src = read_source(data.manifest)
    pairs = [(str(src.root / r.pre), str(src.root / r.post)) for r in src.rows]
    cfg, _ = preset("card")
    cfg = ModelConfig.from_dict(cfg.to_dict() | {"weights": None})
    model = build_model(cfg)
    pre, post = load_arrays(pairs, cfg.input_size)
    prep = preprocess_fn(cfg.backbone)
    x = {"pre": prep(pre.astype(np.float32)), "post": prep(post.astype(np.float32))}
    model.predict({k: v[:16] for k, v in x.items()}, batch_size=16, verbose=0)
    t = time.perf_counter()
    model.predict(x, batch_size=16, verbose=0)
    bare = n / (time.perf_counter() - t)
    predict_pairs(model, pairs[:16], batch_size=16)
    t = time.perf_counter()
    predict_pairs(model, pairs, batch_size=16)
    pipe = n / (time.perf_counter() - t)
    print(
        f"card preset inference ({n} pairs of 256x256 JPEG): pipeline (files -> predictions) {pipe:.1f} pairs/s, "
        f"bare model.predict {bare:.1f} pairs/s, ratio {pipe / bare:.2f}"
    )


if __name__ == "__main__":
    main()
