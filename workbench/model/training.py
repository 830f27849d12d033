"""Training: the model card's two-phase recipe with explicit class-imbalance handling.

Phase 1 trains at ``phase1_lr`` / ``phase1_batch``; pretrained backbones (ImageNet weights or a
warm-start parent) are frozen, randomly initialised ones are trained end to end (freezing random
weights teaches nothing). Phase 2 (optional) fine-tunes the upper backbone blocks (batch norm kept
frozen) at ``phase2_lr`` / ``phase2_batch``; for a from-scratch backbone it continues end to end.

Each phase: Adam, binary cross-entropy on the logit (``from_logits=True``) or focal loss, early
stopping and LR reduction on ``monitor``, and an in-memory best-on-validation checkpoint that is
restored at the end (and before phase 2). A progress callback reports each epoch (and at most once
a second per batch) and polls ``should_cancel`` between batches; a cancelled run writes no model
file. The final model (the full dual-output model, no optimizer) is written to ``out_path``
atomically: a temporary file in the same folder, then ``os.replace``. The run ends with the learning
check (``model.learning_check``: validation AUROC vs chance, constant outputs, loss at the prior),
whose verdict is ``TrainResult.learning_check``; the model is written either way.

Everything runs under the strategy ``model.distribution`` picks (``MirroredStrategy`` over two or
more visible GPUs): model, optimizer and compile are created in its scope, the configured batches
are per replica and the learning rates are scaled; ``TrainResult.distribution`` records both.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ValidationError
from workbench.files import atomic_replace
from workbench.model.config import MONITORS, ModelConfig, TrainConfig
from workbench.model.distribution import choose_distribution
from workbench.model.learning_check import check_learning
from workbench.model.pipeline import Pair, check_pairs
from workbench.model.prior import prior_correction

ProgressFn = Callable[[dict[str, Any]], None]
CancelFn = Callable[[], bool]


@dataclass
class TrainResult:
    """What a training run did. ``best_epoch`` counts epochs over both phases (1-based)."""

    cancelled: bool
    out_path: str | None
    seconds: float
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_phase: int | None = None
    monitor: str = "val_auc_pr"
    val_metrics: dict[str, float] = field(default_factory=dict)
    imbalance: str = "class_weight"
    class_weight: dict[int, float] | None = None
    focal_alpha: float | None = None
    epochs_run: int = 0
    used_feature_cache: bool = False
    learning_check: dict[str, Any] | None = None  # model.learning_check verdict, criteria, advice
    prior_correction: dict[str, Any] | None = None  # model.prior: the logit shift calibration removes
    distribution: dict[str, Any] | None = None  # model.distribution: strategy, replicas, scaled batch/lr
    step_floor: dict[str, int] | None = None  # phase 1's epochs and patience after the floor of steps

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.class_weight is not None:
            data["class_weight"] = {str(k): v for k, v in self.class_weight.items()}
        return data


def compute_class_weights(labels: Sequence[int]) -> dict[int, float]:
    """'Balanced' class weights from counts: w_c = n / (2 * n_c), so both classes weigh n/2 in total."""
    y = np.asarray(labels, dtype=int)
    n = len(y)
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    missing = [c for c, k in counts.items() if k == 0]
    if missing:
        raise ValidationError(f"labels: class {missing[0]} has no examples; class weights need both classes")
    return {c: n / (2.0 * k) for c, k in counts.items()}


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TF (keras.utils.set_random_seed); optionally force deterministic TF ops."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _monitor_for(requested: str, y_val: np.ndarray) -> str:
    """AUC metrics are undefined without both classes in validation: fall back to the loss then."""
    if requested != "val_loss" and (y_val.min() == y_val.max()):
        return "val_loss"
    return requested


def _callbacks(
    *,
    phase: int,
    epochs: int,
    steps: int,
    monitor: str,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
    state: dict[str, Any],
) -> list[Any]:
    """Progress/cancel and best-weights callbacks (Keras classes are defined here to keep TF lazy)."""
    import keras

    mode = MONITORS[monitor]

    class Reporter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._epoch = 0
            self._last = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if should_cancel is not None and should_cancel():
                state["cancelled"] = True
                self.model.stop_training = True
                return
            now = time.monotonic()
            if progress is not None and now - self._last >= 1.0:
                self._last = now
                event = {"event": "batch", "phase": phase, "epoch": self._epoch + 1, "epochs": epochs}
                event.update({"step": batch + 1, "steps": steps})
                event.update({k: float(v) for k, v in (logs or {}).items()})
                progress(event)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            state["epochs_run"] += 1
            value = logs.get(monitor, float("nan"))
            best = state["best_value"]
            better = math.isfinite(value) and (
                best is None or (value > best if mode == "max" else value < best)
            )
            if better:
                state.update(best_value=value, best_epoch=state["epochs_run"], best_phase=phase)
                state["best_weights"] = self.model.get_weights()
            if progress is not None and not state["cancelled"]:
                event = {"event": "epoch", "phase": phase, "epoch": epoch + 1, "epochs": epochs}
                event.update({"step": steps, "steps": steps, "best_epoch": state["best_epoch"]})
                event.update(logs)
                progress(event)

    return [Reporter()]


def _validated(
    train_pairs: Sequence[Pair], y_train: Sequence[int], val_pairs: Sequence[Pair], y_val: Sequence[int]
) -> tuple[list, np.ndarray, list, np.ndarray]:
    train_p = check_pairs(train_pairs, list(y_train))
    val_p = check_pairs(val_pairs, list(y_val))
    if not train_p:
        raise ValidationError("train_pairs: no training pairs")
    if not val_p:
        raise ValidationError("val_pairs: no validation pairs (needed to pick the best epoch)")
    y_tr = np.asarray(y_train, dtype=int)
    if y_tr.min() == y_tr.max():
        raise ValidationError(f"y_train: only class {y_tr[0]} present; training needs both classes")
    return train_p, y_tr, val_p, np.asarray(y_val, dtype=int)


def load_parent(path: str | os.PathLike, cfg: ModelConfig) -> Any:
    """Load a warm-start parent model and check it matches ``cfg`` (backbone and input size).

    A parent whose shot alignment differs from ``cfg.align_shots`` (the option was switched on or off
    between rounds) is returned as a model built from ``cfg`` carrying the parent's weights: alignment
    is preprocessing, the layers are the same, and the saved child's name must say what it was trained
    on, because inference and export read it from there."""
    import keras

    from workbench.model.builder import aligns_shots, backbone_from_model, build_model

    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"parent_model_path: {str(p)!r} does not exist")
    try:
        model = keras.models.load_model(p, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable model file
        raise ValidationError(f"parent_model_path: cannot load {str(p)!r}: {exc}") from exc
    if backbone_from_model(model) != cfg.backbone:
        raise ValidationError(
            f"parent_model_path: parent backbone differs from the configured {cfg.backbone}"
        )
    w, h = cfg.input_size
    shape = tuple(model.input["pre"].shape[1:3])
    if shape != (h, w):
        raise ValidationError(
            f"parent_model_path: parent input is {shape[1]}x{shape[0]}, config asks {w}x{h}"
        )
    if aligns_shots(model) != cfg.align_shots:
        rebuilt = build_model(cfg.derive(weights=None))
        try:
            rebuilt.set_weights(model.get_weights())
        except ValueError as exc:
            raise ValidationError(
                f"parent_model_path: the parent's layers differ from the configured model's: {exc}"
            ) from None
        return rebuilt
    return model


def save_atomic(model: Any, out_path: str | os.PathLike) -> Path:
    """Save ``model`` as .keras (no optimizer) to a temp name in the same folder, then rename."""
    out = Path(out_path)
    if out.suffix != ".keras":
        raise ValidationError(f"out_path: must end with .keras, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(out, suffix=".tmp.keras") as tmp:  # registry clears ``.*.tmp.keras`` leftovers
        model.save(tmp, include_optimizer=False)
    return out


def step_floor(
    epochs: int, patience: int, steps_per_epoch: int, cfg: TrainConfig
) -> tuple[int, int, dict[str, int]]:
    """Phase 1's (epochs, patience) raised to ``cfg.min_steps`` / ``cfg.min_patience_steps`` optimizer
    steps, and the record of it: at small n an epoch is a few steps, and a budget counted in epochs
    stops training before it starts to learn."""
    steps_per_epoch = max(1, steps_per_epoch)
    raised = max(epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    wait = max(patience, math.ceil(cfg.min_patience_steps / steps_per_epoch))
    return raised, wait, {"steps_per_epoch": steps_per_epoch, "epochs": raised, "patience": wait}


def evaluate_logits(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Loss (BCE), AUROC and AUPRC of logits; AUCs are NaN when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=float).ravel()
    z = np.asarray(logits, dtype=float).ravel()
    loss = float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    both = y.min() != y.max()
    return {
        "loss": loss,
        "auroc": float(roc_auc_score(y, z)) if both else float("nan"),
        "auprc": float(average_precision_score(y, z)) if both else float("nan"),
        "n": float(len(y)),
        "n_positive": float(y.sum()),
    }


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_pairs: Sequence[Pair],
    y_train: Sequence[int],
    val_pairs: Sequence[Pair],
    y_val: Sequence[int],
    out_path: str | os.PathLike,
    *,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    parent_model_path: str | os.PathLike | None = None,
    feature_cache: Any = None,
    imagenet_weights_path: str | None = None,
    gate_pairs: Sequence[Pair] | None = None,
    gate_labels: Sequence[int] | None = None,
    distribute: str | None = None,
) -> TrainResult:
    """Train (or warm-start from ``parent_model_path``) and save the best model to ``out_path``.

    ``val_pairs``/``y_val`` pick the epoch (early stopping, LR schedule): the registry passes a tuning
    slice carved from training. ``gate_pairs``/``gate_labels`` (default: the same) are what the learning
    check and ``val_metrics`` read: the validation split, which selects nothing here.

    ``feature_cache`` (a features.FeatureCache or a folder) makes phase 1 with frozen backbones
    train only the head on cached backbone features (no augmentation in that phase), then grafts the
    head back into the full model. ``imagenet_weights_path`` is the WORKBENCH_IMAGENET_WEIGHTS
    setting. ``distribute`` is a ``model.distribution`` mode (default: the WORKBENCH_DISTRIBUTE
    setting): with several replicas each phase's batch is per replica and its learning rate is
    scaled, both recorded in ``TrainResult.distribution``. Returns a TrainResult; when
    ``should_cancel()`` turns true, training stops after the current batch and nothing is written.
    """
    import keras

    from workbench.model.builder import build_model, set_backbone_trainable
    from workbench.model.pipeline import make_dataset

    model_cfg.validate()
    train_cfg.validate()
    started = time.monotonic()
    train_p, y_tr, val_p, y_va = _validated(train_pairs, y_train, val_pairs, y_val)
    dist = choose_distribution(distribute)  # first TF call: a "cpu:N" split must precede the rest
    seed_everything(train_cfg.seed, train_cfg.deterministic)

    with dist.strategy.scope():  # model, optimizer and compile on every replica
        if parent_model_path is not None:
            model = load_parent(parent_model_path, model_cfg)
        else:
            model = build_model(model_cfg, imagenet_weights_path)
        pretrained = model_cfg.pretrained or parent_model_path is not None
        train_model = keras.Model(model.input, model.output["logit"], name="train_logit")

        monitor = _monitor_for(train_cfg.monitor, y_va)
        mode = MONITORS[monitor]
        class_weight = compute_class_weights(y_tr) if train_cfg.imbalance == "class_weight" else None
        focal_alpha = float((y_tr == 0).mean()) if train_cfg.imbalance == "focal" else None
        if train_cfg.imbalance == "focal":
            loss = keras.losses.BinaryFocalCrossentropy(
                apply_class_balancing=True, alpha=focal_alpha, gamma=train_cfg.focal_gamma, from_logits=True
            )
        else:
            loss = keras.losses.BinaryCrossentropy(from_logits=True)

        state: dict[str, Any] = {
            "cancelled": False,
            "epochs_run": 0,
            "best_value": None,
            "best_epoch": None,
            "best_phase": None,
            "best_weights": None,
        }
        history: dict[str, dict[str, list[float]]] = {}
        used_cache = False
        phases = [
            (1, train_cfg.phase1_epochs, train_cfg.phase1_batch, train_cfg.phase1_lr),
            (2, train_cfg.phase2_epochs, train_cfg.phase2_batch, train_cfg.phase2_lr),
        ][: train_cfg.phases]
        distribution = dist.record({phase: (batch, lr) for phase, _, batch, lr in phases}, len(train_p))
        floor: dict[str, int] | None = None
        for phase, epochs, replica_batch, base_lr in phases:
            batch, lr = dist.batch_for(replica_batch, len(train_p)), dist.scaled_lr(base_lr)
            val_batch = dist.batch_for(replica_batch, len(val_p))
            if phase == 1:
                set_backbone_trainable(model, "frozen" if pretrained else "all")
            else:
                if state["best_weights"] is not None:
                    train_model.set_weights(state["best_weights"])
                set_backbone_trainable(model, "top" if pretrained else "all", train_cfg.fine_tune_from_block)
            steps = math.ceil(len(train_p) / batch)
            patience = train_cfg.patience
            if phase == 1:
                epochs, patience, floor = step_floor(epochs, patience, steps, train_cfg)
            callbacks = _callbacks(
                phase=phase,
                epochs=epochs,
                steps=steps,
                monitor=monitor,
                progress=progress,
                should_cancel=should_cancel,
                state=state,
            )
            callbacks += [
                keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience),
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor,
                    mode=mode,
                    factor=train_cfg.reduce_lr_factor,
                    patience=max(1, patience // 2),
                    min_lr=lr * 1e-3,
                ),
            ]
            if phase == 1 and pretrained and feature_cache is not None:
                from workbench.model.features import fit_head_on_features

                hist = fit_head_on_features(
                    model,
                    model_cfg,
                    feature_cache,
                    train_p,
                    y_tr,
                    val_p,
                    y_va,
                    epochs=epochs,
                    batch_size=batch,
                    val_batch_size=val_batch,
                    lr=lr,
                    loss=loss,
                    class_weight=class_weight,
                    balanced=train_cfg.imbalance == "balanced",
                    callbacks=callbacks,
                    state=state,
                    seed=train_cfg.seed,
                )
                used_cache = True
            else:
                train_ds = make_dataset(
                    train_p,
                    y_tr,
                    input_size=model_cfg.input_size,
                    backbone=model_cfg.backbone,
                    batch_size=batch,
                    training=True,
                    augment=train_cfg.augment,
                    shot_jitter=train_cfg.shot_jitter,
                    augment_policy=train_cfg.augment_policy,
                    balanced=train_cfg.imbalance == "balanced",
                    seed=train_cfg.seed + phase,
                    align=model_cfg.align_shots,
                )
                val_ds = make_dataset(
                    val_p,
                    y_va,
                    input_size=model_cfg.input_size,
                    backbone=model_cfg.backbone,
                    batch_size=val_batch,
                    align=model_cfg.align_shots,
                )
                train_model.compile(
                    optimizer=keras.optimizers.Adam(lr),
                    loss=loss,
                    metrics=[
                        keras.metrics.AUC(curve="PR", from_logits=True, name="auc_pr"),
                        keras.metrics.AUC(curve="ROC", from_logits=True, name="auc"),
                    ],
                )
                hist = train_model.fit(
                    train_ds,
                    validation_data=val_ds,
                    epochs=epochs,
                    class_weight=class_weight,
                    callbacks=callbacks,
                    verbose=0,
                ).history
            history[f"phase{phase}"] = {k: [float(v) for v in vals] for k, vals in hist.items()}
            if state["cancelled"]:
                break

    elapsed = time.monotonic() - started
    n_pos = int(y_tr.sum())
    correction = prior_correction(
        train_cfg.imbalance, int(y_tr.shape[0]) - n_pos, n_pos, train_cfg.focal_gamma
    )
    base = {
        "prior_correction": correction.to_dict(),
        "history": history,
        "monitor": monitor,
        "imbalance": train_cfg.imbalance,
        "class_weight": class_weight,
        "focal_alpha": focal_alpha,
        "epochs_run": state["epochs_run"],
        "used_feature_cache": used_cache,
        "distribution": distribution,
        "step_floor": floor,
    }
    if state["cancelled"]:
        return TrainResult(cancelled=True, out_path=None, seconds=elapsed, **base)

    if state["best_weights"] is not None:
        train_model.set_weights(state["best_weights"])
    chk_p, y_chk = val_p, y_va
    if gate_pairs is not None:
        if gate_labels is None or not gate_pairs:
            raise ValidationError("gate_pairs needs one label each (and at least one pair)")
        chk_p = check_pairs(gate_pairs, list(gate_labels))
        y_chk = np.asarray(gate_labels, dtype=int)
    val_ds = make_dataset(
        chk_p,
        None,
        input_size=model_cfg.input_size,
        backbone=model_cfg.backbone,
        batch_size=16,
        cache=False,
        align=model_cfg.align_shots,
    )
    val_logits = train_model.predict(val_ds, verbose=0)
    val_metrics = evaluate_logits(y_chk, val_logits)
    verdict = check_learning(
        y_chk,
        val_logits,
        history,
        train_cfg.imbalance,
        train_prevalence=float(y_tr.mean()),
        best_epoch=state["best_epoch"],
        focal_gamma=train_cfg.focal_gamma,
        focal_alpha=focal_alpha,
    )
    set_backbone_trainable(model, "all")  # the saved artifact is a plain trainable model
    saved = save_atomic(model, out_path)  # written even when it did not learn (for debugging)
    return TrainResult(
        cancelled=False,
        out_path=str(saved),
        seconds=time.monotonic() - started,
        best_epoch=state["best_epoch"],
        best_phase=state["best_phase"],
        val_metrics=val_metrics,
        learning_check=verdict.to_dict(),
        **base,
    )
