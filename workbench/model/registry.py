"""Model registry: every training run is a ``model_versions`` row with an atomically written artifact.

A version is ``training`` while it runs and becomes ``ready`` only after its ``.keras`` file is
complete (renamed into place, readable as a zip, sha256 recorded) *and* it passed the learning check
(``model.learning_check``); a run that did not learn keeps its artifact (for debugging) but ends
``did_not_learn``, with the reasons and what to try in ``error`` and ``metrics["learning_check"]``,
and is never used as a parent, scored, calibrated, queued from or promoted. A failed or cancelled
run leaves a ``failed``/``cancelled`` row and no file under the version's artifact name. The same job
delivered twice never makes two versions (``model_versions.job_id`` is unique).
"""

from __future__ import annotations

import os
import time
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, or_, select

from workbench.config import Settings
from workbench.data.labels import TRAINABLE_SPLITS, cases_with_labels, training_labels
from workbench.db.engine import session_scope
from workbench.db.lookups import get_version
from workbench.db.models import Case, ModelVersion, utcnow
from workbench.errors import ValidationError, WorkbenchError
from workbench.faults import crash_once
from workbench.files import sha256_file
from workbench.jobs.context import JobContext
from workbench.jobs.params import TrainParams
from workbench.jobs.results import TrainResult
from workbench.model.config import ModelConfig, TrainConfig, run_configs
from workbench.model.features import FeatureCacheCancelled
from workbench.model.learning_check import DID_NOT_LEARN, not_ready_message


@dataclass
class LabelledPairs:
    """Labelled cases of one role (train or val): ids, image paths and 0/1 labels, aligned."""

    case_ids: list[int]
    pairs: list[tuple[str, str]]
    labels: list[int]
    patient_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {"n": len(self.labels), "negative": c.get(0, 0), "positive": c.get(1, 0)}


def training_data(engine: Engine) -> tuple[LabelledPairs, LabelledPairs]:
    """(train, val) labelled pairs: train = labelled train + pool cases, val = labelled val cases.

    Uses each case's training label (adjudicated where experts disagreed); test cases are never
    used here. Pairs the pair sanity check flagged (``pair_status`` suspect, or rejected by an expert)
    are left out of both until an expert confirms them (``workbench.data.pair_check``).
    """
    from workbench.data.pair_check import EXCLUDED_FROM_TRAINING

    labels = training_labels(engine, splits=(*TRAINABLE_SPLITS, "val"))
    train = LabelledPairs([], [], [])
    val = LabelledPairs([], [], [])
    sound = or_(Case.pair_status.is_(None), Case.pair_status.not_in(EXCLUDED_FROM_TRAINING))
    with session_scope(engine) as s:
        for case, _value in s.execute(
            cases_with_labels().where(Case.split.in_((*TRAINABLE_SPLITS, "val")), sound)
        ):
            value = labels.get(case.id)
            if value is None:
                continue
            target = val if case.split == "val" else train
            target.case_ids.append(case.id)
            target.pairs.append((case.pre_path, case.post_path))
            target.labels.append(int(value))
            target.patient_ids.append(case.patient_id)
    return train, val


MIN_TUNING_PER_CLASS = 3


def carve_tuning_slice(
    train: LabelledPairs, val: LabelledPairs, fraction: float, seed: int
) -> tuple[LabelledPairs, LabelledPairs, dict[str, Any]]:
    """(fit, tune, record): the cases the weights are fitted on, the cases that pick the epoch, and where
    epoch selection happened. The tuning slice is a patient-grouped, stratified ``fraction`` of training;
    with ``fraction`` 0 or a slice lacking MIN_TUNING_PER_CLASS cases of a class (or leaving fewer than 2
    training positives), validation picks the epoch and is recorded as in-sample for that choice."""
    from workbench.data.splits import tuning_mask

    def subset(keep: list[bool]) -> LabelledPairs:
        pick = [i for i, k in enumerate(keep) if k]
        return LabelledPairs(
            [train.case_ids[i] for i in pick],
            [train.pairs[i] for i in pick],
            [train.labels[i] for i in pick],
            [train.patient_ids[i] for i in pick],
        )

    why = "tuning_fraction is 0"
    if fraction > 0:
        mask = tuning_mask(train.patient_ids, train.labels, fraction, seed)
        fit, tune = subset([not m for m in mask]), subset(mask)
        t, f = tune.counts(), fit.counts()
        if min(t["positive"], t["negative"]) >= MIN_TUNING_PER_CLASS and f["positive"] >= 2:
            record = {"on": "tune", **t, "fraction": fraction, "val_in_sample": False}
            return fit, tune, record
        why = (
            f"a {fraction:.0%} tuning slice would hold {t['positive']} positive and {t['negative']} negative "
            f"case(s) (needs {MIN_TUNING_PER_CLASS} of each)"
        )
    record = {"on": "val", **val.counts(), "fraction": fraction, "val_in_sample": True, "why": why}
    return train, val, record


