"""Spatial Group-wise Enhance (SGE): Li, Hu, Yang, "Spatial Group-wise Enhance: Improving Semantic Feature Learning
in Convolutional Networks", arXiv:1905.09646 (2019)."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_feature_map, check_groups
from ._group_ops import DEFAULT_EPS, group_pooled_dot, spatial_standardize


class SGE(nn.Module):
    r"""Spatial Group-wise Enhance, as its authors' code computes it.

    Per group ``g`` of ``C / m`` channels, the similarity of each position's feature vector with the group's spatial
    mean is standardized over space, scaled and shifted by a learnable per-group :math:`\gamma_g, \beta_g`
    (initialized to 0 and 1, so the module starts as a constant gate :math:`\sigma(1)`) and gates the group:

    .. math::
        c_g(p) = \textstyle\sum_{k \in g} F_k(p)\, \mathrm{GP}(F_k), \qquad
        Y_g = F_g \otimes \sigma\big(\gamma_g \mathrm{Norm}(c_g) + \beta_g\big)

    The dot product is a batched matrix product over the group's channels: ``F * GP(F)`` is never materialized.

    Args:
        channels: number of input channels ``C`` (first positional argument: works as timm's ``attn_layer``).
        groups: number of groups ``m`` (default 32); must divide ``channels``.
        eps: added to the spatial standard deviation (default 1e-5, the authors').
        device, dtype: factory keyword arguments for the parameters.

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
    ) -> None:
        super().__init__()
        check_groups("channels", channels, groups)
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
        """The per-group spatial gate in (0, 1). ``(B, C, *spatial) -> (B, m, *spatial)``."""
        standardized = spatial_standardize(group_pooled_dot(x, self.groups), self.eps)
        affine_shape = (1, self.groups) + (1,) * (x.dim() - 2)
        return torch.sigmoid(standardized * self.weight.view(affine_shape) + self.bias.view(affine_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        gate = self.spatial_gate(x).to(x.dtype)
        return (x.unflatten(1, (self.groups, -1)) * gate.unsqueeze(2)).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, eps={self.eps}"
