"""Random noise images, the same bytes for the same seed and size."""

from __future__ import annotations

import io

import numpy as np


def png_bytes(seed: int = 0, size: tuple[int, int] = (64, 64)) -> bytes:
    """A PNG of random RGB noise, `size` = (width, height)."""
    from PIL import Image

    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()
