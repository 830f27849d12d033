"""Model throughput: the workbench's pipelines against bare Keras on in-memory tensors, in one run.

Usage::

    python bench/bench_model.py [--n 512] [--size 128x128] [--batch 64] [--reps 2] [--work DIR]
                                [--card-pairs 96] [--skip-training]

Prints pairs/s and the ratio (pipeline / bare) for
- CPU preset inference: files -> decoded cache -> model -> prediction rows in the database
  (``workbench.model.scoring.infer_version``) vs ``model.predict`` on preprocessed arrays, without
  and with 8 MC-dropout passes; the first (cold: decode, resize and store every image) pass is
  timed apart, then ``--reps`` repetitions on the warm decoded cache, each with its own bare figure;
- card preset inference (two ResNet50 at 224x224, weights none): the same for
  ``workbench.model.inference.predict_pairs`` (files -> predictions) with a decoded cache;
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
from collections.abc import Callable
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
    ap.add_argument("--reps", type=int, default=2, help="Warm-cache repetitions of each inference ratio.")
    ap.add_argument("--skip-training", action="store_true", help="Only the inference ratios.")
    args = ap.parse_args()

    import numpy as np

    from workbench.config import Settings
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset, parse_size
    from workbench.db.engine import create_db_engine, session_scope
    from workbench.db.models import Case, Prediction
    from workbench.db.schema import upgrade
    from workbench.jobs.params import TrainParams
    from workbench.model.builder import preprocess_fn
    from workbench.model.config import preset
    from workbench.model.pipeline import load_arrays
    from workbench.model.registry import load_version_model, train_version
    from workbench.model.scoring import infer_version

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-model-"))
    settings = Settings(home=work / "home", database_url=f"sqlite:///{work / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        work / "data", n=args.n, positive_rate=0.2, seed=0, size=parse_size(args.size), difficulty="easy"
    )
    import_source(engine, data.manifest)
    model_cfg, _ = preset("cpu")
    with session_scope(engine) as s:
        cases = s.scalars(__import__("sqlalchemy").select(Case).order_by(Case.id)).all()
        pairs = [(c.pre_path, c.post_path) for c in cases]
        labels = [int(c.labels[-1].value) for c in cases]
    print(
        f"CPU preset: {model_cfg.backbone} at {model_cfg.input_size}, {len(pairs)} pairs of {args.size} images"
    )

    # --- inference -------------------------------------------------------------------------------
    quick = {"train": {"learning_check": "warn", "phase1_batch": 64}}  # weights do not change throughput
    params = TrainParams(preset="cpu", epochs=1, overrides=quick)
    version = train_version(engine, settings, params)["model_version"]
    model = load_version_model(engine, version)
    pre, post = load_arrays(pairs, model_cfg.input_size)
    prep = preprocess_fn(model_cfg.backbone)
    x = {"pre": prep(pre.astype(np.float32)), "post": prep(post.astype(np.float32))}
    splits = ["train", "val", "test", "pool"]

    def rows(mc_samples: int) -> None:
        infer_version(engine, settings, version, splits, mc_samples=mc_samples, batch_size=args.batch)

    def clear_rows() -> None:  # infer_version skips scored cases
        with session_scope(engine) as s:
            s.query(Prediction).delete()

    inference_ratios(
        "CPU preset",
        len(pairs),
        lambda: model.predict(x, batch_size=args.batch, verbose=0),
        {"pipeline (files -> rows)": lambda: rows(0), "with 8 MC-dropout passes": lambda: rows(8)},
        Path(settings.artifacts) / "decoded",
        args.reps,
        reset=clear_rows,
    )
    if not args.skip_training:
        training_figures(args, work, pairs, labels, x)
    if args.card_pairs:
        card_inference_ratio(work, args.card_pairs, args.reps)


def training_figures(args: argparse.Namespace, work: Path, pairs: list, labels: list[int], x: dict) -> None:
    """Training from files vs bare ``model.fit``, and phase-1 epochs on cached features vs images."""
    import keras
    import numpy as np

    from workbench.model.builder import build_model
    from workbench.model.config import preset
    from workbench.model.features import FeatureCache
    from workbench.model.training import train

    model_cfg, train_cfg = preset("cpu")
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


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds over all threads) one call of ``run`` takes. On a loaded
    machine the wall time measures the neighbours; the CPU time still measures this work."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def inference_ratios(
    title: str,
    n: int,
    bare: Callable[[], object],
    pipelines: dict[str, Callable[[], object]],
    decoded: Path,
    reps: int,
    reset: Callable[[], object] = lambda: None,
) -> None:
    """Print the cold first pass, then per repetition the bare rate and each pipeline's rate and
    ratio to it, by wall time and by process CPU time (bare measured right before, so both see the
    same machine load). ``reset`` runs, untimed, before each pipeline pass."""
    first = next(iter(pipelines.values()))
    bare()  # warm-up: tracing
    reset()
    cold, _ = timed(first)  # also traces the pipeline's compiled function
    entries = sum(1 for _ in decoded.rglob("*.u8"))
    print(
        f"{title}: cold first pass (decode, resize, store {entries} cache entries) {n / cold:.1f} pairs/s; "
        f"then warm decoded cache; rates in pairs/s of wall time [of process CPU time]"
    )
    for rep in range(1, reps + 1):
        wall, cpu = timed(bare)
        parts = [f"bare model.predict {n / wall:.1f} [{n / cpu:.1f}]"]
        for name, run in pipelines.items():
            reset()
            p_wall, p_cpu = timed(run)
            parts.append(
                f"{name} {n / p_wall:.1f} [{n / p_cpu:.1f}], ratio {wall / p_wall:.2f} [{cpu / p_cpu:.2f}]"
            )
        print(f"  run {rep}: " + "; ".join(parts) + f" (load average {os.getloadavg()[0]:.2f})")


def card_inference_ratio(work: Path, n: int, reps: int) -> None:
    """The same inference comparison for the card preset (two ResNet50 at 224x224, weights none)."""
    import numpy as np

    from workbench.data.sources import read_source
    from workbench.data.synth import generate_dataset
    from workbench.model.builder import build_model, preprocess_fn
    from workbench.model.config import ModelConfig, preset
    from workbench.model.decoded_cache import DecodedCache
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
    cache = DecodedCache(work / "card-decoded")

    def piped(mc_samples: int) -> None:
        predict_pairs(model, pairs, batch_size=16, mc_samples=mc_samples, decoded_cache=cache)

    print(f"card preset: {cfg.backbone} x2 at {cfg.input_size}, {n} pairs of 256x256 JPEG")
    inference_ratios(
        "card preset",
        n,
        lambda: model.predict(x, batch_size=16, verbose=0),
        {"pipeline (files -> predictions)": lambda: piped(0), "with 8 MC-dropout passes": lambda: piped(8)},
        cache.root,
        reps,
    )


if __name__ == "__main__":
    main()
