"""Spatial Group Attention Upsampling (SGAU), eq. 3 and Fig. 3 of Ye et al., "GANet: Group attention network for
diabetic retinopathy image segmentation", SPIE Medical Imaging 2020."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_feature_map, check_groups
from .dispatch import NotScriptable, use_fused
from .fused.sgau import fused_attention_skip, fused_spatial_group_attention
from .group_ops import DEFAULT_EPS, resize_to, restore_positions, standardized_pooled_dot, times_group_maps
from .skip import ConcatSkip, check_skip_inputs


def sgau_attention(high: torch.Tensor, groups: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The attention maps ``A_g = sigmoid(Norm(sum_{k in g} F_k GP(F_k)))`` of the high-level features:
    ``(B, C_high, *s) -> (B, m, *s)``, values in (0, 1).

    Compiled on CPU, the maps are a matrix product standardized over their flattened positions
    (:func:`~group_attention.layers.group_ops.standardized_pooled_dot`); the same values.
    """
    return restore_positions(torch.sigmoid(standardized_pooled_dot(high, groups, eps)), high)


def spatial_group_attention(
    low: torch.Tensor, high: torch.Tensor, groups: int, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Eq. 3's gated skip: ``F^n_g * (1 + Up(A_g))`` per group. ``(B, C_low, *S), (B, C_high, *s) -> (B, C_low, *S)``.

    The attended features lie between ``low`` and ``2 * low``; there are no parameters.
    """
    attention = resize_to(sgau_attention(high, groups, eps), low.shape[2:]).to(low.dtype)
    return times_group_maps(low, 1 + attention)


torch.fx.wrap("spatial_group_attention")  # torch.fx records the call; its shape logic runs on tensors


class SkipAttention(NotScriptable, nn.Module):
    r"""SGAU's gate of a U-Net skip: the low-level features times one plus the upsampled spatial attention maps of
    the high-level features, group by group (eq. 3 of Ye et al. 2020, :func:`spatial_group_attention`):

    .. math::
        A_g = \sigma\Big(\mathrm{Norm}\big(\textstyle\sum_{k \in g} F^{n+1}_k\, \mathrm{GP}(F^{n+1}_k)\big)\Big),
        \qquad Y_g = F^n_g \otimes (1 + \mathrm{Up}(A_g))

    It has no parameters. :class:`SGAU` gates its skip with it (passing its upsampled high-level features as ``up``,
    so the concatenation is part of the same fused pass), and :func:`~group_attention.sgau_skips` inserts it into
    other U-Nets, whose upsampling stays their own.

    Args:
        channels: channels ``C_low`` of the skip (low-level) features; divisible by ``groups``.
        groups: number of groups ``m`` (default 32); must also divide the high-level channels.
        eps: added to the spatial standard deviation (default 1e-5).

    Shape:
        - low: ``(B, C_low, *S)``; high: ``(B, C_high, *s)``, with 1 to 3 spatial dims (``s`` is usually ``S / 2``).
        - up (optional): ``(B, C_low, *S)``, the upsampled high-level features.
        - Output: ``(B, C_low, *S)``, between ``low`` and ``2 * low``; with ``up``, ``Cat(Y; up)`` of
          ``(B, 2 C_low, *S)``.

    Example:
        >>> gate = SkipAttention(64, groups=32)
        >>> gate(torch.randn(2, 64, 32, 32), torch.randn(2, 128, 16, 16)).shape
        torch.Size([2, 64, 32, 32])
    """

    def __init__(self, channels: int, groups: int = 32, *, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        check_groups("channels", channels, groups)
        self.channels = channels
        self.groups = groups
        self.eps = eps

    def attention_map(self, high: torch.Tensor) -> torch.Tensor:
        """The attention maps at the high-level size (:func:`sgau_attention`): ``(B, C_high, *s) -> (B, m, *s)``."""
        return sgau_attention(high, self.groups, self.eps)

    def forward(self, low: torch.Tensor, high: torch.Tensor, up: "torch.Tensor | None" = None) -> torch.Tensor:
        self._check_inputs(low, high, up)
        if up is None:
            if use_fused(low, high):
                return fused_spatial_group_attention(low, high, self.groups, self.eps)
            return spatial_group_attention(low, high, self.groups, self.eps)
        if use_fused(low, high, up):
            return fused_attention_skip(low, high, up, self.groups, self.eps)
        return torch.cat([spatial_group_attention(low, high, self.groups, self.eps), up], dim=1)

    def _check_inputs(self, low: torch.Tensor, high: torch.Tensor, up: "torch.Tensor | None") -> None:
        owner = type(self).__name__
        check_feature_map("low", low, self.channels, owner)
        if not isinstance(high, torch.Tensor) or high.dim() != low.dim() or high.shape[1] % self.groups:
            raise ValueError(
                f"{owner}: high must be a tensor with low's number of dims ({low.dim()}) and channels "
                f"divisible by groups={self.groups}, got "
                f"{tuple(high.shape) if isinstance(high, torch.Tensor) else type(high).__name__}"
            )
        if up is not None and (not isinstance(up, torch.Tensor) or up.shape != low.shape):
            raise ValueError(
                f"{owner}: up must be a tensor of low's shape {tuple(low.shape)}, got "
                f"{tuple(up.shape) if isinstance(up, torch.Tensor) else type(up).__name__}"
            )

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, eps={self.eps}"


class SGAU(ConcatSkip):
    r"""Spatial Group Attention Upsampling: a U-Net skip connection whose low-level features are gated by spatial
    attention maps computed from the high-level features.

    For each of the ``m`` groups of high-level channels, the dot product of every position's feature vector with
    the group's globally pooled vector (summed over the group's channels), standardized over space and squashed by a
    sigmoid, is an attention map :math:`A_g`. It is upsampled (bilinear; trilinear for volumes) to the low-level size
    and gates the matching group of low-level features with a residual; the result is concatenated with the
    upsampled high-level features (eq. 3 with the residual of section 2.3):

    .. math::
        A_g = \sigma\Big(\mathrm{Norm}\big(\textstyle\sum_{k \in g} F^{n+1}_k\, \mathrm{GP}(F^{n+1}_k)\big)\Big),
        \qquad Y = \mathrm{Cat}\big(F^n_g \otimes (1 + \mathrm{Up}(A_g));\ \mathrm{Up}(F^{n+1})\big)

    The gating is :class:`SkipAttention`'s (the ``gate`` child). Apart from U-Net's transposed convolution the module
    has no parameters, so Baseline+SGAU has the Baseline's parameter count (Table 1). With ``record_attention = True``
    the last attention maps (detached, at the low-level size) are kept in ``last_attention`` (the paper's Fig. 4).

    Args:
        low_channels: channels ``C_low`` of the low-level (encoder) features; divisible by ``groups``.
        high_channels: channels ``C_high`` of the high-level features; divisible by ``groups``.
        groups: number of groups ``m`` (default 32).
        spatial_dims: 1, 2 (default) or 3.
        eps: added to the spatial standard deviation (default 1e-5).
        device, dtype: factory keyword arguments for the upsampling convolution.

    Shape:
        - low: ``(B, C_low, *S)``; high: ``(B, C_high, *s)`` with ``S`` about ``2 s`` (odd sizes are matched to ``S``).
        - Output: ``(B, 2 C_low, *S)``; ``out_channels`` gives the width.

    Example:
        >>> sgau = SGAU(64, 128, groups=32)
        >>> sgau(torch.randn(2, 64, 32, 32), torch.randn(2, 128, 16, 16)).shape
        torch.Size([2, 128, 32, 32])
    """

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        groups: int = 32,
        *,
        spatial_dims: int = 2,
        eps: float = DEFAULT_EPS,
        device=None,
        dtype=None,
    ) -> None:
        check_groups("low_channels", low_channels, groups, "SGAU")
        check_groups("high_channels", high_channels, groups, "SGAU")
        super().__init__(low_channels, high_channels, spatial_dims=spatial_dims, device=device, dtype=dtype)
        self.gate = SkipAttention(low_channels, groups, eps=eps)
        self.record_attention = False
        self.last_attention: "torch.Tensor | None" = None

    @property
    def groups(self) -> int:
        """The number of groups ``m``, the gate's."""
        return self.gate.groups

    @property
    def eps(self) -> float:
        """Added to the spatial standard deviation, the gate's."""
        return self.gate.eps

    def attention_map(self, high: torch.Tensor) -> torch.Tensor:
        """The attention maps at the high-level size (:func:`sgau_attention`): ``(B, C_high, *s) -> (B, m, *s)``."""
        return self.gate.attention_map(high)

    def attend(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The low-level half of the output (:func:`spatial_group_attention`): ``(B, C_low, *S)``."""
        return spatial_group_attention(low, high, self.groups, self.eps)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        check_skip_inputs(type(self).__name__, low, high, self.low_channels, self.high_channels, self.spatial_dims)
        if self.record_attention:
            with torch.no_grad():
                self.last_attention = resize_to(self.attention_map(high), low.shape[2:]).to(low.dtype)
        return self.gate(low, high, self.upsample(high, low.shape[2:]))
