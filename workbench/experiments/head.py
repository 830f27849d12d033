"""The models of a simulation: each seed's feature extractor, and a head trainer that refits the fusion
head on cached backbone features every round.

The head trainer is separate from ``model.training`` on purpose: a simulation refits the head hundreds of
times on a few dozen cases, so it uses one compiled train step per seed and restores the initial weights,
optimizer state and dropout seed before each fit, which makes a fit depend only on its labelled set and
round seed (the same for every strategy).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def silence_tf() -> None:
    """Quiet TensorFlow's C++ logging unless the caller chose a level (before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_feature_extractor(
    model_cfg: Any, train_cfg: Any, pairs: list[tuple[str, str]], y: np.ndarray, epochs: int, seed: int
) -> Any:
    """Full model trained end to end on the initial labels for a fixed number of epochs (no validation)."""
    import keras

    from workbench.model.builder import build_model
    from workbench.model.pipeline import make_dataset
    from workbench.model.training import compute_class_weights, seed_everything

    seed_everything(seed, deterministic=True)
    model = build_model(model_cfg)
    train_model = keras.Model(model.input, model.output["logit"], name="sim_train_logit")
    ds = make_dataset(
        pairs,
        list(y),
        input_size=model_cfg.input_size,
        backbone=model_cfg.backbone,
        batch_size=train_cfg.phase1_batch,
        training=True,
        augment=train_cfg.augment,
        augment_policy=train_cfg.augment_policy,
        seed=seed,
        align=model_cfg.align_shots,
    )
    train_model.compile(
        optimizer=keras.optimizers.Adam(train_cfg.phase1_lr),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    train_model.fit(ds, epochs=epochs, class_weight=compute_class_weights(y), shuffle=False, verbose=0)
    return model


class HeadTrainer:
    """Retrains the fusion head on cached features from the same initial weights, fast and repeatably.

    One compiled train step per seed (a tf.function with a free batch dimension, traced once); each fit
    restores the initial head weights, zeroes the optimizer state and reseeds dropout, so the same
    labelled set and round seed give the same head whatever happened before.
    """

    def __init__(self, head: Any, lr: float, dropout: float) -> None:
        import keras
        import tensorflow as tf

        self.head = head
        self.logit_model = keras.Model(head.input, head.output["logit"], name="sim_head_logit")
        self.emb_model = keras.Model(head.input, head.get_layer("embedding").output, name="sim_head_emb")
        self.dropout = float(dropout)
        self.initial = [np.array(v) for v in head.get_weights()]
        self.seed_states = [v for v in self.logit_model.variables if "seed_generator_state" in v.path]
        variables = self.logit_model.trainable_variables
        self.optimizer = keras.optimizers.Adam(lr)
        self.optimizer.build(variables)
        self.opt_state = [v for v in self.optimizer.variables if "learning_rate" not in v.path]
        shape = tuple(head.input["pre_features"].shape[1:])
        spec = tf.TensorSpec((None, *shape), tf.float32)
        model, optimizer = self.logit_model, self.optimizer

        column = tf.TensorSpec((None, 1), tf.float32)

        @tf.function(input_signature=[spec, spec, column, column])
        def step(pre: Any, post: Any, y: Any, w: Any) -> Any:
            with tf.GradientTape() as tape:
                z = model({"pre_features": pre, "post_features": post}, training=True)
                per_case = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
                loss = tf.reduce_sum(w * per_case) / tf.cast(tf.shape(y)[0], tf.float32)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        self._step = step

    def fit(self, x: dict[str, np.ndarray], y: np.ndarray, epochs: int, batch: int, seed: int) -> None:
        """Train from the initial weights for ``epochs`` epochs with class-balanced weights."""
        from workbench.model.training import compute_class_weights

        self.head.set_weights(self.initial)
        for v in self.opt_state:
            v.assign(np.zeros(v.shape, dtype=v.dtype))
        for v in self.seed_states:
            v.assign(np.array([seed % (2**31), 0], dtype=np.int64))
        cw = compute_class_weights(y)
        weights = np.where(y == 1, cw[1], cw[0]).astype(np.float32).reshape(-1, 1)
        target = y.astype(np.float32).reshape(-1, 1)
        rng = np.random.default_rng([seed, 0x4EAD])
        n = len(y)
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                self._step(x["pre_features"][idx], x["post_features"][idx], target[idx], weights[idx])

    def predict(self, x: dict[str, np.ndarray], mc_samples: int, seed: int) -> dict[str, np.ndarray]:
        """Probabilities, MC-dropout samples (K x N, None when K < 2) and pooled embeddings."""
        n = len(x["pre_features"])
        emb = np.concatenate(
            [
                np.asarray(
                    self.emb_model({k: v[i : i + 512] for k, v in x.items()}, training=False), np.float64
                )
                for i in range(0, n, 512)
            ]
        )
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in self.head.get_layer("logit").get_weights())
        prob = _sigmoid(emb @ kernel[:, 0] + bias[0])
        mc = None
        if mc_samples >= 2:
            rng = np.random.default_rng([seed, 0x3C])
            keep = 1.0 - self.dropout
            samples = []
            for _ in range(mc_samples):
                mask = rng.random(emb.shape) < keep if keep < 1.0 else np.ones(emb.shape, dtype=bool)
                samples.append(_sigmoid((emb * mask / keep) @ kernel[:, 0] + bias[0]))
            mc = np.stack(samples)
        return {"prob": prob, "mc": mc, "embedding": emb}


def fit_predict(
    trainer: HeadTrainer,
    feats: dict[str, np.ndarray],
    y: np.ndarray,
    labelled: np.ndarray,
    rnd: int,
    *,
    epochs: int,
    batch: int,
    mc_samples: int,
    seed: int,
) -> dict[str, Any]:
    """Retrain the head on the labelled cases (seeded by seed and round) and predict every case."""
    x = {k: v[labelled] for k, v in feats.items()}
    trainer.fit(x, y[labelled], epochs, batch, seed=seed * 1000 + rnd)
    return trainer.predict(feats, mc_samples, seed=seed * 1000 + rnd)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, with logits clipped so that large ones neither overflow nor leave [0, 1]."""
    return np.clip(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))), 0.0, 1.0)
