"""A data source's images and the masks of a model's lesions held in memory as uint8 tensors: an epoch is index
slicing (on the GPU if there is one), images ``(N, C, H, W)`` and masks ``(N, L, H, W)`` (one channel per lesion).

Files are decoded once, through the source's Dataset and its on-disk cache (IDRiD's 81 images at 384 x 512 are
48 MB as uint8); batches are then cut from one tensor and augmented on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ..data import SegmentationSource


@dataclass
class LesionArrays:
    """Preprocessed images and the masks of a model's lesions.

    Attributes:
        ids: image ids, in the order of the tensors.
        images: ``(N, C, H, W)`` uint8 (C = 3 for RGB photographs).
        masks: ``(N, L, H, W)`` uint8, 0/1, one channel per lesion (L = 1 for a model per lesion).
    """

    ids: list[str]
    images: torch.Tensor
    masks: torch.Tensor

    @property
    def channels(self) -> int:
        """Image channels (3 for RGB photographs)."""
        return self.images.shape[1]

    def to(self, device: "torch.device | str") -> "LesionArrays":
        pin = torch.device(device).type == "cuda"
        images, masks = (self.images.pin_memory(), self.masks.pin_memory()) if pin else (self.images, self.masks)
        return LesionArrays(self.ids, images.to(device, non_blocking=True), masks.to(device, non_blocking=True))

    def indices_of(self, ids: Sequence[str]) -> torch.Tensor:
        position = {image_id: index for index, image_id in enumerate(self.ids)}
        return torch.tensor([position[image_id] for image_id in ids], dtype=torch.long)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float in [0, 1] ``(B, C, H, W)`` and masks as float 0/1 ``(B, L, H, W)``."""
        indices = indices.to(self.images.device)
        return self.images[indices].float().div_(255), self.masks[indices].float()


def load_class_arrays(
    source: SegmentationSource,
    name: "str | Sequence[str]",
    ids: Sequence[str],
    size: tuple[int, int],
    cache_dir: "str | None" = "auto",
    workers: int = 0,
) -> LesionArrays:
    """Read (or take from the cache) the images ``ids`` of ``source`` with their masks of ``name`` (a class, or
    several: one mask channel each), in ``workers`` DataLoader processes (0: in this one); the result's ``ids`` are
    in the order the Dataset gave them."""
    names = [name] if isinstance(name, str) else list(name)
    dataset = source.dataset(names, list(ids), size, cache_dir)
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=lambda items: items[0])
    loaded_ids, images, masks = [], [], []
    for item in loader:
        loaded_ids.append(item["id"])
        images.append(item["image"].mul(255).round().to(torch.uint8))
        masks.append(item["mask"].to(torch.uint8))
    return LesionArrays(loaded_ids, torch.stack(images), torch.stack(masks))
