"""Channel Group Attention (CGA), eqs 1-2 of Ye et al., "GANet: Group attention network for diabetic retinopathy
image segmentation", SPIE Medical Imaging 2020 (doi:10.1117/12.2548310)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_feature_map, check_groups
from .dispatch import NotScriptable, use_fused
from .fused.cga import fused_channel_group_attention
from .group_ops import (
    DEFAULT_EPS,
    broadcast_channels,
    expand_groups,
    gradient_flows,
    group_sum,
    group_sum_by_product,
    maps_by_product,
    restore_positions,
    spatial_dims,
    spatial_standardize,
)
from .timm_keywords import TimmKeywords

GATE_MODES = ("group", "channel")


def group_saliency(x: torch.Tensor, groups: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Eq. 1: ``s_g = sigmoid(Norm(sum_{c in g} x_c))``. ``(B, C, *S) -> (B, m, *S)``, values in (0, 1)."""
    return restore_positions(_saliency(x, groups, eps), x)


def _saliency(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """:func:`group_saliency`; compiled on CPU for inference with several channels per group, the flat ``(B, m, N)``
    of :func:`~group_attention.layers.group_ops.group_sum_by_product` (the same values)."""
    by_product = maps_by_product(x, groups) and not gradient_flows(x)
    sums = group_sum_by_product(x, groups) if by_product else group_sum(x, groups)
    return torch.sigmoid(spatial_standardize(sums, eps))


def cga_channel_weights(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    groups: int,
    eps: float = DEFAULT_EPS,
    per_group: bool = True,
) -> torch.Tensor:
    """Eq. 2's gate ``sigmoid(W GP(s) + b)``, one weight per channel: ``(B, C, *S) -> (B, C)``.

    ``weight`` is ``(m, m)`` with ``per_group`` (each group's weight shared by its channels) or ``(C, m)``.
    """
    saliency = _saliency(x, groups, eps)
    pooled = saliency.mean(spatial_dims(saliency))  # GP: (B, m)
    gate = torch.sigmoid(F.linear(pooled, weight.to(pooled.dtype), bias.to(pooled.dtype)))
    return expand_groups(gate, x.shape[1]) if per_group else gate


def channel_group_attention(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    groups: int,
    eps: float = DEFAULT_EPS,
    per_group: bool = True,
) -> torch.Tensor:
    """Eq. 2: ``Y = sigmoid(W GP(s) + b) * x``. ``(B, C, *S) -> (B, C, *S)``."""
    return x * broadcast_channels(cga_channel_weights(x, weight, bias, groups, eps, per_group).to(x.dtype), x)


torch.fx.wrap("channel_group_attention")  # torch.fx records the call; its shape logic runs on tensors


class CGA(NotScriptable, nn.Module):
    r"""Channel Group Attention: reweight channels by how salient their group's summed map is.

    Each of the ``m`` groups of ``C / m`` consecutive channels is summed into one map, standardized over space and
    squashed by a sigmoid (eq. 1); the maps are average-pooled and mapped by a learned linear layer and a sigmoid to
    weights that multiply the input (eq. 2):

    .. math::
        s_g = \sigma\Big(\mathrm{Norm}\big(\textstyle\sum_{c \in g} F_c\big)\Big), \qquad
        Y = \sigma\big(W \, \mathrm{GP}(s) + b\big) \otimes F

    where :math:`\mathrm{Norm}(t) = (t - \mu_t) / (\sigma_t + \epsilon)` over space.

    With ``gate="group"`` (default) :math:`W` maps the ``m`` pooled values to ``m`` group weights (``m*m + m``
    parameters), each shared by its group's channels: the reading that gives Table 1's 6K parameters for GANet's five
    modules; ``gate="channel"`` maps to ``C`` channel weights (``m*C + C``). Docs: "From paper to code".

    Args:
        channels: number of input channels ``C`` (first, so ``CGA`` works as timm's ``attn_layer``).
        groups: number of groups ``m`` (default 32, the paper's); must divide ``channels``.
        gate: ``"group"`` (one weight per group, default) or ``"channel"`` (one weight per channel).
        eps: added to the spatial standard deviation (default 1e-5).
        device, dtype: factory keyword arguments for the parameters (timm passes them).
        **timm_keywords: the keywords timm passes to an ``attn_layer``/``se_layer``
            (:class:`~group_attention.layers.timm_keywords.TimmKeywords`), ignored as CGA has no bottleneck and no
            hidden activation; ``gate_layer`` must be the paper's sigmoid.

    Shape:
        - Input: ``(B, C, *spatial)`` with 1 to 3 spatial dims (images or volumes), any memory format.
        - Output: same shape, dtype and device as the input.

    Example:
        >>> cga = CGA(64, groups=32)
        >>> cga(torch.randn(2, 64, 24, 32)).shape
        torch.Size([2, 64, 24, 32])
    """

    def __init__(
        self,
        channels: int,
        groups: int = 32,
        *,
        gate: str = "group",
        eps: float = DEFAULT_EPS,
        device: "torch.device | str | None" = None,
        dtype: "torch.dtype | None" = None,
        **timm_keywords: Any,
    ) -> None:
        super().__init__()
        check_groups("channels", channels, groups, "CGA")
        check_choice("gate", gate, GATE_MODES)
        TimmKeywords.parse("CGA", timm_keywords).require_sigmoid_gate("CGA")
        self.channels = channels
        self.groups = groups
        self.gate = gate
        self.eps = eps
        self.fc = nn.Linear(groups, groups if gate == "group" else channels, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Linear`` initialisation."""
        self.fc.reset_parameters()

    def group_saliency(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1 (:func:`group_saliency`): ``(B, C, *spatial) -> (B, m, *spatial)``."""
        return group_saliency(x, self.groups, self.eps)

    @property
    def _per_group(self) -> bool:
        """One gate weight per group (``gate="group"``) rather than per channel."""
        return self.gate == "group"

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 2's gate (:func:`cga_channel_weights`): ``(B, C, *spatial) -> (B, C)``, values in (0, 1)."""
        return cga_channel_weights(x, self.fc.weight, self.fc.bias, self.groups, self.eps, self._per_group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        if use_fused(x, self.fc.weight):
            return self._fused(x)[0]
        return channel_group_attention(x, self.fc.weight, self.fc.bias, self.groups, self.eps, self._per_group)

    def forward_with_gate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output and the channel weights that made it: ``(B, C, *spatial), (B, C)`` with ``y = x * w``."""
        check_feature_map("x", x, self.channels, type(self).__name__)
        if use_fused(x, self.fc.weight):
            output, gate = self._fused(x)
            gate = gate.to(x.dtype)
            return output, expand_groups(gate, self.channels) if self._per_group else gate
        weights = self.channel_weights(x).to(x.dtype)
        return x * broadcast_channels(weights, x), weights

    def _fused(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused Function's output and its gate, one weight per group or per channel."""
        return fused_channel_group_attention(x, self.fc.weight, self.fc.bias, self.groups, self.eps, self._per_group)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, gate={self.gate!r}, eps={self.eps}"
