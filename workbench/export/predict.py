"""Standalone prediction from an exported bundle: no database, no settings, only the bundle's files.

For library users this is the small Python function to call::

    from workbench.export.predict import load_bundle

    bundle = load_bundle("exports/v7")           # a bundle folder or its .zip
    result = bundle.predict_pair("case1/pre.jpg", "case1/post.jpg")
    # {'raw_probability': 0.08, 'logit': -2.4, 'calibrated_probability': 0.11,
    #  'threshold': 0.09, 'decision': 'positive'}
    rows = bundle.predict_csv("pairs.csv")        # columns pre_path,post_path[,case_id]

:func:`load_bundle` first checks every file against the sha256 recorded in ``manifest.json`` and
refuses a missing, modified or unlisted file, naming it; only then does it load the model, with
``keras.models.load_model(path, safe_mode=True, compile=False)``. Predictions use the workbench's
own inference function (:func:`workbench.model.inference.predict_pairs`: decode and resize with
``workbench.model.pipeline.load_pair``, then ``preprocess_fn(backbone)``), so a bundle gives the same
raw probability as the workbench's stored prediction for the same pair. The calibrator is rebuilt
from ``calibration.json`` with :func:`~workbench.calibration.calibrators.calibrator_from_json` (pure
NumPy) and the decision is ``calibrated_probability >= threshold``.

``runtime="onnx"`` (``workbench predict --runtime onnx``) runs ``model.onnx`` with onnxruntime instead
and never imports TensorFlow or Keras: decode and resize with the same ``load_rgb`` (Pillow), the
backbone's preprocessing in NumPy (:func:`workbench.export.portable.preprocess_numpy`, bit-identical
tensors), the same NumPy calibrator and threshold. Its raw probabilities agree with the Keras path's
to ~1e-6; the Keras path stays the default because it is the one that reproduces the workbench's
stored predictions exactly and every bundle has it.

The checksums detect accidental or casual modification; they are not a signature (whoever can
edit the files can also edit ``manifest.json``). Bundles may come from others, so loading never runs
code from them: only ``model.keras`` is opened, with ``safe_mode=True`` (a model holding a ``Lambda``
layer or other serialized Python is refused, not run), by Keras ``>= MIN_KERAS`` (older releases have
published ``safe_mode`` bypasses); the bundle's legacy ``model.h5`` is shipped for other tools and never
loaded here (HDF5 loading ignores ``safe_mode``, CVE-2025-9905).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from scipy.special import expit

from workbench.calibration.calibrator_base import Calibrator
from workbench.calibration.calibrators import calibrator_from_json
from workbench.errors import ValidationError, WorkbenchError
from workbench.files import sha256_file

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "workbench-bundle"
REQUIRED_FILES = ("model.keras", "calibration.json", "threshold.json", "preprocessing.json")
RUNTIMES = ("keras", "onnx")
#: Oldest Keras that may open a bundle. Earlier releases have published ``safe_mode`` bypasses:
#: CVE-2025-1550 (fixed in 3.9), CVE-2025-8747 and CVE-2025-9906 (3.11), legacy HDF5 ignoring
#: ``safe_mode`` CVE-2025-9905 (3.11.3), TFSMLayer and archive path traversal CVE-2026-1462 (3.14).
MIN_KERAS = (3, 14)
#: Keys of one prediction, in CSV column order (predict_csv adds case_id, pre_path and post_path first).
PREDICTION_FIELDS = ("raw_probability", "logit", "calibrated_probability", "threshold", "decision")


def _read_json(root: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads((root / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"{name}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{name}: expected a JSON object")
    return data


def verify_bundle(root: Path) -> dict[str, Any]:
    """Check every file of the bundle folder ``root`` against ``manifest.json``; return the manifest.

    WorkbenchError naming the first problem: manifest missing, a listed file missing or with another
    sha256, or a file present that the manifest does not list.
    """
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise WorkbenchError(f"{root}: no {MANIFEST}; not a workbench bundle folder")
    manifest = _read_json(root, MANIFEST)
    if manifest.get("format") != BUNDLE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise WorkbenchError(f"{MANIFEST}: not a {BUNDLE_FORMAT} manifest (no 'files' table)")
    files: dict[str, Any] = manifest["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise WorkbenchError(f"{MANIFEST}: does not list {name}; the bundle is incomplete")
    for name, entry in sorted(files.items()):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise WorkbenchError(f"{MANIFEST}: unsafe file name {name!r}")
        path = root.joinpath(*rel.parts)
        if not path.is_file():
            raise WorkbenchError(f"{name}: missing from the bundle")
        expected = entry.get("sha256") if isinstance(entry, dict) else entry
        if sha256_file(path) != expected:
            raise WorkbenchError(f"{name}: sha256 mismatch (bundle modified?)")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    extra = sorted(present - set(files))
    if extra:
        raise WorkbenchError(f"{extra[0]}: not listed in {MANIFEST} (bundle modified?)")
    return manifest


@dataclass
class Bundle:
    """A verified, loaded bundle: its model (Keras, or :class:`~workbench.export.portable.OnnxModel` for
    ``runtime="onnx"``), calibrator, threshold and preprocessing."""

    path: Path
    model: Any
    manifest: dict[str, Any]
    calibration: dict[str, Any]
    threshold_info: dict[str, Any]
    preprocessing: dict[str, Any]
    calibrator: Calibrator
    runtime: str = "keras"

    @property
    def threshold(self) -> float:
        return float(self.threshold_info["value"])

    @property
    def backbone(self) -> str:
        return str(self.preprocessing["backbone"])

    @property
    def model_version(self) -> int | None:
        return self.manifest.get("model_version")

    def predict_pairs(
        self, pairs: Sequence[tuple[str | Path, str | Path]], batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Predict a list of (pre, post) image paths, in order (see :meth:`predict_pair` for the keys)."""
        if not pairs:
            return []
        logit = self.logits(pairs, batch_size=batch_size)
        raw = expit(logit)
        calibrated = self.calibrator.transform(logit)
        t = self.threshold
        return [
            {
                "raw_probability": float(raw[i]),
                "logit": float(logit[i]),
                "calibrated_probability": float(calibrated[i]),
                "threshold": t,
                "decision": "positive" if calibrated[i] >= t else "negative",
            }
            for i in range(raw.shape[0])
        ]

    def logits(self, pairs: Sequence[tuple[str | Path, str | Path]], batch_size: int = 32) -> np.ndarray:
        """Raw float64 logits of (pre, post) image paths with this bundle's runtime."""
        if self.runtime == "onnx":
            from workbench.export.portable import load_inputs
            from workbench.model.pipeline import check_pairs

            size = self.preprocessing["input_size"]
            inputs = load_inputs(
                check_pairs(pairs),
                (int(size["width"]), int(size["height"])),
                self.backbone,
                align=bool(self.preprocessing.get("align_shots", False)),
            )
            return self.model.logits(inputs, batch_size=batch_size)
        from workbench.model.inference import predict_pairs

        out = predict_pairs(
            self.model, list(pairs), batch_size=batch_size, mc_samples=0, backbone=self.backbone
        )
        return np.asarray(out["logit"], dtype=np.float64)

    def predict_pair(self, pre_path: str | Path, post_path: str | Path) -> dict[str, Any]:
        """One pair: ``raw_probability``, ``logit``, ``calibrated_probability``, ``threshold`` and
        ``decision`` ("positive" when the calibrated probability is at least the threshold)."""
        return self.predict_pairs([(pre_path, post_path)])[0]

    def predict_csv(self, csv_path: str | Path, batch_size: int = 32) -> list[dict[str, Any]]:
        """Predict every row of a CSV with columns ``pre_path,post_path[,case_id]`` (paths relative to the
        CSV's folder unless absolute). Each result also holds ``case_id`` (None when the column is
        absent), ``line`` and the resolved ``pre_path`` and ``post_path``."""
        path = Path(csv_path)
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = [h.strip() for h in (reader.fieldnames or [])]
                rows = list(reader)
        except FileNotFoundError:
            raise ValidationError(f"CSV not found: {path}") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ValidationError(f"{path}: cannot read the CSV ({exc})") from None
        missing = [c for c in ("pre_path", "post_path") if c not in header]
        if missing:
            raise ValidationError(
                f"{path}: missing column(s) {', '.join(missing)}; expected pre_path,post_path[,case_id]"
            )
        if not rows:
            raise ValidationError(f"{path}: no rows to predict")
        base = path.parent
        items: list[dict[str, Any]] = []
        for line, row in enumerate(rows, start=2):
            clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not clean["pre_path"] or not clean["post_path"]:
                raise ValidationError(f"{path}, line {line}: pre_path and post_path are required")
            items.append(
                {
                    "case_id": clean.get("case_id") or None,
                    "line": line,
                    "pre_path": str(base / clean["pre_path"]),
                    "post_path": str(base / clean["post_path"]),
                }
            )
        preds = self.predict_pairs([(i["pre_path"], i["post_path"]) for i in items], batch_size=batch_size)
        return [{**item, **pred} for item, pred in zip(items, preds, strict=True)]


