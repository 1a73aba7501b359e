"""Training at the photograph's own scale: each field-of-view crop resized by a share of the native resolution,
held in memory as uint8 (one array per image: sizes differ), and random training patches cut from it.

A stated share of the patches (``lesion_share``) is centred on a lesion pixel, as the IDRiD challenge's leaders
sampled: a random image among those showing a lesion of the model, a random lesion among those it shows, a random
pixel of it; the patch is then shifted inside the crop where the centre is near a border. The rest are uniform over
the training images and the positions in each. The crops are preprocessed once per image and scale and cached on
disk (:meth:`~group_attention.fundus.data.PreprocessedDataset.at_scale`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...inference import window_starts
from ..data import PreprocessedDataset, SegmentationSource
from ..data.decode import header_size
from ..data.preprocess import Box
from ..tiles import WINDOW_OVERLAP

__all__ = ["ScaledArrays", "load_scaled_arrays", "PatchSampler", "check_patch_fits_headers"]


@dataclass
class ScaledArrays:
    """Field-of-view crops at one scale and the masks of a model's lesions, one array per image.

    Attributes:
        ids: image ids, in order.
        images: per image ``(C, h, w)`` uint8, the crop resized by :attr:`scale`.
        masks: per image ``(L, h, w)`` uint8 0/1, one channel per lesion.
        boxes: per image the crop box in source pixels.
        scale: the share of the native resolution.
        dataset: the Dataset they came from, to read the masks at the original resolution for testing.
    """

    ids: list[str]
    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    boxes: list[Box]
    scale: float
    dataset: "PreprocessedDataset | None" = None

    @property
    def channels(self) -> int:
        return self.images[0].shape[0]

    def indices_of(self, ids: Sequence[str]) -> torch.Tensor:
        position = {image_id: index for index, image_id in enumerate(self.ids)}
        return torch.tensor([position[image_id] for image_id in ids], dtype=torch.long)

    def to(self, device: "torch.device | str") -> "ScaledArrays":
        """The crops stay on the CPU (patches are cut there and sent per batch): returns ``self``."""
        return self

    def smallest_crop(self) -> tuple[int, str]:
        """The shortest side of any scaled crop and the image it belongs to."""
        side, image_id = min((min(image.shape[1:]), image_id) for image, image_id in zip(self.images, self.ids))
        return side, image_id

    def check_patch_fits(self, patch: tuple[int, int]) -> None:
        """Raise ``ValueError`` naming the image if a patch is larger than a scaled crop."""
        for image, image_id in zip(self.images, self.ids):
            height, width = image.shape[1:]
            if patch[0] > height or patch[1] > width:
                raise ValueError(
                    f"patch {patch[0]} {patch[1]} is larger than the field of view of image {image_id!r} at scale "
                    f"{self.scale:g} ({height} x {width}); give a smaller --patch or a larger --scale"
                )

    def original_masks(self, index: int) -> np.ndarray:
        """``(L, H, W)`` uint8 masks of image ``index`` at the source's resolution."""
        if self.dataset is None:
            raise ValueError("these arrays have no Dataset to read the original masks from")
        return self.dataset.original_masks(self.ids[index])

    def nbytes(self) -> int:
        return sum(t.numel() for t in self.images) + sum(t.numel() for t in self.masks)


def scaled_dataset(
    source: SegmentationSource, names: Sequence[str], ids: Sequence[str], scale: float, cache_dir: "str | None"
) -> PreprocessedDataset:
    """``source``'s Dataset of ``ids`` and ``names`` at ``scale``; a ``ValueError`` for a source whose Dataset does
    not preprocess image files (patches need the crop at the native resolution)."""
    dataset = source.dataset(list(names), list(ids), (384, 512), cache_dir)
    if not isinstance(dataset, PreprocessedDataset):
        raise ValueError(
            f"scale needs a data source of image files (IDRiD, --images/--masks, the synthetic look-alike); "
            f"{type(source).__name__} gives items of one size only"
        )
    return dataset.at_scale(scale)


def load_scaled_arrays(
    source: SegmentationSource,
    names: Sequence[str],
    ids: Sequence[str],
    scale: float,
    cache_dir: "str | None" = "auto",
    workers: int = 0,
) -> ScaledArrays:
    """Read (or take from the cache) the crops of ``ids`` at ``scale`` with their masks of ``names``, preprocessing
    in ``workers`` threads."""
    dataset = scaled_dataset(source, names, ids, scale, cache_dir)
    dataset.prepare(num_threads=max(1, workers))
    images, masks, boxes = [], [], []
    for image_id in dataset.ids:
        image, mask = dataset.load_arrays(image_id)
        images.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        masks.append(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)))
        boxes.append(dataset.crop_box(image_id))
    return ScaledArrays(list(dataset.ids), images, masks, boxes, scale, dataset)


