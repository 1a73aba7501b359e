"""Squeeze-and-Excitation (SE): Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507)."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_feature_map, check_positive_int
from ._group_ops import spatial_dims


class SE(nn.Module):
    r"""Squeeze-and-excitation channel attention, the "+SE" row of GANet's Table 1.

    .. math::
        Y = \sigma\big(W_2\,\delta(W_1\,\mathrm{GP}(F) + b_1) + b_2\big) \otimes F

    with global average pooling :math:`\mathrm{GP}`, ReLU :math:`\delta` and a bottleneck of
    ``max(1, channels // reduction)`` units. Unlike timm's ``SEModule`` the bottleneck is not rounded up to a
    multiple of 8: with reduction 16 five SE modules on GANet's 32..512-channel encoder add 44,722 parameters,
    Table 1's Baseline+SE count (7.025M vs 6.981M); timm's rounding would add 56,658.

    Args:
        channels: number of input channels ``C`` (first positional argument: works as timm's ``attn_layer``).
        reduction: bottleneck ratio (default 16).
        rd_channels: bottleneck width; overrides ``reduction`` when given.
        act_layer: activation between the two linear maps (default ``nn.ReLU``).
        gate_layer: gating activation (default ``nn.Sigmoid``).
        device, dtype: factory keyword arguments for the parameters.

    Shape:
        - Input: ``(B, C, *spatial)`` with 1 to 3 spatial dims.
        - Output: same shape, dtype and device as the input.

    Example:
        >>> SE(64)(torch.randn(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        rd_channels: "int | None" = None,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
        device: "torch.device | str | None" = None,
        dtype: "torch.dtype | None" = None,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        rd_channels = max(1, channels // reduction) if rd_channels is None else rd_channels
        check_positive_int("rd_channels", rd_channels)
        self.channels = channels
        self.fc1 = nn.Linear(channels, rd_channels, device=device, dtype=dtype)
        self.act = act_layer()
        self.fc2 = nn.Linear(rd_channels, channels, device=device, dtype=dtype)
        self.gate = gate_layer()

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation: one weight per channel. ``(B, C, *spatial) -> (B, C)``."""
        pooled = x.mean(spatial_dims(x))
        return self.gate(self.fc2(self.act(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        weights = self.channel_weights(x).to(x.dtype)
        return x * weights.view(*weights.shape, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"{self.channels}, rd_channels={self.fc1.out_features}"
