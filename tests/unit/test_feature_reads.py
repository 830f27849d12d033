"""Stored feature maps are read back raw after one parsed header: same values as np.load."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from workbench.model.features import _read_maps


def test_raw_reads_equal_np_load_and_odd_files_fall_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(3, 4, 5)).astype(np.float32) for _ in range(5)]
    paths = []
    for i, m in enumerate(maps):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], m.astype(np.float16) if i == 3 else m)  # one written by a float16 cache
    with ThreadPoolExecutor(2) as pool:
        out = _read_maps(paths, pool)
    assert out.dtype == np.float32 and out.shape == (5, 3, 4, 5)
    for i, m in enumerate(maps):
        expected = m.astype(np.float16).astype(np.float32) if i == 3 else m
        assert np.array_equal(out[i], expected)
    paths[2].write_bytes(paths[2].read_bytes()[:-8])  # truncated: np.load says what is wrong
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError):
        _read_maps(paths, pool)