def check_patch_fits_headers(
    source: SegmentationSource, names: Sequence[str], ids: Sequence[str], scale: float, patch: tuple[int, int]
) -> None:
    """Raise ``ValueError`` before anything is written if ``patch`` exceeds an image of ``ids`` at ``scale``, from
    the files' headers (the field-of-view crop, smaller still, is checked once it is computed)."""
    dataset = source.dataset(list(names), list(ids), (384, 512), None)
    if not isinstance(dataset, PreprocessedDataset):
        scaled_dataset(source, names, ids, scale, None)  # raises the error of a source without files
    for image_id in ids:
        width, height = header_size(dataset.images[image_id], "image")
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        if patch[0] > scaled[0] or patch[1] > scaled[1]:
            raise ValueError(
                f"patch {patch[0]} {patch[1]} is larger than image {image_id!r} at scale {scale:g} "
                f"({scaled[0]} x {scaled[1]} of {height} x {width}); give a smaller --patch or a larger --scale"
            )


class PatchSampler:
    """Random ``patch`` positions over the training images of ``arrays``, ``lesion_share`` of them centred on a
    lesion pixel.

    Args:
        arrays: the scaled crops and masks.
        indices: the training images (indices into ``arrays``).
        patch: ``(H, W)``, at most every crop's size.
        lesion_share: probability that a patch is centred on a lesion pixel (when any training image shows one).
    """

    def __init__(
        self, arrays: ScaledArrays, indices: torch.Tensor, patch: tuple[int, int], lesion_share: float
    ) -> None:
        self.arrays, self.patch, self.lesion_share = arrays, tuple(patch), float(lesion_share)
        self.indices = [int(i) for i in indices]
        # Flat positions of every lesion's pixels in each training image, for lesion-centred draws.
        self.lesion_pixels = {
            index: [torch.nonzero(channel.flatten())[:, 0] for channel in arrays.masks[index]] for index in self.indices
        }
        self.with_lesion = [index for index in self.indices if any(len(p) for p in self.lesion_pixels[index])]

    def draw(self, count: int, generator: torch.Generator) -> list[tuple[int, int, int, bool]]:
        """``count`` patches as ``(image index, top, left, lesion_centred)``."""
        height, width = self.patch
        draws = []
        for _ in range(count):
            centred = bool(self.with_lesion) and float(torch.rand((), generator=generator)) < self.lesion_share
            if centred:
                index = self.with_lesion[_randint(len(self.with_lesion), generator)]
                present = [pixels for pixels in self.lesion_pixels[index] if len(pixels)]
                pixels = present[_randint(len(present), generator)]
                flat = int(pixels[_randint(len(pixels), generator)])
                crop_width = self.arrays.images[index].shape[2]
                row, column = divmod(flat, crop_width)
                crop_height = self.arrays.images[index].shape[1]
                top = min(max(row - height // 2, 0), crop_height - height)
                left = min(max(column - width // 2, 0), crop_width - width)
            else:
                index = self.indices[_randint(len(self.indices), generator)]
                crop_height, crop_width = self.arrays.images[index].shape[1:]
                top = _randint(crop_height - height + 1, generator)
                left = _randint(crop_width - width + 1, generator)
            draws.append((index, top, left, centred))
        return draws

    def windows(self, count: int, generator: torch.Generator) -> list[tuple[int, int, int, bool]]:
        """``count`` of the windows the sliding window cuts from the training crops (every one if there are fewer),
        drawn without replacement and in the grid's order, as draws for :meth:`batch`: what the model sees at
        inference, unlike the lesion-centred patches of training."""
        height, width = self.patch
        grid = [
            (index, top, left, False)
            for index in self.indices
            for top in window_starts(self.arrays.images[index].shape[1], height, WINDOW_OVERLAP)
            for left in window_starts(self.arrays.images[index].shape[2], width, WINDOW_OVERLAP)
        ]
        if count >= len(grid):
            return grid
        chosen = torch.randperm(len(grid), generator=generator)[:count].sort().values
        return [grid[int(i)] for i in chosen]

    def batch(self, draws: Sequence[tuple[int, int, int, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float in [0, 1] ``(B, C, H, W)`` and masks as float 0/1 ``(B, L, H, W)`` of ``draws``, on
        the CPU."""
        height, width = self.patch
        images = torch.stack(
            [self.arrays.images[i][:, top : top + height, left : left + width] for i, top, left, _ in draws]
        )
        masks = torch.stack(
            [self.arrays.masks[i][:, top : top + height, left : left + width] for i, top, left, _ in draws]
        )
        return images.float().div_(255), masks.float()


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (), generator=generator))
