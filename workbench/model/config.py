"""Model and training configuration: plain dataclasses with JSON round-trip and validation.

No TensorFlow import here, so the rest of the library (database rows, CLI, UI) can read, store and
validate configurations without loading Keras.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ValidationError

#: Backbones the builder knows. "small_cnn" is a small from-scratch CNN built from Keras layers;
#: the others are ``keras.applications`` models.
BACKBONES: tuple[str, ...] = ("resnet50", "small_cnn", "mobilenet_v2", "efficientnetb0")

IMBALANCE_MODES: tuple[str, ...] = ("class_weight", "balanced", "focal", "none")

MONITORS: dict[str, str] = {"val_auc_pr": "max", "val_auc": "max", "val_loss": "min"}

#: "enforce": a run that fails the learning check (model.learning_check) ends ``did_not_learn``;
#: "warn": the verdict is only recorded (for tests of plumbing on too little data to learn from).
LEARNING_CHECK_MODES: tuple[str, ...] = ("enforce", "warn")


def _fail(field_name: str, message: str) -> ValidationError:
    return ValidationError(f"{field_name}: {message}")


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, f"must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise _fail(name, f"must be >= {minimum}{upper}, got {value}")
    return value


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(name, f"must be a finite number, got {value!r}")
    value = float(value)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise _fail(name, f"must be in {bracket}{low}, {high}], got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, f"must be true or false, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(name, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _from_dict(cls: type, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ValidationError(f"{what}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValidationError(f"{what}: unknown field(s) {', '.join(unknown)}")
    obj = cls(**data)
    obj.validate()
    return obj


@dataclass
class ModelConfig:
    """Architecture of the dual-input (pre/post) attention model.

    ``input_size`` is (width, height) in pixels. ``weights`` is "imagenet" (read from a local file,
    never downloaded), a path to a Keras weights file for the backbone, or None (random init).
    ``cnn_width`` is the first-block filter count of ``small_cnn`` (ignored by other backbones).

    Options that give a from-scratch backbone the inductive bias subtle acetowhite lesions need (the
    defaults keep the original architecture, which the card preset uses):

    * ``input_norm``: standardise each image per channel over its own pixels as the backbone's first
      layer, so exposure and white-balance drift between the pre and post shots cancel out.
    * ``cnn_blocks``: how many (conv, conv, pool) blocks ``small_cnn`` has (1-4); fewer blocks keep a
      finer feature map, so a lesion a few pixels wide is not pooled away before pre meets post.
    * ``change_tolerance``: odd window of a max filter over the pre feature map before the change path
      subtracts it from post (1 = plain post minus pre). A feature present anywhere nearby in pre
      cancels, so the few-pixel misalignment between the two shots does not look like change.
    * ``change_convs``: widths of 3x3 conv layers (each followed by 2x2 max-pool) on the change map, so
      the head can weigh the size, shape and strength of a whitened region, not just its peak.
    * ``whiteness_prior``: add two colour-opponent channels to the ``small_cnn`` feature map, whiteness
      (brightness minus colourfulness) and colourfulness (L1 distance from grey), computed from the
      normalised image by two 1x1 conv layers initialised to those formulas (then trained with the
      rest). The change path sees the stain's whitening from the first epoch instead of having to
      discover it among 70 positives.
    * ``token_pool``: average-pool factor applied to the feature maps before they become attention
      tokens (keeps cross-attention cheap on a fine map).
    """

    backbone: str = "resnet50"
    input_size: tuple[int, int] = (224, 224)
    token_dim: int = 256
    heads: int = 4
    key_dim: int = 64
    dropout: float = 0.3
    shared_backbone: bool = False
    weights: str | None = "imagenet"
    cnn_width: int = 32
    input_norm: bool = False
    cnn_blocks: int = 4
    change_tolerance: int = 1
    change_convs: tuple[int, ...] = ()
    whiteness_prior: bool = False
    token_pool: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.input_size, list):
            self.input_size = tuple(self.input_size)
        if isinstance(self.change_convs, list):
            self.change_convs = tuple(self.change_convs)

    def validate(self) -> ModelConfig:
        """Raise ValidationError naming the first bad field; return self when all is well."""
        _check_choice("backbone", self.backbone, BACKBONES)
        size = self.input_size
        if (
            not isinstance(size, tuple)
            or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in size)
        ):
            raise _fail("input_size", f"must be two integers (width, height), got {size!r}")
        if min(size) < 32 or max(size) > 1024:
            raise _fail("input_size", f"each side must be between 32 and 1024 pixels, got {size}")
        _check_int("token_dim", self.token_dim, 4, 4096)
        _check_int("heads", self.heads, 1, 64)
        _check_int("key_dim", self.key_dim, 1, 1024)
        _check_float("dropout", self.dropout, 0.0, 0.95)
        _check_bool("shared_backbone", self.shared_backbone)
        _check_int("cnn_width", self.cnn_width, 4, 512)
        _check_bool("input_norm", self.input_norm)
        _check_int("cnn_blocks", self.cnn_blocks, 1, 4)
        _check_int("change_tolerance", self.change_tolerance, 1, 15)
        if self.change_tolerance % 2 == 0:
            raise _fail("change_tolerance", f"must be odd (a centred window), got {self.change_tolerance}")
        convs = self.change_convs
        if not isinstance(convs, tuple) or len(convs) > 4:
            raise _fail("change_convs", f"must be a list of at most 4 conv widths, got {convs!r}")
        for width in convs:
            _check_int("change_convs", width, 1, 1024)
        _check_bool("whiteness_prior", self.whiteness_prior)
        if self.whiteness_prior and self.backbone != "small_cnn":
            raise _fail("whiteness_prior", "only the small_cnn backbone has the whiteness channels")
        _check_int("token_pool", self.token_pool, 1, 16)
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights.strip()):
            raise _fail("weights", f'must be "imagenet", a file path or null, got {self.weights!r}')
        if self.weights == "imagenet" and self.backbone == "small_cnn":
            raise _fail("weights", "small_cnn has no ImageNet weights; use null or a weights file path")
        return self

    @property
    def pretrained(self) -> bool:
        """True when the backbone starts from trained weights (so phase 1 freezes it)."""
        return self.weights is not None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["change_convs"] = list(self.change_convs)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        return _from_dict(cls, data, "model config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"model config: invalid JSON ({exc})") from exc
        return cls.from_dict(data)


@dataclass
class TrainConfig:
    """Training recipe. Defaults are the model card's: Adam, BCE, 30 epochs at batch 16 / lr 1e-4
    with frozen (pretrained) backbones, then 20 epochs at batch 8 / lr 1e-5 fine-tuning the upper
    backbone blocks from ``fine_tune_from_block`` (None: the backbone's last stage).

    ``imbalance``: "class_weight" (weights from counts), "balanced" (class-balanced batches),
    "focal" (focal loss with class-balancing alpha) or "none" (allowed, but recorded).
    ``monitor`` picks the best epoch (and drives early stopping / LR reduction), read on a tuning slice
    of ``tuning_fraction`` of the training cases (patient-grouped), so validation stays unselected; 0, or
    too few cases for a slice with 3 of each class, falls back to validation (recorded as in-sample).
    ``shot_jitter`` adds a separate small misalignment and exposure/white-balance draw per image on top
    of the pair augmentation (see model.augment). ``deterministic`` enables TensorFlow op determinism so a CPU run with the same seed repeats.
    """

    phases: int = 2
    phase1_epochs: int = 30
    phase1_batch: int = 16
    phase1_lr: float = 1e-4
    phase2_epochs: int = 20
    phase2_batch: int = 8
    phase2_lr: float = 1e-5
    fine_tune_from_block: str | None = None
    imbalance: str = "class_weight"
    focal_gamma: float = 2.0
    patience: int = 5
    monitor: str = "val_auc_pr"
    tuning_fraction: float = 0.15
    reduce_lr_factor: float = 0.5
    seed: int = 0
    augment: bool = True
    shot_jitter: bool = False
    deterministic: bool = True
    # "enforce": a run failing the learning check is stored did_not_learn; "warn": verdict only recorded
    learning_check: str = "enforce"

    def validate(self) -> TrainConfig:
        """Raise ValidationError naming the first bad field; return self when all is well."""
        _check_int("phases", self.phases, 1, 2)
        _check_int("phase1_epochs", self.phase1_epochs, 1, 10_000)
        _check_int("phase1_batch", self.phase1_batch, 1, 4096)
        _check_float("phase1_lr", self.phase1_lr, 0.0, 1.0, low_open=True)
        _check_int("phase2_epochs", self.phase2_epochs, 1, 10_000)
        _check_int("phase2_batch", self.phase2_batch, 1, 4096)
        _check_float("phase2_lr", self.phase2_lr, 0.0, 1.0, low_open=True)
        if self.fine_tune_from_block is not None and (
            not isinstance(self.fine_tune_from_block, str) or not self.fine_tune_from_block
        ):
            raise _fail(
                "fine_tune_from_block",
                f"must be a layer-name prefix or null, got {self.fine_tune_from_block!r}",
            )
        _check_choice("imbalance", self.imbalance, IMBALANCE_MODES)
        _check_float("focal_gamma", self.focal_gamma, 0.0, 10.0)
        _check_int("patience", self.patience, 1, 1000)
        _check_choice("monitor", self.monitor, tuple(MONITORS))
        _check_float("tuning_fraction", self.tuning_fraction, 0.0, 0.5)
        _check_float("reduce_lr_factor", self.reduce_lr_factor, 0.0, 0.99, low_open=True)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        _check_bool("augment", self.augment)
        _check_bool("shot_jitter", self.shot_jitter)
        _check_bool("deterministic", self.deterministic)
        _check_choice("learning_check", self.learning_check, LEARNING_CHECK_MODES)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        return _from_dict(cls, data, "train config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"train config: invalid JSON ({exc})") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class Preset:
    """A named pair of configurations."""

    name: str
    description: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _presets() -> dict[str, Preset]:
    return {
        "cpu": Preset(
            name="cpu",
            description=(
                "Small from-scratch CNN at reduced resolution with a shared backbone, so a CPU round "
                "takes minutes; trained end to end (no pretrained weights)."
            ),
            model=ModelConfig(
                backbone="small_cnn",
                input_size=(96, 96),
                token_dim=64,
                heads=4,
                key_dim=16,
                dropout=0.3,
                shared_backbone=True,
                weights=None,
                cnn_width=16,
            ),
            train=TrainConfig(
                phases=1,
                phase1_epochs=40,
                phase1_batch=16,
                phase1_lr=1e-3,
                imbalance="class_weight",
                patience=10,
                monitor="val_auc_pr",
                augment=True,
                deterministic=True,
            ),
        ),
        "card": Preset(
            name="card",
            description=(
                "The model card's recipe: two ResNet50 backbones (separate weights) at 224x224 with "
                "ImageNet weights from a local file; 30 epochs frozen then 20 epochs fine-tuning."
            ),
            model=ModelConfig(
                backbone="resnet50",
                input_size=(224, 224),
                token_dim=256,
                heads=4,
                key_dim=64,
                dropout=0.3,
                shared_backbone=False,
                weights="imagenet",
            ),
            train=TrainConfig(deterministic=False),
        ),
    }


PRESETS: dict[str, Preset] = _presets()


def preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    """Fresh copies of a named preset's (model, train) configurations."""
    if name not in PRESETS:
        raise ValidationError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return (
        ModelConfig.from_dict(p.model.to_dict()),
        TrainConfig.from_dict(p.train.to_dict()),
    )
