"""The bundle's portable model: ``model.onnx``, written with tf2onnx and run with onnxruntime, no TensorFlow.

Why ONNX (and not LiteRT): tf2onnx converts both presets (the card preset's two ResNet50s and its
MultiHeadAttention included) and the graph runs any batch size, reproducing the Keras logits to ~1e-6
(cpu preset) and ~1e-5 (card preset). The LiteRT converter lowers the head's additive embedding
tables (``EinsumDense("bnd,d->bnd")``) to BATCH_MATMUL with wrong shapes: with an open batch size the
file is written but no batch size can run it ("accum_dim_lhs != accum_dim_rhs", with or without
XNNPACK); with a fixed batch the converter itself refuses it ("tf.BatchMatMulV2 op found invalid
output dimension").

Export side (:func:`write_onnx`, needs TensorFlow and tf2onnx): convert ``serve(pre, post)`` to ONNX
opset :data:`OPSET` with inputs ``pre``/``post`` (preprocessed float32 batches) and outputs
``logit``/``probability``, then run the file with onnxruntime on probe inputs and keep it only when
the logits match the Keras model's within :data:`ONNX_TOLERANCE` (else no file, and the reason goes
into the manifest, as for ``model.h5``).

Prediction side (:class:`OnnxModel`, :func:`preprocess_numpy`): NumPy, Pillow and onnxruntime only.
Images are decoded and resized by :func:`workbench.data.images.load_rgb` (the same Pillow code the Keras
path runs inside ``tf.numpy_function``) and scaled by the NumPy twin of the backbone's
``preprocess_fn`` (same float32 operations, so the tensors are bit-identical).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

ONNX_FILE = "model.onnx"
OPSET = 17
ONNX_TOLERANCE = 1e-3  # max |logit difference| on the probe inputs for the file to be kept
#: ImageNet channel means (BGR order) of keras.applications' "caffe" preprocessing.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


# ------------------------------------------------------------------------------------------------
# Preprocessing without TensorFlow


def preprocess_numpy(x: np.ndarray, backbone: str) -> np.ndarray:
    """``preprocess_fn(backbone)`` on float32 RGB pixels in [0, 255], in NumPy (float32 throughout)."""
    x = np.asarray(x, dtype=np.float32)
    if backbone in ("small_cnn", "mobilenet_v2"):
        return x / np.float32(127.5) - np.float32(1.0)
    if backbone == "resnet50":
        return x[..., ::-1] + np.asarray([-m for m in CAFFE_MEAN_BGR], dtype=np.float32)
    if backbone == "efficientnetb0":
        return x
    raise WorkbenchError(f"no NumPy preprocessing for backbone {backbone!r}")


def load_inputs(
    pairs: Sequence[tuple[str | Path, str | Path]],
    size: tuple[int, int],
    backbone: str,
    align: bool = False,
) -> dict[str, np.ndarray]:
    """Decode, resize (and with ``align`` align, as preprocessing.json says) and preprocess pairs into
    {"pre", "post"} float32 batches (no TensorFlow)."""
    from workbench.model.pipeline import load_arrays

    pre, post = load_arrays(list(pairs), size, align=align)
    return {
        "pre": preprocess_numpy(pre.astype(np.float32), backbone),
        "post": preprocess_numpy(post.astype(np.float32), backbone),
    }


# ------------------------------------------------------------------------------------------------
# Running model.onnx


class OnnxModel:
    """``model.onnx`` in an onnxruntime CPU session: ``logits({"pre", "post"}) -> float64 (N,)``."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - any load failure is reported as one line
            raise WorkbenchError(
                f"{ONNX_FILE}: onnxruntime cannot load it ({type(exc).__name__}: {exc})"
            ) from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"pre", "post"} or "logit" not in {o.name for o in self.session.get_outputs()}:
            raise WorkbenchError(
                f"{ONNX_FILE}: expected inputs pre/post and a logit output, got {sorted(inputs)}"
            )
        h, w = inputs["pre"][1:3]
        self.input_size = (int(w), int(h))  # (width, height)

    def logits(self, x: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Raw logits of preprocessed batches, float64, in order."""
        n = int(x["pre"].shape[0])
        out = []
        for i in range(0, n, batch_size):
            feed = {k: np.ascontiguousarray(v[i : i + batch_size], dtype=np.float32) for k, v in x.items()}
            out.append(np.asarray(self.session.run(["logit"], feed)[0]).reshape(-1))
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0,), np.float64)


# ------------------------------------------------------------------------------------------------
# Writing model.onnx (export side: TensorFlow and tf2onnx)


def write_onnx(model: Any, target: Path, probe: dict[str, np.ndarray]) -> dict[str, Any]:
    """Convert the Keras model to ``target`` and check it with onnxruntime on ``probe``.

    Returns the manifest entry ``{"written", "reason", "max_logit_difference", "opset", "converter"}``;
    on any failure (converter missing, a layer it cannot convert, outputs that differ) no file is left.
    """
    entry: dict[str, Any] = {"written": False, "reason": None, "opset": OPSET}
    try:
        import tensorflow as tf
        import tf2onnx

        entry["converter"] = f"tf2onnx {tf2onnx.__version__}"
        h, w = (int(v) for v in model.input["pre"].shape[1:3])
        spec = (
            tf.TensorSpec((None, h, w, 3), tf.float32, name="pre"),
            tf.TensorSpec((None, h, w, 3), tf.float32, name="post"),
        )

        @tf.function(input_signature=spec)
        def serve(pre: Any, post: Any) -> dict[str, Any]:
            out = model({"pre": pre, "post": post}, training=False)
            return {"logit": out["logit"], "probability": out["probability"]}

        tf2onnx.convert.from_function(serve, input_signature=spec, opset=OPSET, output_path=str(target))
        got = OnnxModel(target).logits(probe)
        want = np.asarray(model(probe, training=False)["logit"], dtype=np.float64).reshape(-1)
        diff = float(np.max(np.abs(got - want)))
    except Exception as exc:  # noqa: BLE001 - any failure means "no ONNX file", recorded with its reason
        target.unlink(missing_ok=True)
        entry["reason"] = f"conversion to ONNX failed ({type(exc).__name__}: {str(exc)[:300]})"
        return entry
    entry["max_logit_difference"] = diff
    if not np.isfinite(diff) or diff > ONNX_TOLERANCE:
        target.unlink(missing_ok=True)
        entry["reason"] = f"the ONNX model's logits differ from Keras by {diff:.3g} (limit {ONNX_TOLERANCE})"
        return entry
    entry["written"] = True
    return entry
