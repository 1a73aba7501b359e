"""Sliding-window inference at full resolution: overlapping tiles, batched, blended with a Gaussian weight.

Like MONAI's ``sliding_window_inference`` (``mode="gaussian"``, ``overlap=0.25``, ``sigma_scale=0.125``): tiles
start every ``int(tile * (1 - overlap))`` pixels, the last one flush with the image's edge; each tile's output is
weighted by a Gaussian centred on the tile, so tile borders, where the network sees least context, count least.
The weighted outputs and the weights are summed into two float32 canvases of the image's size (never a stack of all
tiles), so memory is the image plus one batch of tiles, whatever the image's size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive_int
from .forward import lesion_probabilities, model_device

__all__ = ["window_starts", "gaussian_weight", "sliding_window_probabilities"]

# The Gaussian's tails would give the tile corners weights near 1e-7; a floor keeps every pixel's total weight
# well away from 0 (MONAI floors at the smallest non-zero weight, at least 1e-3).
MIN_WEIGHT = 1e-3


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """First index of each window along one axis: every ``int(window * (1 - overlap))``, the last at
    ``length - window``; ``[0]`` when the window covers the axis.

    Example:
        >>> window_starts(10, 4, 0.25)
        [0, 3, 6]
    """
    if window >= length:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = math.ceil((length - window) / step) + 1
    return sorted({min(index * step, length - window) for index in range(count)})


def gaussian_weight(size: tuple[int, int], sigma_scale: float = 0.125) -> torch.Tensor:
    """A separable Gaussian over a ``(h, w)`` tile, 1 at the centre, ``sigma = sigma_scale * side``, floored at
    :data:`MIN_WEIGHT`.

    Shape:
        Returns ``(h, w)`` float32.
    """
    axes = []
    for side in size:
        offsets = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
        sigma = sigma_scale * side
        axes.append(torch.exp(-(offsets**2) / (2 * sigma**2)))
    weight = axes[0][:, None] * axes[1][None, :]
    return (weight / weight.max()).clamp_min(MIN_WEIGHT).float()


@torch.no_grad()
def sliding_window_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    tile_size: tuple[int, int],
    *,
    overlap: float = 0.25,
    batch_size: int = 4,
    amp: bool = False,
    lesion_channel: int = 1,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Lesion probabilities of a whole image from overlapping tiles, blended with :func:`gaussian_weight`.

    Args:
        model: a segmentation model in eval mode; tiles go to the device of its first parameter.
        image: ``(C, H, W)`` uint8 (scaled by 1/255, as in training) or float, on any device.
        tile_size: ``(h, w)`` of a tile; clipped to the image where the image is smaller.
        overlap: share of a tile shared with the next one, in [0, 1) (default 0.25).
        batch_size: tiles per forward pass (default 4).
        amp: autocast (bf16 on CPU, fp16 on CUDA).
        lesion_channel: the lesion's logit channel.
        sigma_scale: the Gaussian's sigma as a share of the tile side (default 0.125).

    Shape:
        ``(C, H, W) -> (H, W)`` float32 on the model's device.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    check_positive_int("batch_size", batch_size)
    height, width = image.shape[1:]
    tile_h, tile_w = min(int(tile_size[0]), height), min(int(tile_size[1]), width)
    check_positive_int("tile height", tile_h)
    check_positive_int("tile width", tile_w)
    device = model_device(model, default=image.device)
    weight = gaussian_weight((tile_h, tile_w), sigma_scale).to(device)
    weighted_sum = torch.zeros(height, width, dtype=torch.float32, device=device)
    weight_sum = torch.zeros(height, width, dtype=torch.float32, device=device)
    corners = [
        (top, left) for top in window_starts(height, tile_h, overlap) for left in window_starts(width, tile_w, overlap)
    ]
    for start in range(0, len(corners), batch_size):
        batch_corners = corners[start : start + batch_size]
        tiles = torch.stack([image[:, top : top + tile_h, left : left + tile_w] for top, left in batch_corners])
        tiles = tiles.to(device, non_blocking=True)
        tiles = tiles.float().div_(255) if not tiles.is_floating_point() else tiles.float()
        probabilities = lesion_probabilities(model, tiles, amp=amp, lesion_channel=lesion_channel)[:, 0]
        for (top, left), probability in zip(batch_corners, probabilities):
            weighted_sum[top : top + tile_h, left : left + tile_w].addcmul_(probability, weight)
            weight_sum[top : top + tile_h, left : left + tile_w].add_(weight)
    return weighted_sum.div_(weight_sum)
