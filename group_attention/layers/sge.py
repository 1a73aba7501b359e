"""Spatial Group-wise Enhance (SGE): Li, Hu, Yang, "Spatial Group-wise Enhance: Improving Semantic Feature Learning
in Convolutional Networks", arXiv:1905.09646 (2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import check_feature_map, check_groups
from .dispatch import NotScriptable, use_fused
from .fused.sge import fused_spatial_group_enhance
from .group_ops import DEFAULT_EPS, restore_positions, standardized_pooled_dot, times_group_maps
from .timm_keywords import TimmKeywords


def sge_gate(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """The spatial gate ``sigmoid(gamma_g Norm(c_g) + beta_g)``: ``(B, C, *S) -> (B, m, *S)``, values in (0, 1).

    Compiled on CPU, ``c_g`` is a matrix product, standardized and gated over its flattened positions
    (:func:`~group_attention.layers.group_ops.standardized_pooled_dot`); the same values.
    """
    similarity = standardized_pooled_dot(x, groups, eps)  # c_g = sum_{k in g} F_k GP(F_k), standardized
    affine_shape = (1, groups) + (1,) * (similarity.dim() - 2)
    return restore_positions(torch.sigmoid(similarity * weight.view(affine_shape) + bias.view(affine_shape)), x)


def spatial_group_enhance(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """``Y_g = F_g * sge_gate(x)_g`` per group: ``(B, C, *S) -> (B, C, *S)``."""
    return times_group_maps(x, sge_gate(x, weight, bias, groups, eps).to(x.dtype))


torch.fx.wrap("spatial_group_enhance")  # torch.fx records the call; its shape logic runs on tensors


class SGE(NotScriptable, nn.Module):
    r"""Spatial Group-wise Enhance, as its authors' code computes it.

    Per group ``g`` of ``C / m`` channels, the similarity of each position's feature vector with the group's spatial
    mean is standardized over space, scaled and shifted by a learnable per-group :math:`\gamma_g, \beta_g`
    (initialized to 0 and 1, so the module starts as a constant gate :math:`\sigma(1)`) and gates the group:

    .. math::
        c_g(p) = \textstyle\sum_{k \in g} F_k(p)\, \mathrm{GP}(F_k), \qquad
        Y_g = F_g \otimes \sigma\big(\gamma_g \mathrm{Norm}(c_g) + \beta_g\big)

    Args:
        channels: number of input channels ``C`` (first positional argument: works as timm's ``attn_layer``).
        groups: number of groups ``m`` (default 32); must divide ``channels``.
        eps: added to the spatial standard deviation (default 1e-5, the authors').
        device, dtype: factory keyword arguments for the parameters.
        **timm_keywords: the keywords timm passes to an ``attn_layer``/``se_layer``
            (:class:`~group_attention.layers.timm_keywords.TimmKeywords`), ignored as SGE has no bottleneck and no
            hidden activation; ``gate_layer`` must be the authors' sigmoid.

    Shape:
        - Input: ``(B, C, *spatial)`` with 1 to 3 spatial dims.
        - Output: same shape, dtype and device as the input.

    Example:
        >>> SGE(64, groups=32)(torch.randn(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        groups: int = 32,
        *,
        eps: float = DEFAULT_EPS,
        device: "torch.device | str | None" = None,
        dtype: "torch.dtype | None" = None,
        **timm_keywords: Any,
    ) -> None:
        super().__init__()
        check_groups("channels", channels, groups, "SGE")
        TimmKeywords.parse("SGE", timm_keywords).require_sigmoid_gate("SGE")
        self.channels = channels
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(groups, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(groups, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation: scale 0, shift 1."""
        nn.init.zeros_(self.weight)
        nn.init.ones_(self.bias)

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-group spatial gate (:func:`sge_gate`): ``(B, C, *spatial) -> (B, m, *spatial)``."""
        return sge_gate(x, self.weight, self.bias, self.groups, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        if use_fused(x, self.weight):
            return fused_spatial_group_enhance(x, self.weight, self.bias, self.groups, self.eps)
        return spatial_group_enhance(x, self.weight, self.bias, self.groups, self.eps)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, eps={self.eps}"
