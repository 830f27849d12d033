"""Export a model version as a self-contained, checksummed bundle folder (and optionally a zip).

Bundle layout::

    model.keras          the verified training artifact (byte copy; loads with safe_mode=True)
    model.h5             legacy HDF5 copy for other tools, only where Keras writes AND reads it back with
                         equal outputs; the workbench never loads it to predict (HDF5 ignores safe_mode)
    model.onnx           portable copy (tf2onnx, opset 17) for onnxruntime without TensorFlow, only where
                         its logits match the Keras model's (see portable.py); ``workbench predict
                         --runtime onnx`` runs it
    saved_model/         TF SavedModel; signature "serve" (also "serving_default"): inputs "pre" and
                         "post" (preprocessed float32 batches) -> {"logit", "probability"}; signature
                         "serve_images": inputs "pre" and "post" (1-D batches of encoded JPEG/PNG
                         bytes) -> {"logit", "calibrated_probability", "decision"}, with decoding,
                         resizing, preprocessing, calibrator and threshold inside the graph (serving.py)
    calibration.json     selected calibrator: method, parameters (the Calibration row's JSON), fitted on
    threshold.json       operating threshold, policy, achieved sensitivity/specificity with intervals
    preprocessing.json   input size, backbone, preprocessing function, channel order, resize method
    README.md            model card (Hugging Face format, see card.py)
    manifest.json        sha256 of every other file, provenance, data counts, lineage, label counts

The folder is built under ``out_dir.parent/.tmp-<name>-<uuid>`` and renamed into place, so a reader
never sees half a bundle (build folders a killed export left behind are removed by a later export); an existing non-empty ``out_dir`` is refused. Only admins (or the local
operator) may export.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from workbench.config import Settings
from workbench.db.engine import session_scope
from workbench.db.models import ModelVersion, utcnow
from workbench.errors import ConflictError, WorkbenchError
from workbench.export.card import render_card
from workbench.export.facts import collect_facts
from workbench.export.portable import ONNX_FILE, write_onnx
from workbench.export.predict import load_keras_model
from workbench.export.serving import SIGNATURE, add_image_endpoint
from workbench.files import atomic_replace, sha256_file
from workbench.jobs.context import JobContext
from workbench.jobs.params import ExportParams
from workbench.jobs.results import ExportResult
from workbench.model.description import preprocessing_spec
from workbench.model.registry import artifact_dir, verify_artifact
from workbench.users import authorize_actor

BUNDLE_FORMAT = "workbench-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
H5_TOLERANCE = 1e-5


@dataclass
class BundleInfo:
    """What an export wrote: the folder, the zip (if any), and every file with its sha256."""

    path: Path
    model_version: int
    files: dict[str, str]
    h5_written: bool
    h5_note: str | None
    evaluation_split: str | None
    zip_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    onnx: dict[str, Any] = field(default_factory=dict)  # the manifest's "onnx" entry (written, reason, ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "zip_path": str(self.zip_path) if self.zip_path else None,
            "model_version": self.model_version,
            "files": dict(self.files),
            "h5_written": self.h5_written,
            "h5_note": self.h5_note,
            "evaluation_split": self.evaluation_split,
            "notes": list(self.notes),
            "onnx": dict(self.onnx),
        }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _probe_inputs(model: Any, backbone: str, n: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic preprocessed inputs in the model's real input domain (random RGB through preprocess)."""
    from workbench.model.builder import preprocess_fn

    prep = preprocess_fn(backbone)
    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    rng = np.random.default_rng(seed)
    return {
        side: np.asarray(prep(rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)), dtype=np.float32)
        for side in ("pre", "post")
    }


def _outputs(model: Any, x: dict[str, np.ndarray]) -> np.ndarray:
    out = model(x, training=False)
    return np.asarray(out["logit"], dtype=np.float64).reshape(-1)


def _write_h5(model: Any, target: Path, probe: dict[str, np.ndarray]) -> tuple[bool, str | None]:
    """Save the legacy .h5 and read it back; keep it only when the outputs match. (written, reason)."""
    import keras

    try:
        model.save(target, include_optimizer=False)
        again = keras.models.load_model(target, compile=False)
        diff = float(np.max(np.abs(_outputs(again, probe) - _outputs(model, probe))))
    except Exception as exc:  # noqa: BLE001 - any failure means "no h5", recorded with its reason
        target.unlink(missing_ok=True)
        return (
            False,
            f"Keras could not write and read back the legacy HDF5 format ({type(exc).__name__}: {exc})",
        )
    if not np.isfinite(diff) or diff > H5_TOLERANCE:
        target.unlink(missing_ok=True)
        return False, f"the HDF5 round trip changed the outputs (max logit difference {diff:.3g})"
    return True, None


