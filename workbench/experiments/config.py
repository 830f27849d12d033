"""The settings of a simulation, checked once: loop sizes, seeds, strategy mixes and the model to train.

Every bad value raises a ValidationError naming the setting, in the order the settings are listed, before
any data is read or any file written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.active.strategies import DEFAULT_MIX, STRATEGIES, base_strategy, strategy_for, validate_mix
from workbench.errors import ValidationError

DEFAULT_STRATEGIES: tuple[str, ...] = ("mixed", "near_threshold", "likely_positive", "random")
BASELINE = "random"
#: Strategies that need inputs the simulation does not produce (test-time augmentation).
UNSUPPORTED = {"tta_spread": "needs test-time augmentation spreads, which the simulation does not compute"}
#: End-to-end epochs of each seed's feature extractor. With ~40 initial labels an epoch is only ~3 steps, and
#: the from-scratch CNN needs ~180 steps to pick up the lesion: on 600 synthetic pairs (seeds 0-2) 25 or 40
#: epochs left the frozen features near chance (test AUROC 0.4-0.8 after the head), 60 gave 0.87-0.94.
DEFAULT_FEATURE_EPOCHS = 60
#: Head-only epochs per round, and the head's batch size (larger than the preset's 16: the head is cheap
#: per case, and a step costs about the same at 32, so a fit takes half the steps).
DEFAULT_HEAD_EPOCHS = 30
DEFAULT_HEAD_BATCH = 32


def parse_strategy(spec: str) -> dict[str, float]:
    """The mix a strategy name stands for: ``mixed`` -> DEFAULT_MIX, ``name`` -> {name: 1.0}, or a custom
    mix ``"near_threshold=0.6+likely_positive=0.4"`` (shares summing to 1). A name may be sampled
    (``power:near_threshold``, ``softmax@20:entropy``; see ``strategies.SAMPLING_MODES``)."""
    text = (spec or "").strip()
    if not text:
        raise ValidationError("strategy name is empty")
    if text == "mixed":
        mix = dict(DEFAULT_MIX)
    elif "=" in text:
        mix = {}
        for part in text.split("+"):
            name, sep, share = part.partition("=")
            if not sep:
                raise ValidationError(f"strategy mix {text!r}: write parts as name=share joined by '+'")
            try:
                mix[name.strip()] = float(share)
            except ValueError:
                raise ValidationError(f"strategy mix {text!r}: share {share!r} is not a number") from None
    else:
        if ":" not in text and text not in STRATEGIES:
            known = ", ".join(["mixed", *(s for s in STRATEGIES if s not in UNSUPPORTED)])
            raise ValidationError(
                f"unknown strategy {text!r} (one of {known}, sampled like power:near_threshold, or a mix like a=0.5+b=0.5)"
            )
        strategy_for(text)  # a malformed sampled name says why
        mix = {text: 1.0}
    mix = validate_mix(mix)
    for name, share in mix.items():
        if share > 0 and base_strategy(name) in UNSUPPORTED:
            raise ValidationError(
                f"strategy {name!r} cannot be simulated: it {UNSUPPORTED[base_strategy(name)]}"
            )
    return mix


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int when it is a whole number (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _seed_list(seeds: Sequence[int] | int) -> list[int]:
    """Distinct seeds from a list, or 0..S-1 from a count S."""
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        return list(range(_check_int("seeds", seeds, 1)))
    out = [_check_int("seed", s, 0) for s in seeds]
    if not out:
        raise ValidationError("seeds: give at least one seed")
    if len(set(out)) != len(out):
        raise ValidationError(f"seeds must be distinct, got {out}")
    return out


def _strategy_list(strategies: Sequence[str] | str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Strategy names (``random`` appended as the baseline when missing) and the mix of each."""
    names = [strategies] if isinstance(strategies, str) else list(strategies)
    names = [n.strip() for n in names]
    if not names:
        raise ValidationError("strategies: give at least one strategy")
    if len(set(names)) != len(names):
        raise ValidationError(f"strategies are repeated: {names}")
    mixes = {n: parse_strategy(n) for n in names}
    if BASELINE not in mixes:
        names.append(BASELINE)
        mixes[BASELINE] = {BASELINE: 1.0}
    return names, mixes


@dataclass(frozen=True)
class SimulationConfig:
    """Checked settings of one simulation; ``strategies`` ends with the ``random`` baseline when it was
    not asked for, ``mixes`` gives each strategy's mix, ``head_lr`` is resolved from the preset."""

    rounds: int
    batch: int
    initial: int
    seeds: list[int]
    strategies: list[str]
    mixes: dict[str, dict[str, float]]
    preset: str
    model_cfg: Any
    train_cfg: Any
    feature_epochs: int
    head_epochs: int
    head_lr: float
    head_batch: int
    test_fraction: float
    mc_samples: int
    use_embeddings: bool


def check_config(
    *,
    rounds: Any,
    batch: Any,
    initial: Any,
    seeds: Sequence[int] | int,
    strategies: Sequence[str] | str,
    preset: str,
    model_overrides: Mapping[str, Any] | None,
    feature_epochs: Any,
    head_epochs: Any,
    head_lr: float | None,
    head_batch: Any,
    test_fraction: Any,
    mc_samples: Any,
    use_embeddings: bool,
) -> SimulationConfig:
    """Validate the arguments of :func:`~workbench.experiments.protocol.simulate` and load the preset."""
    rounds = _check_int("rounds", rounds, 1)
    batch = _check_int("batch", batch, 1)
    initial = _check_int("initial", initial, 2)
    head_epochs = _check_int("head_epochs", head_epochs, 1)
    mc_samples = _check_int("mc_samples", mc_samples, 0)
    if mc_samples == 1:
        raise ValidationError("mc_samples must be 0 (no MC dropout) or >= 2")
    if not isinstance(test_fraction, int | float) or not 0.05 <= float(test_fraction) <= 0.5:
        raise ValidationError(f"test_fraction must be between 0.05 and 0.5, got {test_fraction!r}")
    seed_list = _seed_list(seeds)
    names, mixes = _strategy_list(strategies)
    uses = {base_strategy(n) for mix in mixes.values() for n, share in mix.items() if share > 0}
    if "diversity" in uses and not use_embeddings:
        raise ValidationError("strategy 'diversity' needs embeddings; do not turn embeddings off")
    if "bald" in uses and mc_samples < 2:
        raise ValidationError("strategy 'bald' needs MC-dropout samples: set mc_samples >= 2")

    from workbench.model.config import ModelConfig
    from workbench.model.config import preset as load_preset

    model_cfg, train_cfg = load_preset(preset)
    if model_overrides:
        model_cfg = ModelConfig.from_dict({**model_cfg.to_dict(), **dict(model_overrides)})
    feature_epochs = _check_int("feature_epochs", feature_epochs, 1)
    lr = float(head_lr if head_lr is not None else train_cfg.phase1_lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValidationError(f"head_lr must be a positive number, got {head_lr!r}")
    head_batch = _check_int("head_batch", head_batch, 1)
    return SimulationConfig(
        rounds=rounds,
        batch=batch,
        initial=initial,
        seeds=seed_list,
        strategies=names,
        mixes=mixes,
        preset=preset,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        feature_epochs=feature_epochs,
        head_epochs=head_epochs,
        head_lr=lr,
        head_batch=head_batch,
        test_fraction=float(test_fraction),
        mc_samples=mc_samples,
        use_embeddings=bool(use_embeddings),
    )
