"""Small image writers for graph tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def solid_png(path: Path, width: int, height: int, rgb: tuple[int, int, int],
              hole: tuple[int, int, int, int] | None = None) -> str:
    """A solid-color RGBA PNG; ``hole`` (top, left, h, w) gets alpha 0, i.e. LoadImage's MASK = 1 there."""
    data = np.zeros((height, width, 4), np.uint8)
    data[..., :3] = rgb
    data[..., 3] = 255
    if hole is not None:
        top, left, h, w = hole
        data[top : top + h, left : left + w, 3] = 0
    Image.fromarray(data, "RGBA").save(path)
    return Path(path).name


def noise_png(path: Path, width: int, height: int, hole: tuple[int, int, int, int] | None = None,
              seed: int = 0) -> str:
    """A random-noise RGBA PNG (every pixel distinct enough to catch a one-pixel shift); ``hole`` as above."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    data[..., 3] = 255
    if hole is not None:
        top, left, h, w = hole
        data[top : top + h, left : left + w, 3] = 0
    Image.fromarray(data, "RGBA").save(path)
    return Path(path).name
