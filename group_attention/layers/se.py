"""Squeeze-and-Excitation (SE): Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_feature_map, check_positive_int
from .dispatch import NotScriptable, use_fused
from .fused.se import fused_squeeze_excite
from .group_ops import broadcast_channels
from .timm_keywords import TimmKeywords


def squeeze_excite(
    x: torch.Tensor,
    weight1: torch.Tensor,
    bias1: torch.Tensor,
    weight2: torch.Tensor,
    bias2: torch.Tensor,
    act: Callable = F.relu,
    gate: Callable = torch.sigmoid,
) -> torch.Tensor:
    """``Y = gate(W2 act(W1 GP(x) + b1) + b2) * x``: ``(B, C, *S) -> (B, C, *S)``; ``W1`` is ``(r, C)``, ``W2``
    ``(C, r)``."""
    pooled = x.flatten(2).mean(-1)  # GP: (B, C)
    weights = gate(F.linear(act(F.linear(pooled, weight1, bias1)), weight2, bias2))
    return x * broadcast_channels(weights.to(x.dtype), x)


torch.fx.wrap("broadcast_channels")  # torch.fx records the call; its shape logic runs on tensors


class SE(NotScriptable, nn.Module):
    r"""Squeeze-and-excitation channel attention, the "+SE" row of GANet's Table 1.

    .. math::
        Y = \sigma\big(W_2\,\delta(W_1\,\mathrm{GP}(F) + b_1) + b_2\big) \otimes F

    with global average pooling :math:`\mathrm{GP}`, ReLU :math:`\delta` and a bottleneck of
    ``max(1, channels // reduction)`` units, not rounded up to a multiple of 8 as timm's ``SEModule`` does: that
    gives Table 1's Baseline+SE count (docs: "From paper to code").

    Args:
        channels: number of input channels ``C`` (first positional argument: works as timm's ``attn_layer``).
        reduction: bottleneck ratio (default 16).
        device, dtype: factory keyword arguments for the parameters.
        **timm_keywords: the keywords timm passes (:class:`~group_attention.layers.timm_keywords.TimmKeywords`):
            ``rd_ratio`` (the width as a share of ``channels``) or ``rd_channels`` (the width) override
            ``reduction``; ``act_layer`` (default ``nn.ReLU``) and ``gate_layer`` (default ``nn.Sigmoid``) are a
            class, a timm name such as ``"leaky_relu"``, or None; ``rd_divisor`` is ignored (the width is not
            rounded, see above).

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
        device: "torch.device | str | None" = None,
        dtype: "torch.dtype | None" = None,
        **timm_keywords: Any,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        options = TimmKeywords.parse("SE", timm_keywords)
        rd_channels = options.bottleneck_width(channels, reduction)
        self.channels = channels
        self.fc1 = nn.Linear(channels, rd_channels, device=device, dtype=dtype)
        self.act = options.activation()
        self.fc2 = nn.Linear(rd_channels, channels, device=device, dtype=dtype)
        self.gate = options.gate()

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation: one weight per channel. ``(B, C, *spatial) -> (B, C)``."""
        return self.gate(self.fc2(self.act(self.fc1(x.flatten(2).mean(-1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        if type(self.act) is nn.ReLU and type(self.gate) is nn.Sigmoid and use_fused(x, self.fc1.weight):
            return fused_squeeze_excite(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        return x * broadcast_channels(self.channel_weights(x).to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"{self.channels}, rd_channels={self.fc1.out_features}"
