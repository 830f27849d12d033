"""Whether a warm-started round caches backbone maps: only when the maps are much smaller than the images."""

from __future__ import annotations

from workbench.model.config import preset
from workbench.model.features import CACHE_MAX_MAP_FRACTION, cache_pays


def test_the_cpu_preset_keeps_a_half_resolution_map_so_it_does_not_cache() -> None:
    cfg = preset("cpu")[0]
    w, h = cfg.input_size
    map_values = (w // 2) * (h // 2) * (cfg.cnn_width + 3)
    assert map_values > CACHE_MAX_MAP_FRACTION * w * h * 3
    assert not cache_pays(cfg)


def test_a_deep_small_cnn_and_pretrained_backbones_cache() -> None:
    cpu = preset("cpu")[0]
    deep = cpu.derive(cnn_blocks=4, whiteness_prior=False, change_convs=[], input_size=[96, 96])
    assert cache_pays(deep)  # 6x6x(8*8) values against 96x96x3
    assert cache_pays(preset("card")[0])
