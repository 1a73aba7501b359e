"""The pictures ``group-attention predict`` writes per image, each atomically: a 0/255 mask and a 16-bit probability
map per lesion at the original size, an overlay with one colour per lesion, and with ground truth the Fig. 5 overlay
(yellow true positive, red false positive, blue false negative)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .pictures import FALSE_NEGATIVE, FALSE_POSITIVE, LESION_COLOURS, TRUE_POSITIVE, save_png

__all__ = [
    "write_mask",
    "write_probability",
    "write_overlay",
    "write_truth_overlay",
    "read_probability",
]

OVERLAY_OPACITY = 0.6
# Large photographs: zlib level 1 writes a 12-megapixel PNG several times faster than the default 6.
PNG_COMPRESS_LEVEL = 1


def _save_png(path: "str | os.PathLike", image: Image.Image) -> Path:
    return save_png(path, image, compress_level=PNG_COMPRESS_LEVEL, durable=False)  # a rerun rewrites them


def write_mask(path: "str | os.PathLike", mask: np.ndarray) -> Path:
    """An ``(H, W)`` boolean mask as an 8-bit greyscale PNG with values 0 and 255."""
    return _save_png(path, Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L"))


def write_probability(path: "str | os.PathLike", probability: np.ndarray) -> Path:
    """An ``(H, W)`` probability map in [0, 1] as a 16-bit greyscale PNG: value ``round(p * 65535)``."""
    scaled = np.round(np.clip(probability, 0.0, 1.0) * 65535.0).astype(np.uint16)
    return _save_png(path, Image.fromarray(scaled))


def read_probability(path: "str | os.PathLike") -> np.ndarray:
    """Read a map written by :func:`write_probability` back as float32 in [0, 1]."""
    with Image.open(path) as opened:
        return np.asarray(opened).astype(np.float32) / 65535.0


def write_overlay(path: "str | os.PathLike", image: Image.Image, masks: dict[str, np.ndarray]) -> Path:
    """The photograph with each lesion's mask tinted in its :data:`LESION_COLOURS` colour."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for lesion, mask in masks.items():
        colour = np.asarray(LESION_COLOURS.get(lesion, (255, 255, 255)), dtype=np.float32)
        selected = np.asarray(mask, dtype=bool)
        canvas[selected] = (1 - OVERLAY_OPACITY) * canvas[selected] + OVERLAY_OPACITY * colour
    return _save_png(path, Image.fromarray(np.round(canvas).astype(np.uint8)))


def write_truth_overlay(
    path: "str | os.PathLike", image: Image.Image, prediction: np.ndarray, truth: np.ndarray
) -> Path:
    """The Fig. 5 picture at full resolution, in the experiment's colours."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    predicted, actual = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    canvas[predicted & actual] = TRUE_POSITIVE
    canvas[predicted & ~actual] = FALSE_POSITIVE
    canvas[~predicted & actual] = FALSE_NEGATIVE
    return _save_png(path, Image.fromarray(canvas))
