"""Whether a warm-started round caches backbone maps: only when the maps are much smaller than the images."""

from __future__ import annotations

from workbench.model.config import preset
from workbench.model.features import CACHE_MAX_MAP_FRACTION, cache_pays


def test_a_one_block_map_with_whiteness_channels_is_not_cached() -> None:
    cfg = preset("cpu")[0].derive(
        input_size=[192, 192], cnn_width=8, cnn_blocks=1, whiteness_prior=True, input_norm=True
    )
    map_values = 96 * 96 * (8 + 3)
    assert map_values > CACHE_MAX_MAP_FRACTION * 192 * 192 * 3
    assert not cache_pays(cfg)


def test_the_presets_cache() -> None:
    assert cache_pays(preset("cpu")[0])  # 6x6x128 values against 96x96x3
    assert cache_pays(preset("card")[0])


def test_aligned_shots_are_never_cached() -> None:
    """The cache holds one map per image file; an aligned pre shot depends on its post shot."""
    for name in ("cpu", "card"):
        assert not cache_pays(preset(name)[0].derive(align_shots=True))
