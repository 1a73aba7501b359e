"""Images with one mask per class, preprocessed as in GANet and cached on disk: the Dataset every source builds on.

Each image is cropped to its field of view (optional), resized to ``size`` (image: antialiased bilinear; masks:
area coverage >= 0.5 keeping every small lesion, see :func:`~group_attention.fundus.data.preprocess.resize_mask`)
and cached as uint8 arrays. A class without a mask file for an image means no lesion: an all-zero mask. The
sources differ only in where the files are (:class:`~group_attention.fundus.data.IDRiD` finds them in the
download's layout, :class:`~group_attention.fundus.data.PairedFolderDataset` in two folders) and how strictly
masks are read.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from .decode import header_size, read_fundus_image, read_lesion_mask
from .preprocess import (
    ArrayCache,
    Box,
    PreprocessConfig,
    cache_key,
    default_cache_dir,
    resize_image,
    resize_mask,
    scaled_size,
    training_crop,
)

__all__ = ["PreprocessedDataset", "size_mismatch"]


def size_mismatch(image_path: Path, image_size, mask_path: Path, mask_size) -> str:
    """The error message for a mask whose size (W, H) differs from its image's."""
    return (
        f"mask {str(mask_path)!r} is {mask_size[0]}x{mask_size[1]} (W x H) but its image "
        f"{str(image_path)!r} is {image_size[0]}x{image_size[1]}; a mask must have its image's size"
    )


