"""Preprocessing of fundus photographs as in GANet (Ye et al., SPIE Medical Imaging 2020, section 3.1).

"A part of background is cropped and the image is resized to 512 x 384": the black background around
the circular field of view (FOV) is cropped away, then image and masks are resized to the target size.

- :func:`find_fov_box` finds the FOV on a shrunken, smoothed brightness image: the longest run of rows and
  of columns that contain bright pixels (robust to JPEG noise, isolated specks and the notch on the FOV
  rim), falling back to the whole image when nothing bright is found.
- :func:`resize_image` crops and resizes with Pillow's antialiased bilinear filter (for downscaling its
  support widens with the scale, so it averages like an area filter).
- :func:`resize_mask` crops and resizes a binary mask with the same box. ``"area"`` (default) keeps a
  target pixel when lesion covers at least half of it, and additionally the best-covered pixel of
  every lesion that would otherwise vanish, so microaneurysms and thin exudates survive without
  inflating the area of larger lesions. ``"nearest"`` is plain nearest-neighbour subsampling.
- :class:`ArrayCache` stores the preprocessed arrays as ``.npz`` files, written atomically (temporary
  file in the cache folder, then :func:`os.replace`), keyed by :func:`cache_key`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

from ...atomic import atomic_write

__all__ = [
    "PREPROCESS_VERSION",
    "MASK_RESIZE_METHODS",
    "Box",
    "PreprocessConfig",
    "ArrayCache",
    "cache_key",
    "default_cache_dir",
    "find_fov_box",
    "training_crop",
    "resize_image",
    "resize_mask",
    "check_size",
]

logger = logging.getLogger(__name__)

#: Bump when the preprocessing code changes what it produces: it is part of every cache key.
PREPROCESS_VERSION = 2
_COVERAGE_UNITS = 1 << 24  # resize_mask's coverage quantum

MASK_RESIZE_METHODS = ("area", "nearest")

# FOV detection runs on an image shrunk to about this width: plenty for a box accurate to a few
# source pixels (under one target pixel) on 4288 x 2848 photographs.
_FOV_WORK_WIDTH = 512
# A row or column belongs to the FOV when at least this fraction of its pixels is bright; the
# tolerance ignores isolated bright specks (dust, JPEG ringing) in the background.
_FOV_MIN_LINE_FRACTION = 0.01
# Lesion rescue in resize_mask: each round keeps one pixel per 3 x 3 area of lesion left without one;
# two rounds suffice in practice, the bound only caps pathological inputs (then some thin trace is lost).
_MAX_RESCUE_ROUNDS = 16
# A box smaller than this fraction of the image in either direction is not a fundus: keep the image.
_FOV_MIN_BOX_FRACTION = 0.1


class Box(NamedTuple):
    """A crop box in pixel coordinates of the source image: rows ``top:bottom``, columns ``left:right``."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def as_pillow_box(self) -> tuple[int, int, int, int]:
        """The same box in Pillow's ``(left, upper, right, lower)`` order."""
        return (self.left, self.top, self.right, self.bottom)


def _checked_box(box: object, shape: tuple[int, int]) -> Box:
    """``box`` as a :class:`Box` (a 4-tuple top, left, bottom, right works too), non-empty and inside an image of
    ``shape`` ``(h, w)``; ``ValueError`` naming it otherwise."""
    if not (isinstance(box, tuple) and len(box) == 4 and all(isinstance(v, (int, np.integer)) for v in box)):
        raise ValueError(f"box must be a Box(top, left, bottom, right) of ints; got {box!r}")
    box = Box(*(int(v) for v in box))
    if not (0 <= box.top < box.bottom <= shape[0] and 0 <= box.left < box.right <= shape[1]):
        raise ValueError(f"box must be a non-empty crop inside the {shape[0]} x {shape[1]} image; got {box}")
    return box


