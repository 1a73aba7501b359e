"""A photograph's lesion probabilities from overlapping tiles at full resolution, on the core's sliding window.

The fundus side of :func:`~group_attention.inference.sliding_window_inference`: a uint8 ``(3, H, W)`` crop is cut
into tiles on the CPU, each batch of tiles is scaled by 1/255 on the model's device (as in training) and turned into
the lesion's probability, and the tiles are blended with a Gaussian weight (``mode="gaussian"``, ``overlap=0.25``,
``sigma_scale=0.125``, as MONAI's defaults for that mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..inference import lesion_probabilities, model_device, sliding_window_inference

__all__ = ["sliding_window_probabilities", "crop_probabilities", "WINDOW_OVERLAP"]

#: The share of a tile shared with the next one, by default (MONAI's default for the Gaussian mode).
WINDOW_OVERLAP = 0.25


@torch.no_grad()
def sliding_window_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    tile_size: tuple[int, int],
    *,
    overlap: float = WINDOW_OVERLAP,
    batch_size: int = 4,
    amp: bool = False,
    lesion_channel: "int | Sequence[int]" = 1,
    activation: "str | None" = None,
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
        lesion_channel: the lesion's logit channel, or a sequence of channels (a joint model's lesions).
        activation: ``"softmax"``, ``"sigmoid"`` or None (by the number of logits), as for
            :func:`~group_attention.inference.lesion_probabilities`.
        sigma_scale: the Gaussian's sigma as a share of the tile side (default 0.125).

    Shape:
        ``(C, H, W) -> (H, W)`` float32 on the model's device; ``(L, H, W)`` for a sequence of ``L`` channels.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    device = model_device(model, default=image.device)

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        tiles = tiles.float().div_(255) if not tiles.is_floating_point() else tiles.float()
        return lesion_probabilities(model, tiles, amp=amp, lesion_channel=lesion_channel, activation=activation)

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
    return probability[0, 0] if isinstance(lesion_channel, int) else probability[0]


@torch.no_grad()
def crop_probabilities(
    model: nn.Module,
    scaled_crop: torch.Tensor,
    crop_size: tuple[int, int],
    tile_size: tuple[int, int],
    *,
    lesion_channels: Sequence[int],
    activation: "str | None" = None,
    overlap: float = WINDOW_OVERLAP,
    batch_size: int = 4,
    amp: bool = False,
) -> torch.Tensor:
    """Probabilities of every lesion of a model over a field-of-view crop at its original resolution, from the
    sliding window over the crop resized to the model's training scale: the code both ``predict`` (of a checkpoint
    trained on patches) and the experiment's test run.

    Args:
        scaled_crop: ``(C, h, w)`` uint8, the crop resized by the training scale
            (:func:`~group_attention.fundus.data.preprocess.resize_image` to
            :func:`~group_attention.fundus.data.preprocess.scaled_size`).
        crop_size: ``(H, W)`` of the crop at the original resolution; the probabilities are resized to it with
            bilinear interpolation of pixel centres (``align_corners=False``, the inverse of the crop's resize).
        tile_size, overlap, batch_size, amp, activation: of :func:`sliding_window_probabilities`.
        lesion_channels: the logit channel of each lesion.

    Shape:
        ``(L, H, W)`` float32 in [0, 1] on the model's device.
    """
    probability = sliding_window_probabilities(
        model,
        scaled_crop,
        tile_size,
        overlap=overlap,
        batch_size=batch_size,
        amp=amp,
        lesion_channel=list(lesion_channels),
        activation=activation,
    )
    if tuple(probability.shape[1:]) != tuple(crop_size):
        probability = F.interpolate(probability[None], size=tuple(crop_size), mode="bilinear", align_corners=False)[0]
    return probability.clamp_(0, 1)
