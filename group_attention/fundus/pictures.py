"""What every picture of the application shares: its colours and its one PNG writer (atomic).

The experiment's figures (:mod:`~group_attention.fundus.engine.visualize`) and the outputs of ``group-attention
predict`` (:mod:`~group_attention.fundus.outputs`) both draw with these.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from ..atomic import atomic_write

__all__ = ["TRUE_POSITIVE", "FALSE_POSITIVE", "FALSE_NEGATIVE", "LESION_COLOURS", "save_png"]

# Fig. 5 of the paper: prediction against ground truth.
TRUE_POSITIVE = (255, 255, 0)  # yellow
FALSE_POSITIVE = (255, 0, 0)  # red
FALSE_NEGATIVE = (0, 0, 255)  # blue

#: One colour per lesion in the prediction overlay (RGB).
LESION_COLOURS: dict[str, tuple[int, int, int]] = {
    "EX": (255, 255, 0),  # yellow
    "HE": (0, 255, 255),  # cyan: stands out on the red fundus, where red would not
    "MA": (255, 0, 255),  # magenta
    "SE": (0, 255, 0),  # green
    "OD": (0, 96, 255),  # blue
}


def save_png(path: "str | os.PathLike", image: Image.Image, *, compress_level: int = 6, durable: bool = True) -> Path:
    """Save a Pillow image as PNG atomically.

    Args:
        compress_level: zlib level; 1 writes a 12-megapixel photograph several times faster than the default 6.
        durable: fsync before the rename (see :func:`~group_attention.atomic.atomic_write`); outputs that a rerun
            rewrites can skip it.
    """
    return atomic_write(
        path, lambda stream: image.save(stream, format="PNG", compress_level=compress_level), durable=durable
    )
