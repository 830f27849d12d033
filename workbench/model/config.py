"""Model and training configuration: validated pydantic models with a JSON round-trip.

No TensorFlow import here, so the rest of the library (database rows, CLI, UI) can read, store and
validate configurations without loading Keras. The fields state every type, bound and choice; a
bad value from outside (``--overrides``, a stored row) gives one error naming the field
(:class:`workbench.validated.Validated`). Configurations are immutable: a variant is derived with
:meth:`~workbench.validated.Validated.derive`, which validates the changed copy again.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Self, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator

from workbench.errors import ValidationError
from workbench.jobs.params import TrainParams
from workbench.validated import Validated

Backbone = Literal["resnet50", "small_cnn", "mobilenet_v2", "efficientnetb0"]
ImbalanceMode = Literal["class_weight", "balanced", "focal", "none"]
Monitor = Literal["val_auc_pr", "val_auc", "val_loss"]
LearningCheckMode = Literal["enforce", "warn"]
AugmentPolicy = Literal["affine", "dihedral"]

#: Backbones the builder knows. "small_cnn" is a small from-scratch CNN built from Keras layers;
#: the others are ``keras.applications`` models.
BACKBONES: tuple[str, ...] = get_args(Backbone)

IMBALANCE_MODES: tuple[str, ...] = get_args(ImbalanceMode)

MONITORS: dict[str, str] = {"val_auc_pr": "max", "val_auc": "max", "val_loss": "min"}

#: "enforce": a run that fails the learning check (model.learning_check) ends ``did_not_learn``;
#: "warn": the verdict is only recorded (for tests of plumbing on too little data to learn from).
LEARNING_CHECK_MODES: tuple[str, ...] = get_args(LearningCheckMode)

#: Strict types (no "3" for 3, no "yes" for true), finite floats, immutable instances.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _Config(Validated):
    """JSON round-trip shared by both configurations (lists in JSON, tuples in Python)."""

    model_config = _STRICT

    def validate(self) -> Self:  # type: ignore[override]
        """Return self: an instance is valid by construction (kept for the callers that ask)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        if not isinstance(data, dict):
            raise ValidationError(f"{cls.what}: expected a JSON object, got {type(data).__name__}")
        return cls.parse(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{cls.what}: invalid JSON ({exc})") from exc
        return cls.from_dict(data)


class ModelConfig(_Config):
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
    * ``change_norm``: batch normalisation after each of ``change_convs`` (before its ReLU). The change
      map of a faint lesion is a difference of a few grey levels; without it the change path sat at the
      ln 2 loss for 8-10 epochs on hard data (docs/benchmarks.md, "Subtle lesions").
    * ``whiteness_prior``: add two colour-opponent channels to the ``small_cnn`` feature map, whiteness
      (brightness minus colourfulness) and colourfulness (L1 distance from grey), computed from the
      normalised image by two 1x1 conv layers initialised to those formulas (then trained with the
      rest). The change path sees the stain's whitening from the first epoch instead of having to
      discover it among 70 positives.
    * ``token_pool``: average-pool factor applied to the feature maps before they become attention
      tokens (keeps cross-attention cheap on a fine map).
    * ``align_shots``: before the model sees a pair, the pre shot is registered onto the post shot
      (:mod:`workbench.data.alignment`: phase correlation, then an affine ECC fit), in training,
      inference and exported bundles alike, so the change path compares the same tissue and the
      ``change_tolerance`` window can stay small. Recorded in the model's name
      (``builder.ALIGNED_SUFFIX``); the per-image feature cache is not used (alignment is per pair).
    """

    what = "model config"

    backbone: Backbone = "resnet50"
    input_size: tuple[int, int] = (224, 224)
    token_dim: int = Field(256, ge=4, le=4096)
    heads: int = Field(4, ge=1, le=64)
    key_dim: int = Field(64, ge=1, le=1024)
    dropout: float = Field(0.3, ge=0.0, le=0.95)
    shared_backbone: bool = False
    weights: str | None = "imagenet"
    cnn_width: int = Field(32, ge=4, le=512)
    input_norm: bool = False
    cnn_blocks: int = Field(4, ge=1, le=4)
    change_tolerance: int = Field(1, ge=1, le=15)
    change_convs: tuple[int, ...] = Field((), max_length=4)
    change_norm: bool = False
    whiteness_prior: bool = False
    token_pool: int = Field(1, ge=1, le=16)
    align_shots: bool = False

    @field_validator("input_size", "change_convs", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        """JSON has lists where Python has tuples."""
        return tuple(value) if isinstance(value, list) else value

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 32 or max(size) > 1024:
            raise ValueError(f"each side must be between 32 and 1024 pixels, got {size}")
        return size

    @field_validator("change_tolerance")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd (a centred window), got {value}")
        return value

    @field_validator("change_convs")
    @classmethod
    def _conv_widths(cls, convs: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= width <= 1024 for width in convs):
            raise ValueError(f"conv widths must be between 1 and 1024, got {list(convs)}")
        return convs

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f'must be "imagenet", a file path or null, got {value!r}')
        return value

    @model_validator(mode="after")
    def _backbone_options(self) -> Self:
        if self.whiteness_prior and self.backbone != "small_cnn":
            raise ValueError("whiteness_prior: only the small_cnn backbone has the whiteness channels")
        if self.weights == "imagenet" and self.backbone == "small_cnn":
            raise ValueError("weights: small_cnn has no ImageNet weights; use null or a weights file path")
        return self

    @property
    def pretrained(self) -> bool:
        """True when the backbone starts from trained weights (so phase 1 freezes it)."""
        return self.weights is not None


class TrainConfig(_Config):
    """Training recipe. Defaults are the model card's: Adam, BCE, 30 epochs at batch 16 / lr 1e-4
    with frozen (pretrained) backbones, then 20 epochs at batch 8 / lr 1e-5 fine-tuning the upper
    backbone blocks from ``fine_tune_from_block`` (None: the backbone's last stage).

    ``imbalance``: "class_weight" (weights from counts), "balanced" (class-balanced batches),
    "focal" (focal loss with class-balancing alpha) or "none" (allowed, but recorded).
    ``monitor`` picks the best epoch (and drives early stopping / LR reduction), read on a tuning slice
    of ``tuning_fraction`` of the training cases (patient-grouped), so validation stays unselected; 0, or
    too few cases for a slice with 3 of each class, falls back to validation (recorded as in-sample).
    ``augment_policy``: "affine" (flip, rotation, shift/scale, brightness/contrast: the card's) or
    "dihedral" (flips and quarter turns only: lossless, for faint whitening; see model.augment).
    ``shot_jitter`` adds a separate small misalignment and exposure/white-balance draw per image on top
    of the pair augmentation (see model.augment). ``deterministic`` enables TensorFlow op determinism so a CPU run with the same seed repeats.
    """

    what = "train config"

    phases: int = Field(2, ge=1, le=2)
    phase1_epochs: int = Field(30, ge=1, le=10_000)
    phase1_batch: int = Field(16, ge=1, le=4096)
    phase1_lr: float = Field(1e-4, gt=0.0, le=1.0)
    phase2_epochs: int = Field(20, ge=1, le=10_000)
    phase2_batch: int = Field(8, ge=1, le=4096)
    phase2_lr: float = Field(1e-5, gt=0.0, le=1.0)
    fine_tune_from_block: str | None = Field(None, min_length=1)  # a layer-name prefix
    imbalance: ImbalanceMode = "class_weight"
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    patience: int = Field(5, ge=1, le=1000)
    # Phase 1's epochs and patience count epochs, and at small n an epoch is a handful of optimizer steps:
    # at least this many steps of training and of patience (0: off). An explicit --epochs turns both off.
    min_steps: int = Field(0, ge=0, le=1_000_000)
    min_patience_steps: int = Field(0, ge=0, le=1_000_000)
    monitor: Monitor = "val_auc_pr"
    tuning_fraction: float = Field(0.15, ge=0.0, le=0.5)
    reduce_lr_factor: float = Field(0.5, gt=0.0, le=0.99)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    augment: bool = True
    augment_policy: AugmentPolicy = "affine"
    shot_jitter: bool = False
    deterministic: bool = True
    # "enforce": a run failing the learning check is stored did_not_learn; "warn": verdict only recorded
    learning_check: LearningCheckMode = "enforce"


class Preset(Validated):
    """A named pair of configurations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


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
                # 40 labels at batch 16 are 3 steps an epoch: 40 epochs with patience 10 stop before the
                # loss leaves ln 2; 600 / 180 steps learned that case (docs/benchmarks.md, "replay")
                min_steps=600,
                min_patience_steps=180,
                monitor="val_auc_pr",
                augment=True,
                deterministic=True,
                # used when a round refreshes the backbone (model.backbone_refresh): the whole small
                # CNN fine-tuned end to end on the images, batch norm frozen
                phase2_epochs=10,
                phase2_batch=16,
                phase2_lr=1e-4,
                fine_tune_from_block="block1_",
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
    """A named preset's (model, train) configurations (immutable, so shared safely)."""
    if name not in PRESETS:
        raise ValidationError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return p.model, p.train


def run_configs(params: TrainParams) -> tuple[ModelConfig, TrainConfig]:
    """The configurations of one training run: its preset's, then the run's explicit choices, then
    its ``overrides`` (each derived copy validated again, so a bad override names its field)."""
    model_cfg, train_cfg = preset(params.preset)
    chosen: dict[str, Any] = {"phases": params.phases, "imbalance": params.imbalance, "seed": params.seed}
    if params.epochs:  # taken as is: no floor of optimizer steps
        chosen.update(phase1_epochs=params.epochs, min_steps=0, min_patience_steps=0)
    if params.fine_tune_epochs:
        chosen["phase2_epochs"] = params.fine_tune_epochs
    overrides = params.overrides
    return (
        model_cfg.derive(**(overrides.get("model") or {})),
        train_cfg.derive(**{**chosen, **(overrides.get("train") or {})}),
    )
