"""U-Net's expanding path and segmentation head: each decoder level joins the deeper features with the encoder's
through a skip connection (``ConcatSkip`` or ``SGAU``) and convolves them; a 1x1 convolution gives the logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.group_ops import INTERPOLATION_MODES
from .blocks import CONV, ConvBlock


class UNetDecoder(nn.Module):
    """Decoder levels, deepest first: level ``i`` joins encoder features ``-(i + 2)`` with the output of the level
    below (the bottleneck for the first) through ``skips[i]``, then ``blocks[i]`` convolves the result.

    Args:
        widths: the encoder's stage widths, shallowest first.
        skip: a factory ``(low_channels, high_channels) -> module`` with an ``out_channels`` attribute.
        decoder_convs: 3x3 convolutions per level.
        spatial_dims, norm, act: as :class:`~group_attention.models.UNet`.

    Shape:
        ``[(B, widths[i], *S / 2**i)] -> (B, widths[0], *S)``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        skip: Callable[[int, int], nn.Module],
        *,
        decoder_convs: int = 2,
        spatial_dims: int = 2,
        norm: Any = "batch",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        self.skips = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for low, high in zip(reversed(widths[:-1]), reversed(widths[1:])):
            join = skip(low, high)
            self.skips.append(join)
            self.blocks.append(
                ConvBlock(join.out_channels, low, decoder_convs, spatial_dims=spatial_dims, norm=norm, act=act)
            )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        decoded = features[-1]
        for skip, block, low in zip(self.skips, self.blocks, reversed(features[:-1])):
            decoded = block(skip(low, decoded))
        return decoded


class SegmentationHead(nn.Module):
    """A 1x1 convolution to ``num_classes`` logits, upsampled by ``upsample`` (a timm encoder's first stride).

    Shape:
        ``(B, in_channels, *S) -> (B, num_classes, *S * upsample)``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, spatial_dims: int = 2, upsample: int = 1) -> None:
        super().__init__()
        self.conv = CONV[spatial_dims](in_channels, num_classes, kernel_size=1)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv(x)
        if self.upsample == 1:
            return logits
        mode = INTERPOLATION_MODES[logits.dim() - 2]
        return F.interpolate(logits, scale_factor=self.upsample, mode=mode, align_corners=False)
