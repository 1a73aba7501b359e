"""U-Net's skip connection: upsample the high-level features and concatenate them with the low-level ones.

``ConcatSkip`` is the plain U-Net skip (Table 1's UNet and Baseline rows); ``SGAU`` (:mod:`.sgau`) reuses its
upsampling and input checks and adds spatial group attention on the low-level half.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_feature_map, check_positive_int
from .dispatch import NotScriptable
from .group_ops import autocast_enabled, pad_or_crop_to

TRANSPOSED_CONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
TRANSPOSED_CONV_FUNCTIONS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def transposed_upsample(high_channels: int, low_channels: int, spatial_dims: int, device=None, dtype=None) -> nn.Module:
    """U-Net's 2x2 (2x2x2) stride-2 transposed convolution from ``high_channels`` to ``low_channels``."""
    if spatial_dims not in TRANSPOSED_CONV:
        raise ValueError(f"spatial_dims must be one of {sorted(TRANSPOSED_CONV)}, got {spatial_dims!r}")
    conv = TRANSPOSED_CONV[spatial_dims]
    return conv(high_channels, low_channels, kernel_size=2, stride=2, device=device, dtype=dtype)


def check_skip_inputs(
    owner: str, low: object, high: object, low_channels: int, high_channels: int, spatial_dims: int
) -> None:
    """Check a skip connection's ``low`` ``(B, C_low, *S)`` and ``high`` ``(B, C_high, *s)`` before any compute."""
    if isinstance(low, torch.fx.Proxy) or isinstance(high, torch.fx.Proxy):
        raise TypeError(
            f"{owner} cannot be traced by torch.fx.symbolic_trace (its sizes decide the padding); keep it a leaf "
            f"module (a custom Tracer's is_leaf_module, or timm's register_notrace_module({owner})), or export "
            "with torch.export.export"
        )
    check_feature_map("low", low, low_channels, owner)
    check_feature_map("high", high, high_channels, owner)
    for name, x in (("low", low), ("high", high)):
        if x.dim() != spatial_dims + 2:
            raise ValueError(
                f"{owner}: {name} must have {spatial_dims} spatial dims (the module's spatial_dims), "
                f"got shape {tuple(x.shape)}"
            )
    if low.shape[0] != high.shape[0]:
        raise ValueError(
            f"{owner}: low and high must have the same batch size, got low {tuple(low.shape)} "
            f"and high {tuple(high.shape)}"
        )


class ConcatSkip(NotScriptable, nn.Module):
    r"""U-Net's skip connection: ``Cat(F^n; Up(F^{n+1}))``.

    Args:
        low_channels: channels of the low-level (encoder, higher-resolution) features ``C_low``.
        high_channels: channels of the high-level (decoder, lower-resolution) features ``C_high``.
        spatial_dims: 1, 2 (default) or 3.
        device, dtype: factory keyword arguments for the upsampling convolution.

    Shape:
        - low: ``(B, C_low, *S)``; high: ``(B, C_high, *s)`` with ``S`` about ``2 s``. The upsampled high-level
          features are zero-padded or cropped to ``S``, so odd sizes work.
        - Output: ``(B, 2 C_low, *S)``; ``out_channels`` gives the width.
    """

    def __init__(
        self, low_channels: int, high_channels: int, *, spatial_dims: int = 2, device=None, dtype=None
    ) -> None:
        super().__init__()
        check_positive_int("low_channels", low_channels)
        check_positive_int("high_channels", high_channels)
        self.low_channels = low_channels
        self.high_channels = high_channels
        self.spatial_dims = spatial_dims
        self.out_channels = 2 * low_channels
        self.up = transposed_upsample(high_channels, low_channels, spatial_dims, device, dtype)

    def upsample(self, high: torch.Tensor, size: "torch.Size | tuple[int, ...]") -> torch.Tensor:
        """Transposed convolution, then pad or crop to the low-level ``size``.

        Outside autocast the convolution runs in the promoted dtype of ``high`` and its parameters (as the
        attention layers accept any floating dtype); under autocast, in autocast's.
        """
        weight = self.up.weight
        if high.dtype == weight.dtype or autocast_enabled(high):
            return pad_or_crop_to(self.up(high), size)
        dtype = torch.promote_types(high.dtype, weight.dtype)
        convolve = TRANSPOSED_CONV_FUNCTIONS[self.spatial_dims]
        bias = None if self.up.bias is None else self.up.bias.to(dtype)
        return pad_or_crop_to(convolve(high.to(dtype), weight.to(dtype), bias, stride=2), size)

    def attend(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The low-level half of the output; the identity here, spatial group attention in ``SGAU``."""
        return low

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        check_skip_inputs(type(self).__name__, low, high, self.low_channels, self.high_channels, self.spatial_dims)
        return torch.cat([self.attend(low, high), self.upsample(high, low.shape[2:])], dim=1)

    def extra_repr(self) -> str:
        return f"low_channels={self.low_channels}, high_channels={self.high_channels}, spatial_dims={self.spatial_dims}"
