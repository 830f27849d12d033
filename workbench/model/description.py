"""What a model configuration means in words: the facts a model card or a preprocessing file states.

The backbone's preprocessing and the architecture are described here, once, next to the configuration
(:mod:`workbench.model.config`) and the builder that implements them (:mod:`workbench.model.builder`),
so the model card and ``preprocessing.json`` read them from the config instead of restating them.
No TensorFlow import: describing a model must not load Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError
from workbench.model.config import ModelConfig

#: What the backbone expects after decoding (RGB uint8 resized to input_size, cast to float32);
#: mirrors :func:`workbench.model.builder.preprocess_fn`.
PREPROCESSING: dict[str, dict[str, str]] = {
    "resnet50": {
        "function": "keras.applications.resnet50.preprocess_input",
        "mode": "caffe: RGB -> BGR, ImageNet channel means subtracted, no scaling",
        "channel_order": "RGB in, BGR out (done by the function)",
    },
    "mobilenet_v2": {
        "function": "keras.applications.mobilenet_v2.preprocess_input",
        "mode": "tf: x / 127.5 - 1 (range [-1, 1])",
        "channel_order": "RGB",
    },
    "efficientnetb0": {
        "function": "keras.applications.efficientnet.preprocess_input",
        "mode": "identity (the network rescales internally)",
        "channel_order": "RGB",
    },
    "small_cnn": {
        "function": "x / 127.5 - 1 (the workbench's small_cnn scaling)",
        "mode": "RGB scaled to [-1, 1]",
        "channel_order": "RGB",
    },
}

RESIZE_METHOD = (
    "workbench.data.images.load_rgb: EXIF orientation applied, converted to 8-bit RGB, resized to "
    "(width, height) with Pillow's bilinear filter (antialiased when shrinking)"
)

#: The model family :func:`workbench.model.builder.build_model` builds, whatever the configuration.
MODEL_TYPE = "convolutional backbones with attention fusion (Keras 3 functional model, stock layers only)"

#: The data path through :func:`workbench.model.builder.build_model`.
ARCHITECTURE = (
    "pre and post backbones -> feature tokens -> cross-attention (each image attends to the other) "
    "plus a post-minus-pre change path -> pooling -> dense embedding -> dropout -> logit -> sigmoid"
)


@dataclass(frozen=True)
class ModelDescription:
    """A model configuration in words, each field one phrase of the model card."""

    title: str  # what the model is, e.g. "Dual-input small_cnn attention model"
    model_type: str
    architecture: str
    input_size: str  # "WxH" (width x height)
    backbone: str  # backbone, shared or separate, initial weights
    fusion: str  # token dimension, attention heads, key dimension, dropout
    normalise: str  # the backbone's preprocessing function
    alignment: str  # what happens to the pair between decoding and the model (``align_shots``)
    aligned: bool  # the same, as a flag (an aligned model's SavedModel has no serve_images)


def describe(config: ModelConfig) -> ModelDescription:
    """The facts a model card states about ``config``, read from it (and this module), not restated."""
    width, height = config.input_size
    shared = "shared" if config.shared_backbone else "separate"
    return ModelDescription(
        title=f"Dual-input {config.backbone} attention model",
        model_type=MODEL_TYPE,
        architecture=ARCHITECTURE,
        input_size=f"{width}x{height}",
        backbone=(
            f"{config.backbone} ({shared} for pre and post), initial weights: "
            f"{config.weights or 'random (from scratch)'}"
        ),
        fusion=(
            f"token dimension {config.token_dim}, attention heads {config.heads}, "
            f"key dimension {config.key_dim}, dropout {config.dropout}"
        ),
        normalise=PREPROCESSING[config.backbone]["function"],
        alignment=(
            "the pre image is registered onto the post image (workbench.data.alignment.align_pre: phase "
            "correlation, then an affine ECC fit) after resizing"
            if config.align_shots
            else "none (the two images are used as decoded)"
        ),
        aligned=config.align_shots,
    )


def preprocessing_spec(
    backbone: str, input_size: list[int] | tuple[int, int], align_shots: bool = False
) -> dict[str, Any]:
    """The content of ``preprocessing.json``: what to do to a pair before the model sees it."""
    if backbone not in PREPROCESSING:
        raise WorkbenchError(f"no preprocessing description for backbone {backbone!r}")
    width, height = (int(v) for v in input_size)
    return {
        "backbone": backbone,
        "input_size": {"width": width, "height": height},
        "inputs": {
            "pre": f"pre-stain image, float32 ({height}, {width}, 3) after preprocessing",
            "post": f"post-stain image, float32 ({height}, {width}, 3) after preprocessing",
        },
        "decode_and_resize": RESIZE_METHOD,
        "align_shots": bool(align_shots),
        "alignment": (
            "after decode and resize, the pre image is registered onto the post image: "
            "workbench.data.alignment.align_pre(pre, post)"
            if align_shots
            else "none: the two images are used as decoded"
        ),
        "dtype": "uint8 RGB cast to float32 (values 0-255) before the function",
        **PREPROCESSING[backbone],
        "implementation": f"workbench.model.builder.preprocess_fn({backbone!r})",
        "outputs": {"logit": "(batch, 1) float32", "probability": "(batch, 1) float32, sigmoid(logit)"},
        "reference_implementation": "workbench.model.inference.predict_pairs (used by workbench predict)",
    }