class PreprocessedDataset(Dataset):
    """Preprocessed, cached images and masks of the given files.

    Args:
        images: ``{id: image path}``.
        masks: ``{class: {id: mask path}}``; an id missing under a class has no lesion of it.
        classes: the mask channels of an item, in order (keys of ``masks``).
        ids: the images of the Dataset, in order (keys of ``images``).
        config: size, field-of-view crop and mask resizing.
        cache_dir: ``"auto"`` (``$GA_CACHE_DIR`` or ``~/.cache/group-attention``), a folder, or None.
        read_mask: decodes a mask file to ``(h, w)`` bool (default: :func:`read_lesion_mask`, looked up when a mask
            is decoded).
        mask_settings: what else changes a decoded mask (e.g. a stricter reader), part of the masks' cache key.
        transform: optional callable applied to each item dict.

    Items:
        ``{"image": float32 (3, H, W) in [0, 1], "mask": float32 (L, H, W) 0/1 in the order of classes,
        "id": str}``.

    Raises:
        ValueError: a mask whose size (from the file headers) differs from its image's.
        OSError: an image or mask file that cannot be read (named in the message).
    """

    def __init__(
        self,
        images: Mapping[str, Path],
        masks: Mapping[str, Mapping[str, Path]],
        classes: Sequence[str],
        ids: Sequence[str],
        config: PreprocessConfig,
        cache_dir: str | os.PathLike | None = "auto",
        *,
        read_mask: "Callable[[Path], np.ndarray] | None" = None,
        mask_settings: "Mapping[str, Any] | None" = None,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a callable taking and returning an item dict, got {transform!r}")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be 'auto', a folder path or None, got {cache_dir!r}")
        self.images, self.masks = images, masks
        self.classes, self.ids = tuple(classes), list(ids)
        self.config = config
        self.read_mask = read_mask
        self.mask_settings = dict(mask_settings or {})
        self.transform = transform
        self.cache = ArrayCache(default_cache_dir() if cache_dir == "auto" else cache_dir) if cache_dir else None
        self._check_mask_sizes()

    @property
    def size(self) -> tuple[int, int]:
        return self.config.size

    def _check_mask_sizes(self) -> None:
        for image_id in self.ids:
            image_path = self.images[image_id]
            image_size = header_size(image_path, "image")
            for name in self.classes:
                mask_path = self.masks[name].get(image_id)
                if mask_path is None:
                    continue
                mask_size = header_size(mask_path, "mask")
                if mask_size != image_size:
                    raise ValueError(size_mismatch(image_path, image_size, mask_path, mask_size))

    def mask_counts(self) -> dict[str, int]:
        """Number of images (``"images"``) and of mask files per class among :attr:`ids`."""
        counts = {"images": len(self.ids)}
        for name in self.classes:
            counts[name] = sum(i in self.masks[name] for i in self.ids)
        return counts

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        image, masks = self.load_arrays(image_id)
        item = {
            # The arrays are fresh (read from the cache or just computed), so they can be shared.
            "image": rearrange(torch.from_numpy(image), "h w c -> c h w").float().div_(255.0),
            "mask": torch.from_numpy(masks).float(),
            "id": image_id,
        }
        return self.transform(item) if self.transform is not None else item

    def load_arrays(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed uint8 arrays of one image, from the cache when possible.

        Shape:
            Returns image ``(H, W, 3)`` and masks ``(L, H, W)`` with values 0/1.
        """
        entry = self._image_entry(image_id)
        box = Box(*entry["box"].tolist())
        source_size = tuple(entry["source_size"].tolist())
        size = entry["image"].shape[:2]
        masks = [self._mask_entry(image_id, name, box, source_size, size) for name in self.classes]
        return entry["image"], np.stack(masks)

    def crop_box(self, image_id: str) -> Box:
        """The field-of-view box cropped out of the source image (source pixels), e.g. to map predictions back
        to the original resolution."""
        return Box(*self._image_entry(image_id)["box"].tolist())

    def at_scale(self, scale: float) -> "PreprocessedDataset":
        """This Dataset with each crop resized by ``scale`` (a share of the native resolution in (0, 1]) instead of
        to :attr:`size`: item sizes then differ between images (cached per image and scale)."""
        scaled = copy.copy(self)
        scaled.config = dataclasses.replace(self.config, scale=scale)
        return scaled

    def source_size(self, image_id: str) -> tuple[int, int]:
        """``(W, H)`` of the source image."""
        return tuple(self._image_entry(image_id)["source_size"].tolist())

    def original_masks(self, image_id: str) -> np.ndarray:
        """The masks of ``image_id`` at the source's resolution, as read (no crop, no resize).

        Shape:
            ``(L, H, W)`` uint8 0/1, in the order of :attr:`classes`; all zero for a class without a mask file.
        """
        width, height = self.source_size(image_id)
        masks = np.zeros((len(self.classes), height, width), dtype=np.uint8)
        for channel, name in enumerate(self.classes):
            mask_path = self.masks[name].get(image_id)
            if mask_path is not None:
                lesion = (self.read_mask or read_lesion_mask)(mask_path)
                if lesion.shape != (height, width):
                    image_path = self.images[image_id]
                    raise ValueError(size_mismatch(image_path, (width, height), mask_path, lesion.shape[::-1]))
                masks[channel] = lesion > 0
        return masks

    def prepare(self, num_threads: int = 1) -> "PreprocessedDataset":
        """Preprocess every image into the cache now, in ``num_threads`` threads (Pillow decodes without the GIL)."""
        if num_threads <= 1:
            for image_id in self.ids:
                self.load_arrays(image_id)
        else:
            with ThreadPoolExecutor(num_threads) as pool:
                list(pool.map(self.load_arrays, self.ids))
        return self

    def _cached(self, name: str, kind: str, sources: list[Path], settings: dict, compute) -> dict[str, np.ndarray]:
        """``compute()``'s arrays, read from the cache when an entry with the same key exists."""
        if self.cache is None:
            return compute()
        key = cache_key(kind, sources, settings)
        stored = self.cache.load(name, key)
        if stored is None:
            stored = compute()
            self.cache.save(name, key, stored)
        return stored

    def _image_entry(self, image_id: str) -> dict[str, np.ndarray]:
        image_path = self.images[image_id]

        def compute() -> dict[str, np.ndarray]:
            image = read_fundus_image(image_path)
            width, height = image.size
            box = training_crop(image, self.config.crop_fov)
            size = self.config.size if self.config.scale is None else scaled_size(box, self.config.scale)
            return {
                "image": resize_image(image, box, size),
                "box": np.asarray(box, dtype=np.int64),
                "source_size": np.asarray([width, height], dtype=np.int64),
            }

        settings = {"size": self.config.size, "crop_fov": self.config.crop_fov}
        if self.config.scale is not None:
            settings["scale"] = self.config.scale
        return self._cached(f"{image_id}-image", "image", [image_path], settings, compute)

    def _mask_entry(
        self, image_id: str, name: str, box: Box, source_size: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray:
        mask_path = self.masks[name].get(image_id)
        if mask_path is None:
            return np.zeros(size, dtype=np.uint8)
        image_path = self.images[image_id]

        def compute() -> dict[str, np.ndarray]:
            lesion = (self.read_mask or read_lesion_mask)(mask_path)
            mask_size = (lesion.shape[1], lesion.shape[0])
            if mask_size != source_size:
                raise ValueError(size_mismatch(image_path, source_size, mask_path, mask_size))
            return {"mask": resize_mask(lesion, box, tuple(size), self.config.mask_resize)}

        # The crop box comes from the image, so the image file is part of the mask's key too; a mask read by
        # another rule (e.g. strictly binary) must not be served from a lenient reader's entry.
        sources = [image_path, mask_path]
        settings = {**self.config.cache_settings(), **self.mask_settings}
        return self._cached(f"{image_id}-{name}", "mask", sources, settings, compute)["mask"]
