"""A photograph's lesion probabilities from overlapping tiles at full resolution, on the core's sliding window.

The fundus side of :func:`~group_attention.inference.sliding_window_inference`: a uint8 ``(3, H, W)`` crop is cut
into tiles on the CPU, each batch of tiles is scaled by 1/255 on the model's device (as in training) and turned into
the lesion's probability, and the tiles are blended with a Gaussian weight (``mode="gaussian"``, ``overlap=0.25``,
``sigma_scale=0.125``, as MONAI's defaults for that mode).
"""

from __future__ import annotations

import torch
from torch import nn

from ..inference import lesion_probabilities, model_device, sliding_window_inference

__all__ = ["sliding_window_probabilities"]


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
    """Lesion probabilities of a whole image from overlapping tiles, blended with a Gaussian weight.

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
    device = model_device(model, default=image.device)

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        tiles = tiles.float().div_(255) if not tiles.is_floating_point() else tiles.float()
        return lesion_probabilities(model, tiles, amp=amp, lesion_channel=lesion_channel)

    probability = sliding_window_inference(
        image[None],
        tuple(int(side) for side in tile_size),
        batch_size,
        predictor,
        overlap,
        "gaussian",
        sigma_scale=sigma_scale,
        sw_device=device,
        device=device,
    )
    return probability[0, 0]
