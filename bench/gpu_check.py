"""GPU throughput check for the card preset: workbench pipeline vs bare Keras on the same model.

Usage::

    python bench/gpu_check.py [--steps 300] [--batch 16] [--size 224] [--no-mixed-precision]
    python bench/gpu_check.py --steps 2 --batch 2          # CPU smoke check (slow but finishes)

Builds the card preset (two ResNet50 backbones, separate weights, 224x224; ImageNet weights when
the local file exists, else random) under the "mixed_float16" policy on a GPU, then measures:

* workbench training: synthetic image files on disk -> workbench.model.pipeline (decode, cache,
  pair augmentation, preprocessing, prefetch) -> model.fit for --steps steps;
* bare Keras training: model.fit on in-memory random tensors, same steps and batch;
* workbench inference: workbench.model.inference.predict_pairs over the image files;
* bare Keras inference: model.predict on in-memory tensors.

It prints the device, then pairs/s for each. The first epoch of each fit (graph tracing, and
decoding for the pipeline) is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU only (no GPU visible to TensorFlow)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return (
        f"{details.get('device_name', gpus[0].name)} (compute capability {details.get('compute_capability')})"
    )


def write_images(root: Path, n: int, size: int) -> list[tuple[str, str]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        pre = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        post = np.clip(pre.astype(int) + rng.integers(-20, 20, pre.shape), 0, 255).astype(np.uint8)
        a, b = root / f"{i:05d}_pre.jpg", root / f"{i:05d}_post.jpg"
        Image.fromarray(pre).save(a, quality=90)
        Image.fromarray(post).save(b, quality=90)
        pairs.append((str(a), str(b)))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description="card preset throughput: workbench pipeline vs bare Keras")
    parser.add_argument("--steps", type=int, default=300, help="training steps to time")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="input width = height")
    parser.add_argument("--images", type=int, default=256, help="distinct image pairs written to disk")
    parser.add_argument("--no-mixed-precision", action="store_true")
    parser.add_argument("--imagenet-weights", default=os.environ.get("WORKBENCH_IMAGENET_WEIGHTS"))
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from workbench.errors import ValidationError
    from workbench.model.builder import build_model
    from workbench.model.config import ModelConfig, preset
    from workbench.model.inference import predict_pairs
    from workbench.model.pipeline import make_dataset

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    print(f"device: {device_name()}")
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}")
    policy = "float32" if args.no_mixed_precision or not on_gpu else "mixed_float16"
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision policy: {policy}")

    cfg, train_cfg = preset("card")
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "input_size": [args.size, args.size]})
    try:
        model = build_model(cfg, args.imagenet_weights)
        print("weights: ImageNet (local file)")
    except ValidationError as exc:
        print(f"weights: random init ({exc})")
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "weights": None})
        model = build_model(cfg)
    print(f"model: {model.count_params() / 1e6:.1f}M parameters, input {args.size}x{args.size}")
    train_model = keras.Model(model.input, model.output["logit"])
    train_model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )

    batch, steps = args.batch, args.steps
    n_images = max(batch, min(args.images, batch * steps))
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    t0 = time.monotonic()
    pairs = write_images(work, n_images, args.size)
    print(f"wrote {n_images} synthetic pairs in {time.monotonic() - t0:.1f}s")
    labels = [int(i % 10 == 0) for i in range(n_images)]
    epoch_steps = math.ceil(n_images / batch)

    results = {}

    # Workbench training: tf.data pipeline from files. Warm-up epoch decodes and fills the cache.
    ds = make_dataset(
        pairs,
        labels,
        input_size=cfg.input_size,
        backbone=cfg.backbone,
        batch_size=batch,
        training=True,
        augment=True,
        seed=0,
    ).repeat()
    train_model.fit(ds, epochs=1, steps_per_epoch=epoch_steps + 1, verbose=0)  # fills the cache
    t0 = time.monotonic()
    train_model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    results["workbench train"] = steps * batch / (time.monotonic() - t0)

    # Bare Keras training on in-memory tensors.
    rng = np.random.default_rng(0)
    x = {
        k: rng.normal(0, 50, (batch * 4, args.size, args.size, 3)).astype("float32") for k in ("pre", "post")
    }
    y = rng.integers(0, 2, (batch * 4, 1)).astype("float32")
    mem = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(tf.data.AUTOTUNE)
    train_model.fit(mem, epochs=1, steps_per_epoch=min(4, steps), verbose=0)
    t0 = time.monotonic()
    train_model.fit(mem, epochs=1, steps_per_epoch=steps, verbose=0)
    results["bare keras train"] = steps * batch / (time.monotonic() - t0)

    # Inference: workbench predict_pairs (decode from files each time) vs model.predict on tensors.
    infer_pairs = pairs[: min(n_images, batch * max(2, steps // 4))]
    predict_pairs(model, infer_pairs[:batch], batch_size=batch)
    t0 = time.monotonic()
    predict_pairs(model, infer_pairs, batch_size=batch)
    results["workbench inference"] = len(infer_pairs) / (time.monotonic() - t0)
    xs = {
        k: np.concatenate([v] * math.ceil(len(infer_pairs) / len(v)))[: len(infer_pairs)]
        for k, v in x.items()
    }
    model.predict({k: v[:batch] for k, v in xs.items()}, batch_size=batch, verbose=0)
    t0 = time.monotonic()
    model.predict(xs, batch_size=batch, verbose=0)
    results["bare keras inference"] = len(infer_pairs) / (time.monotonic() - t0)

    print(f"\nsteps {steps}, batch {batch}, {n_images} image pairs on disk")
    for name, value in results.items():
        print(f"  {name:<22} {value:9.1f} pairs/s")
    print(f"  pipeline/bare training  {results['workbench train'] / results['bare keras train']:.2f}x")
    print(
        f"  pipeline/bare inference {results['workbench inference'] / results['bare keras inference']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
