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

First the multi-device section (``--only-distribution`` runs just that), each measurement in a fresh
process (a strategy, or a CPU split, is fixed when TensorFlow starts), training on in-memory tensors
at ``--batch`` per replica under ``workbench.model.distribution``:

* two or more GPUs: one GPU alone (``CUDA_VISIBLE_DEVICES=0``), ``MirroredStrategy`` over all of
  them (pairs/s and scaling efficiency = speed-up / GPUs), and the pinning alternative: one process
  per GPU, each pinned with ``CUDA_VISIBLE_DEVICES=i``, run at the same time (summed pairs/s);
* one GPU: says so (nothing to mirror; pinning is that GPU's single worker);
* no GPU: says so and runs the strategy path on two logical CPU devices (``cpu:2``, the CPU preset)
  as a smoke check: two replicas, finite loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
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


def replica_throughput(mode: str, preset_name: str, batch: int, steps: int, size: int | None) -> dict:
    """Train ``preset_name`` on in-memory tensors under ``mode`` (this process); pairs/s and facts."""
    import keras
    import numpy as np
    import tensorflow as tf

    from workbench.model.builder import build_model
    from workbench.model.config import ModelConfig, preset
    from workbench.model.distribution import choose_distribution

    dist = choose_distribution(mode)  # before any other TF work: "cpu:N" splits the CPU
    cfg, _ = preset(preset_name)
    changes = {"weights": None} | ({"input_size": [size, size]} if size else {})
    cfg = ModelConfig.from_dict({**cfg.to_dict(), **changes})
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    global_batch = dist.global_batch(batch)
    with dist.strategy.scope():
        model = build_model(cfg)
        train_model = keras.Model(model.input, model.output["logit"])
        train_model.compile(
            optimizer=keras.optimizers.Adam(dist.scaled_lr(1e-4)),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
    w, h = cfg.input_size
    rng = np.random.default_rng(0)
    x = {k: rng.normal(0, 50, (global_batch * 2, h, w, 3)).astype("float32") for k in ("pre", "post")}
    y = rng.integers(0, 2, (global_batch * 2, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(global_batch).prefetch(4)
    train_model.fit(data, epochs=1, steps_per_epoch=min(4, steps), verbose=0)  # tracing, not timed
    t0 = time.monotonic()
    loss = train_model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0).history["loss"][-1]
    return {
        "mode": mode,
        "strategy": dist.strategy_name,
        "replicas": dist.replicas,
        "devices": list(dist.devices),
        "global_batch": global_batch,
        "pairs_per_s": steps * global_batch / (time.monotonic() - t0),
        "loss": float(loss),
    }


def _start_worker(
    mode: str, args: argparse.Namespace, preset_name: str, gpus: str | None
) -> subprocess.Popen:
    """This script in ``--replica-worker`` mode, optionally pinned to ``gpus`` (CUDA_VISIBLE_DEVICES)."""
    env = dict(os.environ) | ({"CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else {})
    command = [sys.executable, __file__, "--replica-worker", mode, "--preset", preset_name]
    command += ["--batch", str(args.batch), "--steps", str(args.steps)]
    command += ["--size", str(args.size)] if preset_name == "card" else []
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"replica worker failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def report_distribution(args: argparse.Namespace) -> None:
    """The multi-device section (see the module docstring); prints one line per measurement."""
    import tensorflow as tf

    n_gpus = len(tf.config.list_physical_devices("GPU"))
    print(f"\nmulti-device: {n_gpus} GPU(s) visible")
    if n_gpus == 0:
        print("  no GPU visible: smoke check of the strategy path on 2 logical CPU devices (cpu preset)")
        r = _result(_start_worker("cpu:2", args, "cpu", None))
        ok = r["replicas"] == 2 and math.isfinite(r["loss"])
        print(
            f"  {r['strategy']} over {r['devices']}: replicas {r['replicas']}, global batch "
            f"{r['global_batch']}, {r['pairs_per_s']:.1f} pairs/s, loss {r['loss']:.3f} -> "
            f"{'ok' if ok else 'FAILED'}"
        )
        return
    if n_gpus == 1:
        print("  one GPU: nothing to mirror; one worker on it is the deployment (no pinning needed)")
        return
    one = _result(_start_worker("off", args, "card", "0"))
    mirrored = _result(_start_worker("auto", args, "card", None))
    pinned = [_start_worker("off", args, "card", str(i)) for i in range(n_gpus)]
    pinned_total = sum(_result(p)["pairs_per_s"] for p in pinned)
    speedup = mirrored["pairs_per_s"] / one["pairs_per_s"]
    print(f"  one GPU                 {one['pairs_per_s']:9.1f} pairs/s (batch {one['global_batch']})")
    print(
        f"  MirroredStrategy x{n_gpus}     {mirrored['pairs_per_s']:9.1f} pairs/s "
        f"(global batch {mirrored['global_batch']}): speed-up {speedup:.2f}x, "
        f"scaling efficiency {speedup / n_gpus:.0%}"
    )
    print(
        f"  {n_gpus} pinned workers       {pinned_total:9.1f} pairs/s in total "
        f"({pinned_total / one['pairs_per_s'] / n_gpus:.0%} of {n_gpus}x one GPU; separate jobs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="card preset throughput: workbench pipeline vs bare Keras")
    parser.add_argument("--steps", type=int, default=300, help="training steps to time")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="input width = height")
    parser.add_argument("--images", type=int, default=256, help="distinct image pairs written to disk")
    parser.add_argument("--no-mixed-precision", action="store_true")
    parser.add_argument("--imagenet-weights", default=os.environ.get("WORKBENCH_IMAGENET_WEIGHTS"))
    parser.add_argument("--only-distribution", action="store_true", help="just the multi-device section")
    parser.add_argument("--replica-worker", metavar="MODE", help=argparse.SUPPRESS)  # one measurement
    parser.add_argument("--preset", default="card", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica_worker:
        size = args.size if args.preset == "card" else None
        print(json.dumps(replica_throughput(args.replica_worker, args.preset, args.batch, args.steps, size)))
        return 0
    report_distribution(args)  # first: its workers need GPUs this process has not claimed yet
    if args.only_distribution:
        return 0

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