def _write_saved_model(
    model: Any,
    target: Path,
    *,
    backbone: str,
    calibration_parameters: dict[str, Any],
    threshold: float,
    aligned: bool = False,
) -> None:
    """TF SavedModel with ``serve(pre, post) -> {"logit", "probability"}`` (also ``serving_default``) and,
    unless the model aligns its shots, ``serve_images(pre, post)`` on encoded images -> {"logit",
    "calibrated_probability", "decision"}. Shot alignment (OpenCV) cannot run inside the graph, so an
    aligned model's bundle serves preprocessed, aligned pixels only (``serve``)."""
    import keras
    import tensorflow as tf

    h, w = (int(v) for v in model.input["pre"].shape[1:3])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(pre: Any, post: Any) -> dict[str, Any]:
        out = model({"pre": pre, "post": post}, training=False)
        return {"logit": out["logit"], "probability": out["probability"]}

    archive.add_endpoint(
        "serve",
        serve,
        input_signature=[
            tf.TensorSpec((None, h, w, 3), tf.float32, name="pre"),
            tf.TensorSpec((None, h, w, 3), tf.float32, name="post"),
        ],
    )
    if not aligned:
        add_image_endpoint(
            archive,
            model,
            backbone=backbone,
            calibration_parameters=calibration_parameters,
            threshold=threshold,
        )
    archive.write_out(str(target), verbose=False)


def _file_hashes(root: Path) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"sha256", "bytes"}} for every file under ``root`` except the manifest."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def _check_target(out_dir: Path, make_zip: bool) -> Path | None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConflictError(f"export target {out_dir} exists and is not a folder; choose a new folder")
        if any(out_dir.iterdir()):
            raise ConflictError(f"export target {out_dir} is not empty; choose a new or empty folder")
    zip_path = out_dir.with_name(out_dir.name + ".zip") if make_zip else None
    if zip_path is not None and zip_path.exists():
        raise ConflictError(f"{zip_path} already exists; remove it or choose another export folder")
    return zip_path


def _zip_folder(folder: Path, zip_path: Path) -> None:
    """Zip ``folder`` as ``<name>/...`` to ``zip_path`` via a temporary name and rename."""
    with (
        atomic_replace(zip_path, suffix=".tmp.zip") as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf,
    ):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")


#: A build folder untouched this long belongs to an export that was killed (a live export adds files
#: far more often, its slowest step, the ONNX conversion, included).
ABANDONED_BUILD_S = 3600


def _build_prefix(out_dir: Path) -> str:
    return f".tmp-{out_dir.name}-"


