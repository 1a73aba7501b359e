"""SGE's fused autograd Functions: PyTorch operations with a hand-written backward, and the Triton kernels' version;
both compute :func:`group_attention.layers.sge.spatial_group_enhance`."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..dispatch import triton_kernels, use_triton
from ..group_ops import broadcast_channels, spatial_dims, spatial_size, stat_dtype
from .common import (
    channel_dot,
    coupling_factor,
    group_dot,
    group_pooled_dot,
    standardize_maps,
    standardize_maps_backward,
)


def fused_spatial_group_enhance(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float
) -> torch.Tensor:
    """:func:`~group_attention.layers.sge.spatial_group_enhance` in one autograd Function (Triton kernels where
    they serve ``x``)."""
    function = _SpatialGroupEnhanceKernels if use_triton(x) else _SpatialGroupEnhance
    return function.apply(x, weight, bias, groups, eps)


class _SpatialGroupEnhance(torch.autograd.Function):
    """``SGE.forward`` (``x * spatial_gate(x)``, per group) with a hand-written backward.

    Forward reads ``x`` three times (channel means, the dot-product maps, the gated product) and never materializes
    ``x * mean``; it keeps the standardized maps (``m / C`` of ``x``). Backward makes three passes: the per-position
    group sums of ``gy * x`` (the gate's gradient), the per-channel sums of ``x`` times the maps' gradient, and one
    that writes ``dx = gy * gate + d_maps * mean + d_mean / N``. Autograd through the batched matrix product instead
    materializes ``x * mean``'s gradient, the expanded mean gradient and the sums of the three input gradients.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        channel_mean = x.mean(spatial_dims(x), dtype=stat_dtype(x.dtype))
        standardized, _, std, inv = standardize_maps(group_pooled_dot(x, groups, channel_mean), eps, overwrite=True)
        affine_shape = (1, groups) + (1,) * (x.dim() - 2)
        scale, shift = weight.view(affine_shape), bias.view(affine_shape)
        gate = torch.sigmoid(torch.addcmul(shift.to(standardized.dtype), standardized, scale.to(standardized.dtype)))
        ctx.save_for_backward(x, channel_mean, standardized, std, inv, weight, bias)
        ctx.groups = groups
        # Written into a fresh tensor, not returned as a view of a grouped product: callers may modify it in place.
        out = torch.empty_like(x)
        torch.mul(x.unflatten(1, (groups, -1)), gate.to(x.dtype).unsqueeze(2), out=out.unflatten(1, (groups, -1)))
        return out

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad):
        x, channel_mean, standardized, std, inv, weight, bias = ctx.saved_tensors
        groups = ctx.groups
        affine_shape = (1, groups) + (1,) * (x.dim() - 2)
        scale = weight.view(affine_shape).to(standardized.dtype)
        gate = torch.sigmoid(torch.addcmul(bias.view(affine_shape).to(standardized.dtype), standardized, scale))
        # y = x * gate per group: the gate's gradient sums gy * x over the group's channels.
        grad_affine = torch.ops.aten.sigmoid_backward(group_dot(grad, x, groups), gate)
        dims = (0,) + spatial_dims(x)
        grad_weight = (grad_affine * standardized).sum(dims).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad_affine.sum(dims).to(bias.dtype) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_maps = standardize_maps_backward(grad_affine.mul_(scale), standardized, std, inv, overwrite=True)
            # maps = sum_k x_k * mean_k, and mean_k = sum_p x_k / N: both paths lead to x.
            expanded_maps = grad_maps.unsqueeze(2)
            grouped = x.unflatten(1, (groups, -1))
            grad_mean = channel_dot(grouped, expanded_maps, first_spatial_dim=3).flatten(1, 2) / spatial_size(x)
            mean = broadcast_channels(channel_mean, x).unflatten(1, (groups, -1))
            grad_x = torch.addcmul(
                broadcast_channels(grad_mean, x).unflatten(1, (groups, -1)).to(x.dtype),
                grad.unflatten(1, (groups, -1)),
                gate.to(x.dtype).unsqueeze(2),
            )
            grad_x.addcmul_(expanded_maps.to(x.dtype), mean.to(x.dtype))
            grad_x = grad_x.flatten(1, 2)
        return grad_x, grad_weight, grad_bias, None, None


class _SpatialGroupEnhanceKernels(torch.autograd.Function):
    """``_SpatialGroupEnhance`` on the Triton kernels (CUDA): three passes over ``x`` forward, two backward.

    Forward: the channel means, one kernel for the dot-product maps (written, float32) and their per-tile
    statistics, one that merges the statistics and one that writes the gated output. Backward: one kernel reads
    ``gy``, ``x`` and the maps, writes the gate's pre-activation gradient ``a`` (a map) and sums, per map and per
    channel, everything the standardization's and the channel means' gradients need; one writes
    ``dx = gy * gate + d(maps) * mean_k + d(mean_k) / N``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        kernels = triton_kernels()
        channel_mean = x.mean(spatial_dims(x), dtype=torch.float32)
        maps, stats = kernels.group_maps(x, groups, eps, coef=channel_mean)
        affine = torch.stack([weight, bias], dim=1).float()
        ctx.save_for_backward(x, channel_mean, maps, stats, affine)
        ctx.groups, ctx.param_dtype = groups, weight.dtype
        return kernels.gate_groups(x, maps, stats, affine)

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad):
        x, channel_mean, maps, stats, affine = ctx.saved_tensors
        kernels = triton_kernels()
        grad = grad.contiguous()
        batch, channels = x.shape[:2]
        groups, positions = ctx.groups, spatial_size(x)
        grad_affine, map_sums, channel_sums = kernels.gate_groups_backward_sums(grad, x, maps, stats, affine)
        per_group_sums = map_sums.view(batch, groups, 2).sum(0)
        grad_weight = per_group_sums[:, 1].to(ctx.param_dtype) if ctx.needs_input_grad[1] else None
        grad_bias = per_group_sums[:, 0].to(ctx.param_dtype) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The maps' gradient (standardize_maps_backward) with d = gamma a at the standardized maps s is
            # dm = c1 (a - mean a) + c2 s, c1 = gamma / (std + eps); maps = sum_k x_k mean_k, so
            # dx_k = gy gate + dm mean_k + (sum_p x_k dm) / N, and sum_p x_k dm comes from the sums of x a and x s.
            gamma = affine[:, 0].repeat(batch)
            _, std, _, factor = stats.unbind(1)  # factor: 1 / (std + eps), 0 for a constant map
            coupling = coupling_factor(std, positions)
            coef = torch.stack([map_sums[:, 0] / positions, gamma * factor, -gamma * map_sums[:, 1] * coupling], dim=1)
            per_channel = coef.repeat_interleave(channels // groups, dim=0)
            mean = channel_mean.reshape(-1)
            grad_mean = (
                per_channel[:, 1] * (channel_sums[:, 0] - per_channel[:, 0] * positions * mean)
                + per_channel[:, 2] * channel_sums[:, 1]
            )
            grad_x = kernels.gate_groups_backward(
                grad, maps, stats, affine, grad_affine, coef, channel_mean, grad_mean / positions, x.dtype
            )
        return grad_x, grad_weight, grad_bias, None, None