def artifact_dir(settings: Settings, version_id: int) -> Path:
    """Folder of a version's files under the (local) artifact root."""
    root = settings.artifacts
    if "://" in root:
        raise WorkbenchError(
            f"WORKBENCH_ARTIFACT_ROOT={root}: remote artifact roots are not supported yet; "
            "use a local or shared-volume path"
        )
    return Path(root) / "models" / f"v{version_id}"


def verify_artifact(path: Path, expected_sha256: str | None = None) -> str:
    """Check a ``.keras`` artifact is complete (a readable zip with a config); returns its sha256."""
    if not path.is_file() or path.stat().st_size == 0:
        raise WorkbenchError(f"model artifact missing or empty: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = set(zf.namelist())
    except zipfile.BadZipFile as exc:
        raise WorkbenchError(f"model artifact is not a complete .keras file: {path} ({exc})") from None
    if bad is not None or "config.json" not in names:
        raise WorkbenchError(f"model artifact is corrupt: {path} (bad member {bad or 'config.json missing'})")
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256:
        raise WorkbenchError(f"model artifact {path} does not match its recorded sha256")
    return digest


def fault_point(settings: Settings, name: str, artifact: Path) -> None:
    """Test-only hook (WORKBENCH_FAULT_POINT): at the point ``name``, once per home folder, leave
    ``artifact`` half written and SIGKILL this process, as a crash in the middle of the write would."""

    def _truncate() -> None:
        size = artifact.stat().st_size
        with artifact.open("r+b") as fh:
            fh.truncate(size // 2)
            fh.flush()
            os.fsync(fh.fileno())

    crash_once(settings, name, _truncate)


def _claim_version(
    engine: Engine,
    job_id: int | None,
    params: TrainParams,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    requester: str,
) -> tuple[int, bool]:
    """The version row of this run: (id, finished). A re-delivered job reuses its row (a finished one as is)."""
    with session_scope(engine) as s:
        if job_id is not None:
            existing = s.scalar(select(ModelVersion).where(ModelVersion.job_id == job_id))
            if existing is not None:
                if existing.status in ("ready", DID_NOT_LEARN):
                    return existing.id, True
                existing.status, existing.error, existing.artifact_uri, existing.artifact_sha256 = (
                    "training",
                    None,
                    None,
                    None,
                )
                return existing.id, False
        parent_id = params.parent_version
        if parent_id is not None:
            parent = s.get(ModelVersion, parent_id)
            if parent is None:
                raise WorkbenchError(
                    f"parent version {parent_id} is not a ready model version (no such version)"
                )
            if parent.status != "ready":
                raise WorkbenchError(
                    f"cannot warm-start from it: {not_ready_message(parent_id, parent.status, parent.error)}"
                )
        version = ModelVersion(
            parent_id=parent_id,
            round_id=params.round_id,
            job_id=job_id,
            preset=params.preset,
            backbone=model_cfg.backbone,
            config={"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "params": params.to_json()},
            status="training",
            created_by=requester,
        )
        s.add(version)
        s.flush()
        return version.id, False


def _set_status(engine: Engine, version_id: int, status: str, **values: Any) -> None:
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        assert version is not None
        version.status = status
        version.finished_at = utcnow()
        for key, value in values.items():
            setattr(version, key, value)


def train_version(
    engine: Engine,
    settings: Settings,
    params: TrainParams,
    *,
    job_id: int | None = None,
    requester: str = "cli",
    progress: Callable[[float, str, bool], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train a version from the current labels; returns ``{"model_version": id, ...}``.

    Progress goes to ``progress(fraction, message, force)`` (force: an epoch ended); ``should_cancel()`` is polled between
    batches, and a cancelled run returns ``{"cancelled": True, ...}`` with the row ``cancelled``.
    The result has ``learning_check`` (verdict, reasons, advice, summary) and ``message``; a run that
    failed it (with ``learning_check: "enforce"``, the default) returns ``did_not_learn: True`` and
    its row is ``did_not_learn``.
    """
    from workbench.model.training import train

    model_cfg, train_cfg = run_configs(params)
    if params.use_feature_cache and model_cfg.align_shots:
        raise ValidationError(
            "use_feature_cache: the feature cache holds one map per image, and with model.align_shots "
            "the pre shot depends on its post shot; train without the feature cache"
        )
    train_set, val_set = training_data(engine)
    for name, data in (("training", train_set), ("validation", val_set)):
        c = data.counts()
        if c["positive"] == 0 or c["negative"] == 0:
            raise WorkbenchError(
                f"{name} data has {c['negative']} negative and {c['positive']} positive labelled case(s); "
                "training needs both classes: import or label more cases"
            )
    version_id, finished = _claim_version(engine, job_id, params, model_cfg, train_cfg, requester)
    if finished:
        return {**_finished_result(engine, version_id), "reused": True}
    out = artifact_dir(settings, version_id) / "model.keras"
    for leftover in out.parent.glob(".*.tmp.keras"):  # from an attempt killed while saving
        leftover.unlink(missing_ok=True)
    parent_path = None
    if params.parent_version is not None:
        parent_path, _ = _ready_artifact(engine, params.parent_version)
    # epochs per phase: the configured ones until training reports its own (phase 1's may be raised to
    # a floor of optimizer steps, training.step_floor)
    phase_epochs = {
        1: train_cfg.phase1_epochs,
        **({2: train_cfg.phase2_epochs} if train_cfg.phases == 2 else {}),
    }
    done = {"epochs": 0}

    def on_event(event: dict[str, Any]) -> None:
        if progress is None:
            return
        if event.get("phase") in phase_epochs and event.get("epochs"):
            phase_epochs[event["phase"]] = int(event["epochs"])
        epoch_end = event.get("event") == "epoch"
        if epoch_end:
            done["epochs"] += 1
        within = 0.0 if epoch_end else event.get("step", 0) / max(1, event.get("steps", 1))
        frac = min(0.99, (done["epochs"] + within) / max(1, sum(phase_epochs.values())))
        metrics = ", ".join(f"{k} {event[k]:.3f}" for k in ("loss", "val_loss", "val_auc_pr") if k in event)
        message = f"phase {event.get('phase')} epoch {event.get('epoch')}/{event.get('epochs')}: {metrics}"
        progress(frac, message, epoch_end)  # epoch ends are always written

    cache = None
    if params.use_feature_cache:
        from workbench.model.features import FeatureCache

        cache = FeatureCache(Path(settings.artifacts) / "features", should_cancel=should_cancel)
    fit_set, tune_set, selection = carve_tuning_slice(
        train_set, val_set, train_cfg.tuning_fraction, train_cfg.seed
    )
    started = time.monotonic()
    try:
        result = train(
            model_cfg,
            train_cfg,
            fit_set.pairs,
            fit_set.labels,
            tune_set.pairs,
            tune_set.labels,
            out,
            gate_pairs=val_set.pairs,
            gate_labels=val_set.labels,
            progress=on_event,
            should_cancel=should_cancel,
            parent_model_path=parent_path,
            feature_cache=cache,
            imagenet_weights_path=str(settings.imagenet_weights) if settings.imagenet_weights else None,
            distribute=settings.distribute,
        )
    except FeatureCacheCancelled:  # cancelled while the feature cache was still being built
        result = None
    except BaseException as exc:
        _set_status(engine, version_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    counts = {"train": fit_set.counts(), "val": val_set.counts()}
    if selection["on"] == "tune":
        counts["tune"] = tune_set.counts()
    if result is None or result.cancelled:
        _set_status(engine, version_id, "cancelled", data_counts=counts, error="cancelled on request")
        return {"cancelled": True, "model_version": version_id}
    fault_point(settings, "artifact-write", out)
    digest = verify_artifact(out)
    training = result.to_dict()
    check = training.pop("learning_check") or {}
    failed = check.get("verdict") == DID_NOT_LEARN and train_cfg.learning_check == "enforce"
    _set_status(
        engine,
        version_id,
        DID_NOT_LEARN if failed else "ready",
        artifact_uri=str(out),
        artifact_sha256=digest,
        data_counts=counts,
        metrics={
            "training": training,
            "learning_check": check,
            "epoch_selection": selection,
            "seconds": time.monotonic() - started,
        },
        error=check.get("summary") if failed else None,
    )
    out_result = _finished_result(engine, version_id)
    if failed and progress is not None:  # the job's message says why (else the last epoch's stays)
        progress(1.0, out_result["message"], True)
    return {**out_result, "seconds": round(time.monotonic() - started, 1), "val": result.val_metrics}


def learning_check_of(version: ModelVersion) -> dict[str, Any]:
    """The stored learning check of a version ({} for versions trained before it existed)."""
    return dict((version.metrics or {}).get("learning_check") or {})


def _finished_result(engine: Engine, version_id: int) -> dict[str, Any]:
    """Result of a finished training run, from its row (also what a re-delivered job returns)."""
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        assert version is not None
        status, error, check = version.status, version.error, learning_check_of(version)
    out: dict[str, Any] = {"model_version": version_id, "status": status}
    if check:
        out["learning_check"] = {k: check.get(k) for k in ("verdict", "reasons", "advice", "summary")}
    if status == DID_NOT_LEARN:
        out["did_not_learn"] = True
        out["message"] = not_ready_message(version_id, status, error)
    elif check.get("verdict") == DID_NOT_LEARN:  # learning_check "warn": recorded, not enforced
        out["message"] = (
            f"model version {version_id} ready, but the learning check says it {check['summary']}"
        )
    else:
        out["message"] = f"model version {version_id} ready" + (f"; {check['summary']}" if check else "")
    return out


def _ready_artifact(engine: Engine, version_id: int) -> tuple[Path, str | None]:
    """Path and sha256 of a ready version's verified artifact."""
    with session_scope(engine) as s:
        version = get_version(s, version_id)
        if version.status != "ready":
            raise WorkbenchError(not_ready_message(version_id, version.status, version.error))
        if not version.artifact_uri:
            raise WorkbenchError(f"model version {version_id} has no artifact")
        path, digest = Path(version.artifact_uri), version.artifact_sha256
    verify_artifact(path, digest)
    return path, digest


# Models loaded for prediction in this process, newest last: (artifact path, sha256) -> model. A round
# run in one process loads its version for inference and again for the queue's shortlist; each load
# also costs a fresh trace of the compiled prediction step (inference._batch_runner is kept per model).
_LOADED: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
_LOADED_MAX = 2


def load_version_model(engine: Engine, version_id: int) -> Any:
    """The Keras model of a ready version, for prediction only (callers never train or change it).

    The artifact is verified against its sha256 at every call; the loaded model is kept per process
    for the last two artifacts, so the same version predicted again reuses it and its compiled step."""
    import keras

    path, digest = _ready_artifact(engine, version_id)
    key = (str(path.resolve()), digest)
    model = _LOADED.get(key)
    if model is None:
        model = keras.models.load_model(path, compile=False)
        _LOADED[key] = model
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return model


def train_job(ctx: JobContext[TrainParams]) -> TrainResult:
    """Job handler (``train`` kind)."""
    return TrainResult.of(
        train_version(
            ctx.engine,
            ctx.settings,
            ctx.params,
            job_id=ctx.job_id,
            requester=ctx.requester,
            progress=ctx.progress,
            should_cancel=ctx.should_cancel,
        )
    )


def list_versions(engine: Engine) -> list[ModelVersion]:
    """All versions, newest first (detached rows for display)."""
    with session_scope(engine) as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))