def scaled_size(box: "Box", scale: float) -> tuple[int, int]:
    """``(H, W)`` of the crop ``box`` resized by ``scale`` (rounded, at least one pixel a side)."""
    return (max(1, round(box.height * scale)), max(1, round(box.width * scale)))


def check_size(size: object, name: str = "size") -> tuple[int, int]:
    """Validate an ``(H, W)`` size and return it as a tuple of two ints.

    Raises:
        ValueError: naming ``name``, the value received and what is valid.
    """
    valid = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)
    )
    if not valid:
        raise ValueError(f"{name} must be two positive ints (H, W), e.g. (384, 512); got {size!r}")
    return (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings that decide the preprocessed arrays; all of them are part of the cache key.

    Args:
        size: output ``(H, W)``. Default ``(384, 512)``: the paper's 512 x 384 (W x H).
        crop_fov: crop the black background around the field of view first. Default ``True``.
        mask_resize: ``"area"`` (default; coverage >= 0.5 plus one pixel for every lesion that would
            vanish) or ``"nearest"``.
        scale: None (default) resizes every crop to ``size``; a share of the native resolution in (0, 1] instead
            resizes each crop by that factor (:func:`scaled_size`), so sizes differ between images.
    """

    def cache_settings(self) -> dict:
        """The settings in a cache key; ``scale`` only when set, so entries of the whole-image protocol keep theirs."""
        settings = asdict(self)
        if self.scale is None:
            settings.pop("scale")
        return settings

    size: tuple[int, int] = (384, 512)
    crop_fov: bool = True
    mask_resize: str = "area"
    scale: "float | None" = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", check_size(self.size))
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 0 < self.scale <= 1:
                raise ValueError(f"scale must be a share of the native resolution in (0, 1], got {self.scale!r}")
            object.__setattr__(self, "scale", float(self.scale))
        if not isinstance(self.crop_fov, bool):
            raise TypeError(
                f"crop_fov must be True or False; got {self.crop_fov!r} of type {type(self.crop_fov).__name__}"
            )
        if self.mask_resize not in MASK_RESIZE_METHODS:
            raise ValueError(f"mask_resize must be one of {MASK_RESIZE_METHODS}; got {self.mask_resize!r}")


def find_fov_box(image: Image.Image | np.ndarray) -> Box:
    """Bounding box of the circular field of view of a fundus photograph.

    The image is shrunk (box filter) to about 512 pixels wide and median-filtered; a pixel is bright
    when its strongest channel exceeds a threshold relative to the image's bright level (15% of the
    99th percentile, clipped to [10, 40] grey levels). The box spans the longest run of rows and of columns
    in which at least 1% of the pixels are bright. An image without such a region (all black, or a
    region under 10% of the image in either direction) gives the full image, never an empty crop.

    Args:
        image: RGB or grey image, a Pillow image or an array ``(H, W)`` / ``(H, W, C)``.

    Returns:
        :class:`Box` in source pixel coordinates.

    Examples:
        >>> import numpy as np
        >>> frame = np.zeros((100, 150, 3), dtype=np.uint8)
        >>> frame[10:90, 30:120] = 180
        >>> find_fov_box(frame)
        Box(top=10, left=30, bottom=90, right=120)
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(
                f"image must be a uint8 array (H, W), (H, W, 3) or (H, W, 4) (or a Pillow image); got dtype "
                f"{image.dtype} and shape {image.shape} (for floats in [0, 1]: (image * 255).astype(np.uint8))"
            )
        image = Image.fromarray(np.ascontiguousarray(image))
    width, height = image.size
    factor = max(1, width // _FOV_WORK_WIDTH)
    small = image.reduce(factor) if factor > 1 else image
    small = small.filter(ImageFilter.MedianFilter(3))  # removes specks without moving edges
    brightness = np.asarray(small, dtype=np.float32)
    if brightness.ndim == 3:
        brightness = brightness[..., :3].max(axis=-1)
    threshold = float(np.clip(0.15 * np.percentile(brightness, 99), 10.0, 40.0))
    bright = brightness > threshold

    rows = _longest_run(bright.mean(axis=1) >= _FOV_MIN_LINE_FRACTION)
    cols = _longest_run(bright.mean(axis=0) >= _FOV_MIN_LINE_FRACTION)
    full = Box(0, 0, height, width)
    if rows is None or cols is None:
        return full
    # Map back to source pixels; reduce() averages factor x factor blocks, the last one possibly partial.
    box = Box(
        top=rows[0] * factor,
        left=cols[0] * factor,
        bottom=min(height, rows[1] * factor),
        right=min(width, cols[1] * factor),
    )
    if box.height < _FOV_MIN_BOX_FRACTION * height or box.width < _FOV_MIN_BOX_FRACTION * width:
        return full
    return box


def training_crop(image: Image.Image, crop_fov: bool) -> Box:
    """The box training cuts out of ``image`` before resizing: its field of view (:func:`find_fov_box`), or the whole
    image when ``crop_fov`` is False. Training and prediction both call this, so their crops cannot drift apart."""
    width, height = image.size
    return find_fov_box(image) if crop_fov else Box(0, 0, height, width)


def _longest_run(flags: np.ndarray) -> tuple[int, int] | None:
    """``(start, stop)`` of the longest run of True in a 1-D boolean array, or None if there is none."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    if edges.size == 0:
        return None
    starts, stops = edges[0::2], edges[1::2]
    longest = int(np.argmax(stops - starts))
    return int(starts[longest]), int(stops[longest])


def resize_image(image: Image.Image, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Crop ``box`` out of an RGB image and resize it to ``size``.

    Shape:
        Returns ``(H, W, 3)`` uint8 with ``(H, W) = size``.
    """
    height, width = check_size(size)
    box = _checked_box(box, image.size[::-1])
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = image.resize((width, height), Image.Resampling.BILINEAR, box=box.as_pillow_box())
    return np.array(resized, dtype=np.uint8)


def resize_mask(mask: np.ndarray, box: Box, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """Crop ``box`` out of a binary mask and resize it to ``size``, keeping small lesions.

    ``"area"`` (default): the fraction of each target pixel covered by lesion is computed exactly (box
    filter); pixels covered at least half are lesion, which keeps the area of lesions larger than a
    pixel unbiased. A smaller lesion would vanish, so then, repeatedly, among the touched pixels
    (coverage > 0) farther than one pixel from every kept pixel, each local maximum of coverage is kept.
    Every source lesion pixel thus ends within one target pixel of a lesion pixel: microaneurysms and
    thin exudates survive, as about one pixel each (which over-represents lesions much smaller than a
    pixel). On IDRiD at 384 x 512 the lesion area stays within -7% / +2% of the source's.
    ``"nearest"``: nearest-neighbour subsampling, unbiased on average, but a lesion smaller than a
    target pixel survives only if it happens to cover a sampled point.

    Args:
        mask: ``(h, w)`` boolean (or 0/1) array at source resolution.
        box: crop box in source pixels (from :func:`find_fov_box` on the image).
        size: output ``(H, W)``.
        method: ``"area"`` or ``"nearest"``.

    Shape:
        Returns ``(H, W)`` uint8 with values 0/1.
    """
    height, width = check_size(size)
    if method not in MASK_RESIZE_METHODS:
        raise ValueError(f"method must be one of {MASK_RESIZE_METHODS}; got {method!r}")
    lesion = np.asarray(mask) > 0
    if lesion.ndim != 2:
        raise ValueError(f"mask must be a 2D (h, w) array; got shape {lesion.shape}")
    box = _checked_box(box, lesion.shape)
    pillow_box = box.as_pillow_box()
    if method == "nearest":
        binary = Image.fromarray(lesion.astype(np.uint8) * 255)
        resized = binary.resize((width, height), Image.Resampling.NEAREST, box=pillow_box)
        return (np.asarray(resized) > 0).astype(np.uint8)

    # Pillow's BOX filter on a float 0/1 image gives the covered fraction of each target pixel (in 8 bits it
    # would round a coverage under 1/510, one source pixel in a target pixel of over 22 x 22, to 0).
    covered = Image.fromarray(lesion.astype(np.float32), mode="F")
    coverage = np.asarray(covered.resize((width, height), Image.Resampling.BOX, box=pillow_box))
    # In units of 2^-24 (rounded up, so any covered pixel counts): exact for integers, free of float ties.
    coverage = np.ceil(coverage.astype(np.float64) * _COVERAGE_UNITS - 1e-3).clip(0).astype(np.int64)
    kept = coverage >= _COVERAGE_UNITS // 2
    # Ranks order pixels by coverage, ties broken by position, so a lesion straddling pixels of equal
    # coverage gets one pixel, not one each.
    ranks = coverage * coverage.size + np.arange(coverage.size)[::-1].reshape(coverage.shape)
    for _ in range(_MAX_RESCUE_ROUNDS):
        unrepresented = (coverage > 0) & ~_neighbourhood_max(kept.astype(np.uint8)).astype(bool)
        if not unrepresented.any():
            break
        candidate_ranks = np.where(unrepresented, ranks, -1)
        kept |= unrepresented & (candidate_ranks >= _neighbourhood_max(candidate_ranks))
    return kept.astype(np.uint8)


def _neighbourhood_max(values: np.ndarray) -> np.ndarray:
    """Maximum over each pixel's 3 x 3 neighbourhood (zero outside the array)."""
    padded = np.pad(values, 1)
    return sliding_window_view(padded, (3, 3)).max(axis=(-2, -1))


def default_cache_dir() -> Path:
    """``$GA_CACHE_DIR`` if set, else ``~/.cache/group-attention/idrid``."""
    from_env = os.environ.get("GA_CACHE_DIR")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "group-attention" / "idrid"


def file_signature(path: str | os.PathLike) -> list:
    """What identifies a source file's version for the cache: absolute path, size and mtime (ns)."""
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def cache_key(kind: str, sources: Iterable[str | os.PathLike], settings: Mapping | PreprocessConfig) -> str:
    """Hex SHA-256 of the entry kind, the source files' signatures, the settings and the code version.

    Any change to a source file (path, size or modification time), to a setting or to
    :data:`PREPROCESS_VERSION` gives a new key, so a stale entry is never read.
    """
    if isinstance(settings, PreprocessConfig):
        settings = asdict(settings)
    payload = {
        "kind": kind,
        "version": PREPROCESS_VERSION,
        "sources": [file_signature(p) for p in sources],
        "settings": dict(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


class ArrayCache:
    """A folder of ``.npz`` files holding preprocessed arrays, safe to share between processes.

    Entries are written to a temporary file in the same folder and renamed over the final name with
    :func:`os.replace`, so a reader sees either nothing or a complete file. An entry that cannot be
    read (e.g. a disk error) is treated as missing and rewritten. If the folder cannot be written,
    caching is switched off with a warning and everything is recomputed.

    Args:
        directory: the cache folder, created on first write.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).expanduser()
        self.writable = True

    def path_for(self, name: str, key: str) -> Path:
        return self.directory / f"{name}-{key[:24]}.npz"

    def load(self, name: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``(name, key)``, or None on a miss."""
        path = self.path_for(name, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {field: stored[field] for field in stored.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            logger.warning("ignoring unreadable cache entry %s (%s); recomputing", path, err)
            return None

    def save(self, name: str, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Store ``arrays`` under ``(name, key)`` atomically; never raises for an unwritable folder."""
        if not self.writable:
            return
        path = self.path_for(name, key)
        try:
            atomic_write(path, lambda stream: np.savez(stream, **arrays), durable=False)
        except OSError as err:
            self.writable = False
            logger.warning("cache folder %s is not writable (%s); caching disabled", self.directory, err)

    def __repr__(self) -> str:
        return f"ArrayCache({str(self.directory)!r})"
