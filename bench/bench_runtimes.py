"""Prediction throughput of the bundle's runtimes: Keras (``model.keras``) vs ONNX (``model.onnx``).

Usage::

    python bench/bench_runtimes.py [--pairs 200] [--repeats 3] [--batch 32] [--card-size 64] [--budget-s 300]

For each preset (cpu at its 96x96; card, two ResNet50 backbones with random weights, at ``--card-size``,
0 to skip) an untrained model is built (throughput does not depend on the weights), saved as
``model.keras`` and converted to ``model.onnx`` as the bundle export does. On ``--pairs`` synthetic JPEG
pairs (128x128, so every image is decoded and resized), median over ``--repeats``:

* end to end, pairs/s: decode + resize + preprocess + model, as ``workbench predict`` runs it (keras:
  ``workbench.model.inference.predict_pairs``, the tf.data pipeline; onnx: Pillow + NumPy +
  onnxruntime, :mod:`workbench.export.portable`). The onnx figures come from a child process that
  never imports TensorFlow, as ``--runtime onnx`` runs (TF's idle thread pools stay out of it);
* model only, pairs/s: the same preprocessed tensors, in batches of ``--batch``;
* cold start, s: a fresh process importing the runtime, loading the model file and predicting one pair
  (what one ``workbench predict --pre --post`` call pays before its first answer);
* parity: max |probability difference| between the two on the same tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
from common import Budget, noise_note, print_machine  # noqa: E402

COLD_KERAS = (
    "import sys, numpy as np, keras\n"
    "m = keras.models.load_model(sys.argv[1], safe_mode=True, compile=False)\n"
    "x = np.load(sys.argv[2])\n"
    "m({'pre': x['pre'][:1], 'post': x['post'][:1]}, training=False)\n"
)
COLD_ONNX = (
    "import sys, numpy as np\n"
    "from workbench.export.portable import OnnxModel\n"
    "x = np.load(sys.argv[2])\n"
    "OnnxModel(sys.argv[1]).logits({'pre': x['pre'][:1], 'post': x['post'][:1]})\n"
    "assert 'tensorflow' not in sys.modules\n"
)


def _pairs(root: Path, n: int) -> list[tuple[str, str]]:
    import csv

    from workbench.data.synth import generate_dataset

    data = generate_dataset(
        root, n=n, positive_rate=0.3, size=(128, 128), image_format="jpg", difficulty="easy"
    )
    with data.manifest.open(newline="") as fh:
        return [(str(root / r["pre_path"]), str(root / r["post_path"])) for r in csv.DictReader(fh)]


def _rate(n: int, seconds: list[float]) -> str:
    return (
        f"{n / float(np.median(seconds)):8.1f} pairs/s (median of {len(seconds)}, {np.median(seconds):.2f} s)"
    )


def onnx_worker(spec_path: str) -> int:
    """Child process (no TensorFlow): time onnxruntime end to end and on given tensors; print JSON."""
    import json

    from workbench.export.portable import OnnxModel, load_inputs

    spec = json.loads(Path(spec_path).read_text())
    pairs = [tuple(p) for p in spec["pairs"]]
    x = dict(np.load(spec["tensors"]))
    ort_model = OnnxModel(spec["onnx"])
    ort_model.logits({k: v[: spec["batch"]] for k, v in x.items()})  # warm-up, outside the timing
    end, only = [], []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        z_e2e = ort_model.logits(
            load_inputs(pairs, tuple(spec["size"]), spec["backbone"]), batch_size=spec["batch"]
        )
        end.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        z = ort_model.logits(x, batch_size=spec["batch"])
        only.append(time.perf_counter() - t0)
    assert "tensorflow" not in sys.modules
    print(json.dumps({"end": end, "only": only, "z_e2e": z_e2e.tolist(), "z": z.tolist()}))
    return 0


def _cold(code: str, model_path: Path, tensors: Path) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, str(model_path), str(tensors)], check=True, env=env, capture_output=True
    )
    return time.perf_counter() - t0


def run_preset(
    name: str, overrides: dict, pairs: list[tuple[str, str]], args: argparse.Namespace, tmp: Path
) -> None:
    from workbench.export.bundle import _probe_inputs
    from workbench.export.portable import load_inputs, write_onnx
    from workbench.model.builder import build_model
    from workbench.model.config import ModelConfig, preset
    from workbench.model.inference import predict_pairs

    cfg, _ = preset(name)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    w, h = cfg.input_size
    print(
        f"\n=== {name} preset: {cfg.backbone}, {w}x{h}, shared backbone {cfg.shared_backbone} ===", flush=True
    )
    model = build_model(cfg)
    keras_path, onnx_path = tmp / f"{name}.keras", tmp / f"{name}.onnx"
    model.save(keras_path)
    t0 = time.perf_counter()
    entry = write_onnx(model, onnx_path, _probe_inputs(model, cfg.backbone))
    if not entry["written"]:
        print(f"  ONNX conversion failed: {entry['reason']}")
        return
    print(
        f"  conversion: {time.perf_counter() - t0:.1f} s with {entry['converter']} (opset {entry['opset']}); "
        f"model.keras {keras_path.stat().st_size / 2**20:.1f} MiB, model.onnx {onnx_path.stat().st_size / 2**20:.1f} MiB",
        flush=True,
    )
    n = len(pairs)
    x = load_inputs(pairs, (w, h), cfg.backbone)
    tensors = tmp / f"{name}_x.npz"
    np.savez(tensors, **x)
    spec = tmp / f"{name}_spec.json"
    spec.write_text(
        json.dumps(
            {
                "pairs": pairs,
                "tensors": str(tensors),
                "onnx": str(onnx_path),
                "size": [w, h],
                "backbone": cfg.backbone,
                "batch": args.batch,
                "repeats": args.repeats,
            }
        )
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec)], check=True, env=env, capture_output=True, text=True
    )
    onnx_out = json.loads(child.stdout.strip().splitlines()[-1])
    z_onnx, z_onnx_e2e = np.asarray(onnx_out["z"]), np.asarray(onnx_out["z_e2e"])

    batches = [{k: v[i : i + args.batch] for k, v in x.items()} for i in range(0, n, args.batch)]
    predict_pairs(model, pairs[: args.batch], batch_size=args.batch, backbone=cfg.backbone)  # warm-up
    model.predict_on_batch(batches[0])
    end_keras, only_keras = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = predict_pairs(model, pairs, batch_size=args.batch, backbone=cfg.backbone)
        end_keras.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        z_keras = np.concatenate(
            [np.asarray(model.predict_on_batch(b)["logit"]).reshape(-1) for b in batches]
        ).astype(np.float64)
        only_keras.append(time.perf_counter() - t0)
    ratio_end = np.median(end_keras) / np.median(onnx_out["end"])
    ratio_only = np.median(only_keras) / np.median(onnx_out["only"])
    print(f"  end to end  keras: {_rate(n, end_keras)}")
    print(f"  end to end  onnx:  {_rate(n, onnx_out['end'])}   onnx / keras = x{ratio_end:.2f}")
    print(f"  model only  keras: {_rate(n, only_keras)}")
    print(f"  model only  onnx:  {_rate(n, onnx_out['only'])}   onnx / keras = x{ratio_only:.2f}")

    p_keras, p_onnx = 1 / (1 + np.exp(-z_keras)), 1 / (1 + np.exp(-z_onnx))
    p_e2e_keras, p_e2e_onnx = np.asarray(out["probability"]), 1 / (1 + np.exp(-z_onnx_e2e))
    print(
        f"  parity: max |p_onnx - p_keras| {np.max(np.abs(p_onnx - p_keras)):.2e} on the same tensors, "
        f"{np.max(np.abs(p_e2e_onnx - p_e2e_keras)):.2e} end to end; max |logit difference| "
        f"{np.max(np.abs(z_onnx - z_keras)):.2e} (logits in [{z_keras.min():.2f}, {z_keras.max():.2f}])"
    )
    np.savez(tensors, pre=x["pre"][:1], post=x["post"][:1])
    cold_keras = _cold(COLD_KERAS, keras_path, tensors)
    cold_onnx = _cold(COLD_ONNX, onnx_path, tensors)
    print(
        f"  cold start (fresh process: import, load, one pair): keras {cold_keras:.1f} s, onnx {cold_onnx:.1f} s "
        "(no TensorFlow imported)"
    )
    print(f"  {noise_note()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return onnx_worker(argv[1])
    parser = argparse.ArgumentParser(description="Keras vs ONNX prediction throughput")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--card-size", type=int, default=64, help="card preset input side (0: skip the card preset)"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="overall wall-clock budget")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.repeats < 1 or args.batch < 1:
        parser.error("--pairs, --repeats and --batch must be positive")
    budget = Budget(args.budget_s)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("bench_runtimes: workbench predict runtimes, keras (model.keras) vs onnx (model.onnx, onnxruntime)")
    print_machine()
    from importlib import metadata

    print(f"  onnxruntime  {metadata.version('onnxruntime')}\n  tf2onnx      {metadata.version('tf2onnx')}")
    print(f"  {noise_note()}")
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as d:
        tmp = Path(d)
        pairs = _pairs(tmp / "pairs", args.pairs)
        print(
            f"  {len(pairs)} synthetic JPEG pairs, 128x128; batch {args.batch}; {args.repeats} repeats",
            flush=True,
        )
        run_preset("cpu", {}, pairs, args, tmp)
        if args.card_size:
            if budget.exhausted(reserve=240):
                print(
                    f"\n=== card preset: skipped, {budget.left():.0f} s of the budget left (needs ~240 s) ==="
                )
            else:
                run_preset(
                    "card",
                    {"weights": None, "input_size": [args.card_size, args.card_size]},
                    pairs,
                    args,
                    tmp,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