def _bundle_root(extracted: Path) -> Path:
    if (extracted / MANIFEST).is_file():
        return extracted
    subdirs = [p for p in extracted.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise WorkbenchError(f"the zip holds no {MANIFEST} at its top level or in a single folder")


def _load_onnx(root: Path, manifest: dict[str, Any], preprocessing: dict[str, Any]) -> Any:
    """The bundle's ``model.onnx`` in an onnxruntime session, checked against preprocessing.json."""
    from workbench.export.portable import ONNX_FILE, OnnxModel

    if ONNX_FILE not in manifest["files"]:
        why = (manifest.get("onnx") or {}).get("reason") or "exported before ONNX support"
        raise WorkbenchError(f"{ONNX_FILE}: not in this bundle ({why}); use --runtime keras")
    model = OnnxModel(root / ONNX_FILE)
    size = preprocessing.get("input_size") or {}
    if (size.get("width"), size.get("height")) != model.input_size:
        raise WorkbenchError(
            f"preprocessing.json ({size}) does not match {ONNX_FILE} (input {model.input_size[0]}x{model.input_size[1]})"
        )
    return model


def check_keras_version(version: str) -> None:
    """Refuse a Keras older than :data:`MIN_KERAS` (WorkbenchError naming both versions and why)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < MIN_KERAS:
        floor = ".".join(map(str, MIN_KERAS))
        raise WorkbenchError(
            f"Keras {version} is installed; opening a bundle needs keras>={floor} (older releases can be "
            f"made to run code from a model file despite safe_mode). Upgrade: pip install 'keras>={floor}'"
        )


def load_keras_model(path: Path) -> Any:
    """``path`` (a ``.keras`` file) loaded without running code from it; WorkbenchError otherwise.

    A model holding serialized Python (a ``Lambda`` layer, a custom object) is refused by
    ``safe_mode=True`` before anything of it runs; the error says so instead of passing Keras' text on.
    """
    import keras

    check_keras_version(keras.__version__)
    if path.suffix != ".keras":
        raise WorkbenchError(f"{path.name}: only a .keras model is loaded (never .h5 or a SavedModel)")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported as one line
        if "safe_mode" in str(exc):
            raise WorkbenchError(
                f"{path.name}: refused: the model holds executable Python code (e.g. a Lambda layer), which "
                "is never run from a bundle; a workbench export has none, so this bundle was made or "
                "altered elsewhere: do not use it"
            ) from None
        raise WorkbenchError(f"{path.name}: Keras cannot load it ({type(exc).__name__}: {exc})") from None


def _load_folder(root: Path, shown_path: Path, runtime: str = "keras") -> Bundle:
    if runtime not in RUNTIMES:
        raise ValidationError(f"runtime: must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    manifest = verify_bundle(root)
    calibration = _read_json(root, "calibration.json")
    threshold_info = _read_json(root, "threshold.json")
    preprocessing = _read_json(root, "preprocessing.json")
    try:
        calibrator = calibrator_from_json(calibration["parameters"])
        threshold = float(threshold_info["value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkbenchError(f"calibration.json/threshold.json: missing or bad field ({exc})") from None
    if not 0.0 <= threshold <= 1.0:
        raise WorkbenchError(f"threshold.json: value {threshold} is not in [0, 1]")
    if runtime == "onnx":
        model = _load_onnx(root, manifest, preprocessing)
        return Bundle(
            shown_path, model, manifest, calibration, threshold_info, preprocessing, calibrator, runtime
        )
    model = load_keras_model(root / "model.keras")
    from workbench.model.builder import aligns_shots, backbone_from_model

    size = preprocessing.get("input_size") or {}
    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    if backbone_from_model(model) != preprocessing.get("backbone") or (
        size.get("width"),
        size.get("height"),
    ) != (w, h):
        raise WorkbenchError(
            f"preprocessing.json ({preprocessing.get('backbone')}, {size}) does not match model.keras "
            f"({backbone_from_model(model)}, {w}x{h})"
        )
    declared = bool(preprocessing.get("align_shots", False))
    if aligns_shots(model) != declared:
        raise WorkbenchError(
            f"preprocessing.json (align_shots {declared}) does not match model.keras "
            f"(align_shots {aligns_shots(model)})"
        )
    return Bundle(shown_path, model, manifest, calibration, threshold_info, preprocessing, calibrator)


def load_bundle(path: str | Path, runtime: str = "keras") -> Bundle:
    """Verify (sha256 of every file against manifest.json) and load a bundle folder or ``.zip``.

    ``runtime`` is "keras" (``model.keras``) or "onnx" (``model.onnx`` with onnxruntime; no TensorFlow is
    imported). Uses no database and no settings. WorkbenchError names the offending file, e.g.
    ``model.keras: sha256 mismatch (bundle modified?)``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return _load_folder(path, path, runtime)
    if path.is_file() and zipfile.is_zipfile(path):
        tmp = Path(tempfile.mkdtemp(prefix="workbench-bundle-"))
        try:
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp)  # member names are sanitised by zipfile (no absolute or '..' paths)
            return _load_folder(_bundle_root(tmp), path, runtime)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not path.exists():
        raise WorkbenchError(f"bundle not found: {path}")
    raise WorkbenchError(f"{path}: not a bundle folder or a .zip of one")
