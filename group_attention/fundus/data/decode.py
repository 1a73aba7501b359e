"""Decoding image and mask files: a fundus photograph to RGB, a lesion mask in any encoding to bool.

- :func:`read_fundus_image`: any Pillow-readable photograph -> loaded RGB image.
- :func:`read_lesion_mask`: a mask file (palette, RGB, grey, 1-bit, 16-bit, float; 0/1, 0/255, red on black or a
  lossy copy) -> ``(H, W)`` bool. The rule is written once in :doc:`/data` ("Reading masks").

Every error is an ``OSError`` naming the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["header_size", "read_binary_mask", "read_fundus_image", "read_lesion_mask"]

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


def read_fundus_image(path: str | os.PathLike) -> Image.Image:
    """Decode a fundus photograph to a loaded RGB Pillow image.

    Raises:
        OSError: naming the file when it is missing, not an image, or truncated.
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened if opened.mode == "RGB" else opened.convert("RGB")
    except _DECODE_ERRORS as err:
        raise OSError(f"cannot read image file {str(path)!r}: {err}") from err


def read_lesion_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as a boolean array, whatever its encoding.

    Per pixel, the strongest colour channel (after palette lookup) decides: a two-valued mask is lesion wherever it
    is not 0; a lossy copy is thresholded at half its encoding's full scale. The full rule, and why a grey threshold
    at 127 would lose IDRiD's red lesions, is in :doc:`/data` ("Reading masks").

    Args:
        path: a ``.tif`` mask (any Pillow-readable format works).

    Shape:
        Returns ``(H, W)`` bool, H x W being the file's size.

    Raises:
        OSError: naming the file when it is missing or cannot be decoded.

    Examples:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> red = np.zeros((4, 4, 3), np.uint8); red[1, 2] = (255, 0, 0)
        >>> path = tempfile.mkdtemp() + "/IDRiD_01_EX.tif"
        >>> Image.fromarray(red).save(path)
        >>> read_lesion_mask(path).sum()
        np.int64(1)
    """
    strongest = _read_strongest_channel(path)
    return _lesion_pixels(strongest)


def _read_strongest_channel(path: str | os.PathLike) -> np.ndarray:
    """The strongest colour channel of a mask file after palette lookup; ``OSError`` naming an unreadable file."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return _strongest_channel(opened)
    except _DECODE_ERRORS as err:
        raise OSError(f"cannot read mask file {str(path)!r}: {err}") from err


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask that must hold at most two values (background and lesion), as :func:`read_lesion_mask` does.

    The values are those of the strongest colour channel after palette lookup, so 0/1, 0/255, a two-colour palette
    and red on black all pass; a lossy copy (e.g. a JPEG mask) or a label map with several classes does not.

    Shape:
        Returns ``(H, W)`` bool.

    Raises:
        OSError: naming the file when it is missing or cannot be decoded.
        ValueError: naming the file and its first values when it holds more than two.
    """
    strongest = _read_strongest_channel(path)
    values = np.unique(strongest)
    if len(values) > 2:
        shown = ", ".join(f"{v:g}" for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
        raise ValueError(
            f"mask file {str(path)!r} holds {len(values)} values ({shown}); a binary mask holds at most two "
            "(background and lesion), e.g. 0/255 or 0/1 (a JPEG mask is lossy: save masks as PNG or TIFF)"
        )
    return _lesion_pixels(strongest)


def _lesion_pixels(strongest: np.ndarray) -> np.ndarray:
    """The rule of :func:`read_lesion_mask` on the ``(H, W)`` strongest channel."""
    if strongest.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(strongest.ravel(), minlength=256))
    else:
        values = np.unique(strongest)
    values = values[values != 0]
    if len(values) <= 1:  # empty, or two-valued
        return strongest != 0
    peak = float(values.max())
    full_scale = 1.0 if peak <= 1 else 255.0 if peak <= 255 else peak
    cut = full_scale / 2
    if peak < cut:
        cut = peak / 2 if peak >= full_scale / 8 else math.inf
    return strongest >= cut


def _strongest_channel(image: Image.Image) -> np.ndarray:
    """Per pixel, the largest colour value (palette resolved, alpha ignored), ``(H, W)``."""
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "P":
        # Look the palette up per index: converting a 12-Mpixel mask to RGB first would triple its memory.
        palette = np.asarray(image.getpalette() or [0] * 768, dtype=np.uint8).reshape(-1, 3)
        lookup = np.zeros(256, dtype=np.uint8)
        lookup[: len(palette)] = palette.max(axis=1)
        return lookup[np.asarray(image, dtype=np.uint8)]
    if image.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image)
    if image.mode not in ("RGB", "RGBA", "LA"):
        image = image.convert("RGB")
    values = np.asarray(image)
    if image.mode == "LA":
        return values[..., 0]
    return values[..., :3].max(axis=-1)


def header_size(path: str | os.PathLike, kind: str) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding the pixels.

    Args:
        kind: what the file is (``"image"``, ``"mask"``), for the error message.

    Raises:
        OSError: naming the file when it cannot be opened.
    """
    try:
        with Image.open(Path(path)) as opened:
            return opened.size
    except _DECODE_ERRORS as err:
        raise OSError(f"cannot read {kind} file {str(path)!r}: {err}") from err
