"""The dual-input attention model, built from stock Keras layers only.

Layout (names are part of the contract: features.py, inference.py and training.py look them up)::

    "pre"  (H, W, 3) float32 -> pre_backbone  --+                        (shared: one "shared_backbone")
    "post" (H, W, 3) float32 -> post_backbone --+
        feature maps (h, w, C) -> {pre,post}_tokens: Reshape to h*w tokens
        -> {pre,post}_token_proj: Dense(token_dim)
        -> position_embedding: learned (h*w, token_dim) additive table, shared by both images
        -> {pre,post}_modality_embedding: learned (token_dim,) additive vector per image
        -> pre_attends_post / post_attends_pre: MultiHeadAttention, each image's tokens query the other's
        -> residual Add + LayerNormalization -> global average and max pooling
        change path: post_minus_pre (feature maps) -> change_proj Dense(token_dim, relu) -> max/avg pool
        -> Concatenate ("fused")
        -> "embedding" Dense(token_dim, relu) -> "head_dropout" -> "logit" Dense(1) -> "probability" sigmoid

Outputs are a dict {"logit", "probability"}. The only Dropout sits after "embedding" so MC-dropout
can replay just the tail (inference.py) while batch normalisation stays in inference mode.

Learned embeddings without custom layers: an ``EinsumDense`` with equation ``"bnd,d->bnd"``
(kernel initialised to ones) and ``bias_axes="nd"`` is an additive learned (tokens, dim) table; with
``bias_axes="d"`` it is an additive learned vector. Only built-in layers are used, so
``keras.models.load_model(path)`` works in a process that imported nothing but keras, with
``safe_mode=True``. Every backbone layer is prefixed ("pre_", "post_" or "shared_") so that layer
and weight names are unique, which lets the legacy ``.h5`` format save the model too.

Channel order: the model takes RGB images already passed through ``preprocess_fn(backbone)``.
For ResNet50 that is ``keras.applications.resnet50.preprocess_input`` ("caffe" mode: RGB->BGR and
ImageNet mean subtraction, no scaling); for small_cnn it is RGB scaled to [-1, 1].
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from workbench.errors import ValidationError
from workbench.model.config import ModelConfig
from workbench.model.weights import resolve_weights

#: Default first block that phase-2 fine-tuning unfreezes, as an unprefixed layer-name prefix.
DEFAULT_FINE_TUNE_BLOCK: dict[str, str] = {
    "resnet50": "conv5_",
    "small_cnn": "block3_",
    "mobilenet_v2": "block_13_",
    "efficientnetb0": "block6",
}

HEAD_LAYER_NAMES: tuple[str, ...] = (
    "pre_token_proj",
    "post_token_proj",
    "position_embedding",
    "pre_modality_embedding",
    "post_modality_embedding",
    "pre_token_norm",
    "post_token_norm",
    "pre_attends_post",
    "post_attends_pre",
    "pre_fused_norm",
    "post_fused_norm",
    "change_proj",
    "embedding",
    "logit",
)


#: Model-name suffix of a model whose pre shot is aligned onto post before it sees them
#: (``ModelConfig.align_shots``). The name travels inside the saved model, so every caller of the
#: inference functions (rounds, exported bundles) prepares the pixels the way training did.
ALIGNED_SUFFIX = "_aligned"


def model_name(backbone: str, aligned: bool = False) -> str:
    """Name given to the full model; encodes the backbone (the preprocessing) and the shot alignment."""
    return f"dual_attention_{backbone}" + (ALIGNED_SUFFIX if aligned else "")


def backbone_from_model(model: Any) -> str:
    """The backbone name a workbench model was built with (from its name)."""
    name = (getattr(model, "name", "") or "").removeprefix("head_").removesuffix(ALIGNED_SUFFIX)
    for backbone in sorted(DEFAULT_FINE_TUNE_BLOCK, key=len, reverse=True):
        if name == model_name(backbone):
            return backbone
    raise ValidationError(
        f"model {getattr(model, 'name', None)!r} was not built by the workbench builder (unknown backbone)"
    )


def aligns_shots(model: Any) -> bool:
    """True when the model expects its pre shot aligned onto post (workbench.data.alignment)."""
    return (getattr(model, "name", "") or "").endswith(ALIGNED_SUFFIX)


def preprocess_fn(backbone: str) -> Callable[[Any], Any]:
    """The function mapping RGB float pixels in [0, 255] to the backbone's expected input.

    Works on NumPy arrays and TF tensors. ResNet50: caffe mode (BGR, ImageNet mean subtracted).
    small_cnn: RGB / 127.5 - 1. MobileNetV2: RGB scaled to [-1, 1]. EfficientNetB0: identity
    (the network rescales internally).
    """
    import keras

    if backbone == "resnet50":
        return keras.applications.resnet50.preprocess_input
    if backbone == "mobilenet_v2":
        return keras.applications.mobilenet_v2.preprocess_input
    if backbone == "efficientnetb0":
        return keras.applications.efficientnet.preprocess_input
    if backbone == "small_cnn":
        return _scale_unit
    raise ValidationError(f"backbone: unknown backbone {backbone!r}")


def _scale_unit(x: Any) -> Any:
    return x / 127.5 - 1.0


def _small_cnn(cfg: ModelConfig, prefix: str) -> Any:
    """A small from-scratch CNN: ``cnn_blocks`` blocks of (3x3 conv, BN, ReLU) x2 + 2x2 max-pool,
    widths w, 2w, 4w, 8w; with ``input_norm`` each image is first standardised per channel, with
    ``whiteness_prior`` two colour-opponent channels are appended to the output map."""
    import keras
    from keras import layers

    w, h = cfg.input_size
    inp = keras.Input(shape=(h, w, 3), name=f"{prefix}input")
    x = inp
    if cfg.input_norm:
        # Per image and channel over height and width, no learned parameters: exposure and white
        # balance gains of one shot cancel before any feature is computed.
        x = layers.LayerNormalization(
            axis=[1, 2], center=False, scale=False, epsilon=1e-3, name=f"{prefix}input_norm"
        )(x)
    image = x
    for block, mult in enumerate((1, 2, 4, 8)[: cfg.cnn_blocks], start=1):
        filters = cfg.cnn_width * mult
        for conv in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"{prefix}block{block}_conv{conv}"
            )(x)
            x = layers.BatchNormalization(name=f"{prefix}block{block}_bn{conv}")(x)
            x = layers.Activation("relu", name=f"{prefix}block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}block{block}_pool")(x)
    if cfg.whiteness_prior:
        white = _whiteness_channels(inp, image, prefix)
        white = layers.AveragePooling2D(2**cfg.cnn_blocks, name=f"{prefix}whiteness_pool")(white)
        x = layers.Concatenate(name=f"{prefix}features")([x, white])
    backbone = keras.Model(inp, x, name=f"{prefix}backbone")
    if cfg.whiteness_prior:
        init_whiteness(backbone, prefix)
    return backbone


#: 1x1 kernels of the whiteness prior. "opponent" maps (r, g, b) to the six signed deviations from
#: their mean m (r-m, g-m, b-m and their negatives); after a ReLU their sum is the L1 distance from
#: grey (colourfulness). "whiteness" maps [r, g, b, six deviations, glare] to
#: [m - 0.5 * colourfulness - GLARE_WEIGHT * glare, colourfulness, glare]. Glare (specular
#: highlights: near-saturated in every channel of the raw image) is white too, but it is not
#: acetowhitening, so it is taken out of the whiteness channel from the start.
GLARE_LEVEL = 0.85  # of the small_cnn input scale [-1, 1]: raw pixels above ~236 in every channel
GLARE_SLOPE = 10.0
GLARE_WEIGHT = 2.0


def _whiteness_kernels() -> dict[str, list[Any]]:
    import numpy as np

    dev = np.eye(3) - 1.0 / 3.0  # column j: channel j minus the mean
    opponent = np.concatenate([dev, -dev], axis=1).reshape(1, 1, 3, 6)
    mix = np.zeros((10, 3))
    mix[:3, 0] = 1.0 / 3.0
    mix[3:9, 0] = -0.5
    mix[9, 0] = -GLARE_WEIGHT
    mix[3:9, 1] = 1.0
    mix[9, 2] = 1.0
    select = [np.eye(3)[:, [c]].reshape(1, 1, 3, 1) for c in range(3)]
    glare = [np.full((1, 1, 1, 1), GLARE_SLOPE), np.full((1,), -GLARE_SLOPE * GLARE_LEVEL)]
    kernels = {
        "opponent": [opponent],
        "whiteness": [mix.reshape(1, 1, 10, 3)],
        "glare": glare,
    }
    kernels.update({f"channel_{c}": [select[i]] for i, c in enumerate("rgb")})
    return {k: [np.asarray(v, "float32") for v in vs] for k, vs in kernels.items()}


def _whiteness_channels(raw: Any, image: Any, prefix: str) -> Any:
    """Whiteness, colourfulness and glare maps from the raw (``raw``) and normalised (``image``) input."""
    from keras import layers

    channels = [layers.Conv2D(1, 1, use_bias=False, name=f"{prefix}channel_{c}")(raw) for c in "rgb"]
    darkest = layers.Minimum(name=f"{prefix}darkest_channel")(channels)
    glare = layers.Conv2D(1, 1, activation="relu", name=f"{prefix}glare")(darkest)
    glare = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}glare_halo")(glare)
    dev = layers.Conv2D(6, 1, use_bias=False, name=f"{prefix}opponent")(image)
    dev = layers.Activation("relu", name=f"{prefix}opponent_relu")(dev)
    both = layers.Concatenate(name=f"{prefix}colour")([image, dev, glare])
    return layers.Conv2D(3, 1, use_bias=False, name=f"{prefix}whiteness")(both)


def init_whiteness(backbone: Any, prefix: str) -> None:
    """Set the whiteness-prior kernels of a freshly built backbone to their formulas."""
    for name, weights in _whiteness_kernels().items():
        backbone.get_layer(f"{prefix}{name}").set_weights(weights)


def _application(cfg: ModelConfig, prefix: str, weights_path: str | None) -> Any:
    """A keras.applications backbone (no top) with every layer renamed ``prefix + name``."""
    import keras

    w, h = cfg.input_size
    constructors = {
        "resnet50": keras.applications.ResNet50,
        "mobilenet_v2": keras.applications.MobileNetV2,
        "efficientnetb0": keras.applications.EfficientNetB0,
    }
    # weights is a local file path or None: never the string "imagenet" (that would download).
    base = constructors[cfg.backbone](include_top=False, weights=weights_path, input_shape=(h, w, 3))

    def rename(layer: Any) -> Any:
        config = layer.get_config()
        config["name"] = prefix + layer.name
        return layer.__class__.from_config(config)

    inp = keras.Input(shape=(h, w, 3), name=f"{prefix}input")
    clone = keras.models.clone_model(base, input_tensors=inp, clone_function=rename)
    clone.set_weights(base.get_weights())
    return keras.Model(clone.inputs[0], clone.outputs[0], name=f"{prefix}backbone")


def build_backbone(cfg: ModelConfig, prefix: str, imagenet_weights_path: str | None = None) -> Any:
    """One backbone as a named sub-model ``{prefix}backbone`` mapping (H, W, 3) to a feature map."""
    cfg.validate()
    if cfg.backbone == "small_cnn":
        backbone = _small_cnn(cfg, prefix)
        if cfg.weights is not None:
            path = resolve_weights(cfg.backbone, cfg.weights, imagenet_weights_path)
            try:
                backbone.load_weights(path)
            except Exception as exc:  # noqa: BLE001 - any load failure is a bad weights file
                raise ValidationError(f"weights: cannot load {path!r} into small_cnn: {exc}") from exc
        return backbone
    path = resolve_weights(cfg.backbone, cfg.weights, imagenet_weights_path)
    return _application(cfg, prefix, path)


def feature_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    """(h, w, channels) of the backbone feature map for this configuration (no weights loaded)."""
    probe = ModelConfig.from_dict({**cfg.to_dict(), "weights": None})
    backbone = build_backbone(probe, "probe_")
    h, w, c = (int(v) for v in backbone.output_shape[1:])
    return h, w, c


def build_head(cfg: ModelConfig, pre_map: Any, post_map: Any) -> dict[str, Any]:
    """The fusion head on two feature-map tensors; returns {"embedding", "logit", "probability"}."""
    import keras
    from keras import layers

    fh, fw, channels = (int(v) for v in pre_map.shape[1:])
    dim = cfg.token_dim
    if cfg.change_tolerance > 1 and min(fh, fw) < 2:
        raise ValidationError(f"change_tolerance: the feature map is only {fw}x{fh}; use a larger input")
    shrink = 2 ** len(cfg.change_convs)
    if fh < shrink or fw < shrink:
        raise ValidationError(
            f"change_convs: {len(cfg.change_convs)} pooled conv layers need a feature map of at least "
            f"{shrink}x{shrink}, got {fw}x{fh}; use a larger input_size or fewer change_convs"
        )
    if fh < cfg.token_pool or fw < cfg.token_pool:
        raise ValidationError(f"token_pool: {cfg.token_pool} exceeds the {fw}x{fh} feature map")
    th, tw = fh // cfg.token_pool, fw // cfg.token_pool
    n_tokens = th * tw

    def embedding_table(name: str, bias_axes: str) -> Any:
        return layers.EinsumDense(
            "bnd,d->bnd",
            output_shape=(n_tokens, dim),
            bias_axes=bias_axes,
            kernel_initializer="ones",
            bias_initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=None),
            name=name,
        )

    position = embedding_table("position_embedding", "nd")
    tokens = {}
    for side, fmap in (("pre", pre_map), ("post", post_map)):
        if cfg.token_pool > 1:
            fmap = layers.AveragePooling2D(cfg.token_pool, name=f"{side}_token_pool")(fmap)
        t = layers.Reshape((n_tokens, channels), name=f"{side}_tokens")(fmap)
        t = layers.Dense(dim, name=f"{side}_token_proj")(t)
        t = position(t)
        t = embedding_table(f"{side}_modality_embedding", "d")(t)
        tokens[side] = layers.LayerNormalization(name=f"{side}_token_norm")(t)

    pooled = []
    for side, other in (("pre", "post"), ("post", "pre")):
        attended = layers.MultiHeadAttention(
            num_heads=cfg.heads, key_dim=cfg.key_dim, name=f"{side}_attends_{other}"
        )(query=tokens[side], value=tokens[other], key=tokens[other])
        fused = layers.Add(name=f"{side}_residual")([tokens[side], attended])
        fused = layers.LayerNormalization(name=f"{side}_fused_norm")(fused)
        pooled.append(layers.GlobalAveragePooling1D(name=f"{side}_pool")(fused))
        pooled.append(layers.GlobalMaxPooling1D(name=f"{side}_max_pool")(fused))

    # Change path: what the stain changed at each position (post minus pre feature map), projected
    # and max-pooled, so a small lesion that appears only after staining is not averaged away. With a
    # tolerance, pre is max-filtered first: only what is brighter than everything near it in pre counts.
    reference = pre_map
    if cfg.change_tolerance > 1:
        reference = layers.MaxPooling2D(
            cfg.change_tolerance, strides=1, padding="same", name="pre_tolerance"
        )(pre_map)
    change = layers.Subtract(name="post_minus_pre")([post_map, reference])
    for i, width in enumerate(cfg.change_convs, start=1):
        if cfg.change_norm:  # batch norm before the ReLU: the faint change signal is rescaled from step 1
            change = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"change_conv{i}")(change)
            change = layers.BatchNormalization(name=f"change_conv{i}_bn")(change)
            change = layers.Activation("relu", name=f"change_conv{i}_relu")(change)
        else:
            change = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"change_conv{i}")(
                change
            )
        change = layers.MaxPooling2D(2, name=f"change_conv{i}_pool")(change)
    ch, cw, cc = (int(v) for v in change.shape[1:])
    change = layers.Reshape((ch * cw, cc), name="change_tokens")(change)
    change = layers.Dense(dim, activation="relu", name="change_proj")(change)
    pooled.append(layers.GlobalMaxPooling1D(name="change_max_pool")(change))
    pooled.append(layers.GlobalAveragePooling1D(name="change_pool")(change))

    fused = layers.Concatenate(name="fused")(pooled)
    embedding = layers.Dense(dim, activation="relu", name="embedding")(fused)
    x = layers.Dropout(cfg.dropout, name="head_dropout")(embedding)
    logit = layers.Dense(1, name="logit", dtype="float32")(x)
    probability = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    return {"embedding": embedding, "logit": logit, "probability": probability}


def build_model(cfg: ModelConfig, imagenet_weights_path: str | None = None) -> Any:
    """Build the full dual-input model. Inputs "pre" and "post" (preprocessed float32 images),
    outputs {"logit": (B, 1), "probability": (B, 1)}.

    ``imagenet_weights_path`` is the WORKBENCH_IMAGENET_WEIGHTS setting (used when weights="imagenet").
    """
    import keras

    cfg.validate()
    w, h = cfg.input_size
    pre = keras.Input(shape=(h, w, 3), name="pre", dtype="float32")
    post = keras.Input(shape=(h, w, 3), name="post", dtype="float32")
    if cfg.shared_backbone:
        shared = build_backbone(cfg, "shared_", imagenet_weights_path)
        pre_map, post_map = shared(pre), shared(post)
    else:
        pre_map = build_backbone(cfg, "pre_", imagenet_weights_path)(pre)
        post_map = build_backbone(cfg, "post_", imagenet_weights_path)(post)
    out = build_head(cfg, pre_map, post_map)
    return keras.Model(
        inputs={"pre": pre, "post": post},
        outputs={"logit": out["logit"], "probability": out["probability"]},
        name=model_name(cfg.backbone, cfg.align_shots),
    )


def backbones(model: Any) -> dict[str, Any]:
    """The backbone sub-models of a full model: {"pre": m, "post": m} (the same object when shared)."""
    names = {layer.name for layer in model.layers}
    if "shared_backbone" in names:
        shared = model.get_layer("shared_backbone")
        return {"pre": shared, "post": shared}
    if "pre_backbone" in names and "post_backbone" in names:
        return {"pre": model.get_layer("pre_backbone"), "post": model.get_layer("post_backbone")}
    raise ValidationError(f"model {model.name!r} has no pre/post backbone sub-models")


def _default_fine_tune_block(model: Any, backbone_name: str) -> str:
    """The per-backbone default; for small_cnn, its last block (the block count is configurable)."""
    if backbone_name != "small_cnn":
        return DEFAULT_FINE_TUNE_BLOCK[backbone_name]
    names = [layer.name for bb in backbones(model).values() for layer in bb.layers]
    found = [int(m.group(1)) for n in names if (m := re.search(r"_block(\d+)_conv", n))]
    return f"block{max(found)}_" if found else DEFAULT_FINE_TUNE_BLOCK[backbone_name]


def set_backbone_trainable(model: Any, mode: str, from_block: str | None = None) -> int:
    """Freeze or unfreeze the backbones; returns the number of trainable backbone layers.

    mode "frozen": nothing trainable (batch norm in inference mode). "all": everything.
    "top": layers from the first whose unprefixed name starts with ``from_block`` (default per
    backbone, e.g. "conv5_" for ResNet50) are trainable, except BatchNormalization layers, which
    stay frozen, as is usual when fine-tuning a pretrained network on a small data set.
    """
    from keras import layers

    if mode not in ("frozen", "all", "top"):
        raise ValidationError(f"mode: must be frozen, all or top; got {mode!r}")
    backbone_name = backbone_from_model(model)
    block = from_block or _default_fine_tune_block(model, backbone_name)
    count = 0
    seen = set()
    for side, bb in backbones(model).items():
        if id(bb) in seen:
            continue
        seen.add(id(bb))
        prefix = "shared_" if bb.name == "shared_backbone" else f"{side}_"
        if mode == "frozen":
            bb.trainable = False
            continue
        bb.trainable = True
        if mode == "all":
            count += sum(1 for layer in bb.layers if layer.weights)
            continue
        start = next(
            (i for i, layer in enumerate(bb.layers) if layer.name[len(prefix) :].startswith(block)), None
        )
        if start is None:
            examples = ", ".join(layer.name[len(prefix) :] for layer in bb.layers[1:6])
            raise ValidationError(
                f"fine_tune_from_block: no {backbone_name} layer name starts with {block!r} "
                f"(layer names look like {examples}, ...)"
            )
        for i, layer in enumerate(bb.layers):
            layer.trainable = i >= start and not isinstance(layer, layers.BatchNormalization)
            count += int(layer.trainable and bool(layer.weights))
    return count
