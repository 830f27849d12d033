"""Backbone weights from disk only.

The workbench never lets Keras download anything: ``weights="imagenet"`` is resolved here to a
local file (the file Keras itself would cache, or a path from the ``WORKBENCH_IMAGENET_WEIGHTS``
setting, which the caller passes in) and the path is handed to the Keras application as
``weights=path``. A missing file is a ValidationError that says which file and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import ValidationError

#: File names of the no-top ImageNet weights exactly as ``keras.applications`` caches them.
IMAGENET_FILES: dict[str, str] = {
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "efficientnetb0": "efficientnetb0_notop.h5",
}

#: Where the files can be fetched (by a person, on a machine with network access).
IMAGENET_URLS: dict[str, str] = {
    "resnet50": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
    + IMAGENET_FILES["resnet50"],
    "mobilenet_v2": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    + IMAGENET_FILES["mobilenet_v2"],
    "efficientnetb0": "https://storage.googleapis.com/keras-applications/" + IMAGENET_FILES["efficientnetb0"],
}


def keras_models_dir() -> Path:
    """The folder where Keras caches application weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".keras"
    return base / "models"


def resolve_weights(
    backbone: str, weights: str | None, imagenet_weights_path: str | os.PathLike | None = None
) -> str | None:
    """Turn a ``ModelConfig.weights`` value into a local file path (or None for random init).

    ``imagenet_weights_path`` is the ``WORKBENCH_IMAGENET_WEIGHTS`` setting; when set it wins over
    the Keras cache. Raises ValidationError (never downloads) when the file is not there.
    """
    if weights is None:
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValidationError(f"weights: backbone weights file {str(path)!r} does not exist")
        return str(path)
    if backbone not in IMAGENET_FILES:
        raise ValidationError(
            f"weights: backbone {backbone!r} has no ImageNet weights; use weights=null (train from scratch)"
        )
    file_name = IMAGENET_FILES[backbone]
    if imagenet_weights_path:
        path = Path(imagenet_weights_path).expanduser()
        if path.is_dir():
            path = path / file_name
        if not path.is_file():
            raise ValidationError(
                f"weights: WORKBENCH_IMAGENET_WEIGHTS points to {str(path)!r}, which does not exist; "
                f"put {file_name} there (from {IMAGENET_URLS[backbone]}) or fix the setting"
            )
        return str(path)
    cached = keras_models_dir() / file_name
    if not cached.is_file():
        raise ValidationError(
            f"weights: ImageNet weights for {backbone} not found. The workbench does not download them: "
            f"copy {file_name} (from {IMAGENET_URLS[backbone]}) to {cached.parent}/ (the Keras cache; "
            f"KERAS_HOME moves it), or set WORKBENCH_IMAGENET_WEIGHTS to the file's path, "
            f"or train from scratch with weights=null"
        )
    return str(cached)
