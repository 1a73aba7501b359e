"""Decoding image and mask files: a fundus photograph to RGB, a lesion mask in any encoding to bool.

- :func:`read_fundus_image`: a photograph as every viewer shows it -> loaded 8-bit RGB image: its EXIF orientation
  applied, 16-bit and other high-bit-depth pixels scaled to 8 bits by their real range (never clipped), a mode that
  cannot be read faithfully refused, and a file of more than :func:`max_pixels` pixels refused before decoding.
- :func:`read_lesion_mask`: a mask file (palette, RGB, grey, 1-bit, 16-bit, float; 0/1, 0/255, red on black or a
  lossy copy) -> ``(H, W)`` bool. The rule is written once in :doc:`/data` ("Reading masks").

Every error is an ``OSError`` naming the file. The reliability notes of :doc:`/data` say what is refused and why.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "header_size",
    "max_pixels",
    "read_binary_mask",
    "read_fundus_image",
    "read_lesion_mask",
]

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)

#: Our own limit on the pixels of an image or mask file: 80 megapixels, over three times a 24-megapixel fundus
#: camera's photograph (IDRiD's are 12) and below Pillow's own decompression-bomb limit. A larger file is refused
#: before its pixels are decoded.
DEFAULT_MAX_PIXELS = 80_000_000
#: The environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (the command lines' ``--max-pixels`` set it,
#: so that the processes decoding images for the cache follow it too).
MAX_PIXELS_ENV = "GA_MAX_PIXELS"

# Modes converted to RGB without loss of meaning (8 bits per channel, a palette, 1 bit, CMYK, YCbCr).
_EIGHT_BIT_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr")
# One channel of more than 8 bits (16-bit PNG and TIFF, 32-bit integer or float TIFF): scaled to 8 bits.
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# EXIF orientations that swap width and height (a quarter turn, with or without a flip).
_QUARTER_TURNS = (5, 6, 7, 8)


def max_pixels() -> int:
    """The largest image this process decodes, in pixels: ``$GA_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        limit = int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {value!r}") from None
    if limit < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {value!r}")
    return limit


@contextlib.contextmanager
def _open_checked(path: "str | os.PathLike", kind: str) -> Iterator[Image.Image]:
    """The opened (not decoded) file, refused when larger than :func:`max_pixels`; Pillow's decompression-bomb
    warning is an error."""
    limit = max_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check below says more
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError as err:  # over twice Pillow's limit: refused by Pillow at open
            raise ValueError(f"{kind} file {str(path)!r} is refused before decoding ({err})") from err
    with opened:
        width, height = opened.size
        if width * height > limit:
            raise ValueError(
                f"{kind} file {str(path)!r} declares {width}x{height} = {width * height:,} pixels, more than the "
                f"limit of {limit:,} (--max-pixels, or ${MAX_PIXELS_ENV}): refused before decoding"
            )
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit and width * height > pillow_limit:  # Pillow's warning, made an error
            raise ValueError(
                f"{kind} file {str(path)!r} declares {width}x{height} = {width * height:,} pixels, more than "
                f"Pillow's decompression-bomb limit of {pillow_limit:,} (PIL.Image.MAX_IMAGE_PIXELS): refused"
            )
        yield opened


def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(0x0112, 1))
    except (TypeError, ValueError, SyntaxError, OSError):  # a damaged EXIF block: read the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def _upright(image: Image.Image) -> tuple[Image.Image, int]:
    """``image`` with its EXIF orientation applied (as viewers show it), and that orientation (1: none)."""
    orientation = _orientation(image)
    if orientation == 1:
        return image, 1
    return ImageOps.exif_transpose(image), orientation


def _to_eight_bits(values: np.ndarray, path: "str | os.PathLike", mode: str) -> np.ndarray:
    """One channel of high bit depth as uint8, scaled by its real range: a float image in [0, 1] by 255, an integer
    image by the full scale of the fewest bits (8, 10, 12, 14, 16, 24 or 32) that hold its largest value."""
    values = np.asarray(values)
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0:
        raise ValueError(
            f"image file {str(path)!r} (mode {mode}) holds values from {low:g} to {high:g}; only finite values of "
            "at least 0 can be shown as a photograph"
        )
    if values.dtype.kind == "f" and high <= 1:
        full_scale = 1.0
    else:
        bits = next(b for b in (8, 10, 12, 14, 16, 24, 32, 64) if high <= 2**b - 1 or b == 64)
        full_scale = float(2**bits - 1)
    return np.round(values.astype(np.float64) * (255.0 / full_scale)).clip(0, 255).astype(np.uint8)


def read_fundus_image(path: str | os.PathLike) -> Image.Image:
    """Decode a fundus photograph to a loaded 8-bit RGB Pillow image, upright as viewers show it.

    - its EXIF orientation is applied (``ImageOps.exif_transpose``);
    - 8-bit RGB, greyscale, palette, 1-bit, CMYK and YCbCr files are converted to RGB (alpha is dropped);
    - 16-bit and other high-bit-depth greyscale files (``I;16``, ``I``, ``F``) are scaled to 8 bits by their real
      range (an integer image by the full scale of the fewest bits holding its largest value, a float one in
      [0, 1] by 255), never clipped; Pillow reads 16-bit RGB files as 8-bit RGB by their high byte;
    - any other mode is refused, as is a file of more than :func:`max_pixels` pixels (before decoding).

    The returned image's ``info["decoded"]`` says what was done: ``{"mode": <the file's mode>,
    "exif_orientation": <1-8; 1: none applied>}``.

    Raises:
        OSError: naming the file when it is missing, not an image, truncated, too large, or of a mode that cannot be
            read faithfully.
    """
    try:
        with _open_checked(path, "image") as opened:
            mode = opened.mode
            if mode not in _EIGHT_BIT_MODES + _HIGH_BIT_DEPTH_MODES:
                raise ValueError(
                    f"image file {str(path)!r} has mode {mode}, which cannot be read faithfully as a photograph; "
                    "save it as 8- or 16-bit RGB or greyscale (JPEG, PNG or TIFF)"
                )
            opened.load()
            image, orientation = _upright(opened)
            if mode in _HIGH_BIT_DEPTH_MODES:
                image = Image.fromarray(_to_eight_bits(np.asarray(image), path, mode), mode="L")
            if image.mode != "RGB":
                image = image.convert("RGB")
    except _DECODE_ERRORS as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise OSError(str(err)) from err
        raise OSError(f"cannot read image file {str(path)!r}: {err}") from err
    image.info["decoded"] = {"mode": mode, "exif_orientation": orientation}
    return image


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
        with _open_checked(path, "mask") as opened:
            opened.load()
            return _strongest_channel(_upright(opened)[0])
    except _DECODE_ERRORS as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise OSError(str(err)) from err
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
    """``(width, height)`` of an image file from its header, without decoding the pixels, upright (after its EXIF
    orientation) as :func:`read_fundus_image` returns it.

    Args:
        kind: what the file is (``"image"``, ``"mask"``), for the error message.

    Raises:
        OSError: naming the file when it cannot be opened.
    """
    try:
        with Image.open(Path(path)) as opened:
            width, height = opened.size
            return (height, width) if _orientation(opened) in _QUARTER_TURNS else (width, height)
    except _DECODE_ERRORS as err:
        raise OSError(f"cannot read {kind} file {str(path)!r}: {err}") from err
