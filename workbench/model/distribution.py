"""Multi-device training: which ``tf.distribute`` strategy a training run uses, and how it scales.

The choice is the ``WORKBENCH_DISTRIBUTE`` setting (``Settings.distribute``; the registry passes it):

* ``auto`` (default): ``MirroredStrategy`` over every visible GPU when the process sees two or more;
  one GPU or none gives TensorFlow's default (single-device) strategy. A worker pinned to one GPU
  with ``CUDA_VISIBLE_DEVICES`` therefore trains on that GPU alone.
* ``off``: the default strategy whatever is visible.
* ``cpu:N`` (N >= 2): split the CPU into N logical devices and mirror over them. This exercises the
  strategy path without a GPU (tests, ``bench/gpu_check.py``); it must take effect before TensorFlow
  initialises its devices, so it is chosen first thing in a training process.

Scaling rule: each replica keeps the configured batch, so the global batch is ``batch x replicas``;
Adam's learning rate is multiplied by ``sqrt(replicas)``. The square-root rule is the one derived
for adaptive optimisers (Malladi et al., 2022, "On the SDEs and scaling rules for adaptive gradient
algorithms"); the linear rule (Goyal et al., 2017) is for SGD and overshoots with Adam. Both figures
and the device names go into the version's training record (:meth:`Distribution.record`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench.config import get_settings, parse_distribute_mode
from workbench.errors import ValidationError

SETTING = "WORKBENCH_DISTRIBUTE"
LR_SCALING = "sqrt"


def parse_mode(value: str, source: str = SETTING) -> str:
    """Check a distribution mode (``auto``, ``off`` or ``cpu:N`` with N >= 2) and return it normalised."""
    try:
        return parse_distribute_mode(value)
    except ValueError as exc:
        raise ValidationError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class Distribution:
    """A chosen strategy and the facts a training record keeps about it."""

    strategy: Any
    mode: str
    devices: tuple[str, ...]

    @property
    def strategy_name(self) -> str:
        """``MirroredStrategy`` or ``default`` (TensorFlow's one-device strategy)."""
        name = type(self.strategy).__name__
        return "default" if name.startswith("_Default") else name

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def global_batch(self, per_replica_batch: int) -> int:
        """Batch the input pipeline yields: each replica gets ``per_replica_batch`` examples."""
        return per_replica_batch * self.replicas

    def batch_for(self, per_replica_batch: int, n: int) -> int:
        """Batch for a set of ``n`` examples: the global batch, except for a set smaller than one
        global batch, which is rounded down to a multiple of the replicas; and a batch whose last
        partial batch would hold fewer examples than replicas is lowered, a multiple of the replicas
        at a time, until it does not.

        Keras 3 (TensorFlow backend) averages the first batch across replicas before fitting or
        evaluating; that fails unless the first batch splits evenly. A last batch smaller than the
        replicas leaves a replica an empty batch, which batch normalisation refuses.
        """
        full = self.global_batch(per_replica_batch)
        if self.replicas == 1:
            return full
        if n < self.replicas:
            raise ValidationError(
                f"a set of {n} example(s) cannot be split over {self.replicas} replicas; label more "
                f"cases or train on fewer devices ({SETTING}=off)"
            )
        batch = full if n >= full else n - n % self.replicas
        while batch > self.replicas and 0 < n % batch < self.replicas:
            batch -= self.replicas
        return batch

    def scaled_lr(self, lr: float) -> float:
        """Learning rate for the global batch: ``lr x sqrt(replicas)`` (see the module docstring)."""
        return lr * math.sqrt(self.replicas)

    def record(self, phases: Mapping[int, tuple[int, float]], n_train: int) -> dict[str, Any]:
        """JSON for the training record; ``phases`` maps a phase to its (per-replica batch, base lr),
        ``n_train`` is the training set size (``global_batch`` is the batch actually used)."""
        return {
            "strategy": self.strategy_name,
            "mode": self.mode,
            "replicas": self.replicas,
            "devices": list(self.devices),
            "lr_scaling": LR_SCALING,
            "phases": {
                str(phase): {
                    "per_replica_batch": batch,
                    "global_batch": self.batch_for(batch, n_train),
                    "lr": lr,
                    "scaled_lr": self.scaled_lr(lr),
                }
                for phase, (batch, lr) in phases.items()
            },
        }


def split_cpu(n: int) -> list[str]:
    """Split the CPU into ``n`` logical devices (before TF initialises them); returns their names.

    Calling it again with the same ``n`` is a no-op; a different split after initialisation, or any
    split once TensorFlow has already set up its devices, is refused with the reason.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) != n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError as exc:
            raise ValidationError(
                f"{SETTING}: cannot split the CPU into {n} logical devices because TensorFlow has "
                "already initialised its devices in this process; choose the distribution before any "
                f"TensorFlow operation (a fresh process) ({exc})"
            ) from exc
    return [f"/cpu:{i}" for i in range(n)]


def choose_distribution(mode: str | None = None) -> Distribution:
    """The strategy for ``mode`` (default: the ``WORKBENCH_DISTRIBUTE`` setting); see the module doc."""
    return _distribution(get_settings().distribute if mode is None else parse_mode(mode, "distribute"))


@functools.cache
def _distribution(mode: str) -> Distribution:
    """One strategy per mode and process: two MirroredStrategy objects in one process reuse the same
    collective keys, so a second training run would mix its all-reduces with the first one's."""
    import tensorflow as tf

    if mode.startswith("cpu:"):
        devices = split_cpu(int(mode.split(":")[1]))
        return Distribution(tf.distribute.MirroredStrategy(devices), mode, tuple(devices))
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if mode == "auto" and len(gpus) >= 2:
        return Distribution(tf.distribute.MirroredStrategy(gpus), mode, tuple(gpus))
    one = gpus[:1] or [d.name for d in tf.config.list_logical_devices("CPU")][:1]
    return Distribution(tf.distribute.get_strategy(), mode, tuple(one))