def _remove_abandoned_builds(out_dir: Path) -> None:
    """Delete build folders of earlier exports to ``out_dir`` that were killed mid-build (a killed
    process cannot clean up after itself); recent ones may belong to a live export and are kept."""
    cutoff = time.time() - ABANDONED_BUILD_S
    for old in out_dir.parent.glob(f"{_build_prefix(out_dir)}*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)


def export_bundle(
    engine: Engine,
    settings: Settings,
    version_id: int,
    out_dir: Path | str,
    *,
    actor: str,
    make_zip: bool = False,
    license_id: str = "mit",
) -> BundleInfo:
    """Write the bundle of a ready, calibrated version to ``out_dir`` (see the module docstring).

    Raises PermissionDenied (not an admin), NotFoundError, WorkbenchError (not ready, not calibrated,
    artifact missing or modified) or ConflictError (``out_dir`` not empty, zip already there).
    """
    authorize_actor(engine, actor, "export")
    out_dir = Path(out_dir).expanduser().absolute()
    zip_path = _check_target(out_dir, make_zip)
    facts = collect_facts(engine, version_id)
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        assert version is not None
        artifact, expected = Path(version.artifact_uri or ""), version.artifact_sha256
    try:
        expected_dir = artifact_dir(settings, version_id)
    except WorkbenchError:  # a remote artifact root: the recorded local path is all we can check
        expected_dir = artifact.parent
    if artifact.parent != expected_dir:
        # Not fatal (the artifact root may have moved), but worth saying in the manifest.
        facts.setdefault("notes", []).append(
            f"artifact {artifact} is outside the artifact root ({expected_dir})"
        )
    verify_artifact(artifact, expected)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(out_dir)
    tmp = out_dir.parent / f"{_build_prefix(out_dir)}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        shutil.copyfile(artifact, tmp / "model.keras")
        if sha256_file(tmp / "model.keras") != expected:
            raise WorkbenchError(f"copy of {artifact} does not match its recorded sha256 (disk error?)")
        model = load_keras_model(tmp / "model.keras")  # Keras floor and safe_mode, as for prediction
        from workbench.model.builder import aligns_shots

        aligned = aligns_shots(model)
        backbone = facts["backbone"]
        input_size = (facts["config"].get("model") or {}).get("input_size")
        if input_size is None:
            h, w = (int(v) for v in model.input["pre"].shape[1:3])
            input_size = [w, h]
        probe = _probe_inputs(model, backbone)
        h5_written, h5_note = _write_h5(model, tmp / "model.h5", probe)
        onnx = write_onnx(model, tmp / ONNX_FILE, probe)
        calibration = facts["calibration"]
        _write_saved_model(
            model,
            tmp / "saved_model",
            backbone=backbone,
            calibration_parameters=calibration["parameters"],
            threshold=float(facts["threshold"]["value"]),
            aligned=aligned,
        )

        _write_json(
            tmp / "calibration.json",
            {
                "method": calibration["method"],
                "parameters": calibration["parameters"],
                "fitted_on": calibration["fitted_on"],
                "selection_rule": calibration["selection_rule"],
                "input": "raw logit (the model's 'logit' output, float64)",
                "applies": "workbench.calibration.calibrators.calibrator_from_json(parameters).transform(z)",
            },
        )
        _write_json(tmp / "threshold.json", facts["threshold"])
        _write_json(tmp / "preprocessing.json", preprocessing_spec(backbone, input_size, aligned))
        h5 = {"written": h5_written, "reason": h5_note}
        signatures = {
            "serve": "pre, post: float32 (batch, height, width, 3) preprocessed -> logit, probability"
        }
        serving: dict[str, Any] = {"saved_model": "saved_model/", "signatures": signatures}
        if aligned:
            serving["note"] = (
                f"no {SIGNATURE}: the model aligns its shots (preprocessing.json), outside the graph"
            )
        else:
            signatures[SIGNATURE] = (
                "pre, post: string (batch,) encoded JPEG/PNG bytes -> logit (float64), "
                "calibrated_probability (float64), decision ('positive'/'negative')"
            )
        listed = sorted(
            [p.relative_to(tmp).as_posix() for p in tmp.iterdir() if p.is_file()]
            + ["saved_model/", "README.md", MANIFEST]
        )
        (tmp / "README.md").write_text(
            render_card(facts, h5=h5, onnx=onnx, license_id=license_id, files=listed), encoding="utf-8"
        )
        files = _file_hashes(tmp)
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "workbench_version": facts["workbench_version"],
            "created_at": utcnow().isoformat(),
            "created_by": actor,
            "model_version": version_id,
            "source_artifact": {"uri": str(artifact), "sha256": expected},
            "preset": facts["preset"],
            "backbone": backbone,
            "config": facts["config"],
            "h5": h5,
            "onnx": onnx,
            "serving": serving,
            "training_data_counts": facts["data_counts"],
            "lineage": facts["lineage"],
            "label_counts": facts["label_counts"],
            "synthetic_data": facts["synthetic_data"],
            "notes": facts.get("notes", []),
            "files": files,
        }
        _write_json(tmp / MANIFEST, manifest)
        try:
            os.rename(tmp, out_dir)  # replaces an empty folder atomically; fails on a non-empty one
        except OSError as exc:
            raise ConflictError(f"cannot move the bundle into {out_dir}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if zip_path is not None:
        _zip_folder(out_dir, zip_path)
    split = "test" if "test" in facts["evaluations"] else ("val" if "val" in facts["evaluations"] else None)
    return BundleInfo(
        path=out_dir,
        model_version=version_id,
        files={k: v["sha256"] for k, v in files.items()},
        h5_written=h5_written,
        h5_note=h5_note,
        evaluation_split=split,
        zip_path=zip_path,
        notes=list(facts.get("notes", [])),
        onnx=onnx,
    )


def export_job(ctx: JobContext[ExportParams]) -> ExportResult:
    """Job handler (``export`` kind): params ``model_version``, ``out_dir``, optional ``zip``."""
    p = ctx.params
    ctx.progress(0.05, f"exporting model version {p.model_version}")
    info = export_bundle(
        ctx.engine, ctx.settings, p.model_version, Path(p.out_dir), actor=ctx.actor, make_zip=p.zip
    )
    ctx.progress(1.0, f"bundle written to {info.path}")
    return ExportResult.of(info.to_dict())
