"""CGA's fused autograd Functions: PyTorch operations with a hand-written backward, and the Triton kernels' version.

Both compute :func:`group_attention.layers.cga.channel_group_attention` and the channel weights that made it; the
memory passes they save are counted in the docs ("Benchmarks").
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..dispatch import triton_kernels, use_triton
from ..group_ops import broadcast_channels, spatial_dims, spatial_size, stat_dtype
from .common import (
    group_sum,
    restandardize_maps,
    spatial_dot,
    standardize_maps,
    standardize_maps_backward,
)


def fused_channel_group_attention(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float, per_group: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x * w, gate)`` as :func:`~group_attention.layers.cga.channel_group_attention` with ``return_gate=True``,
    on the Triton kernels where they serve ``x``, else on PyTorch operations."""
    function = _ChannelGroupAttentionKernels if use_triton(x, weight) else _ChannelGroupAttention
    return function.apply(x, weight, bias, groups, eps, per_group)


class _ChannelGroupAttention(torch.autograd.Function):
    """``CGA.forward_with_gate``: ``(x * w, w)`` with ``w = channel_weights(x)`` per group or channel, and a
    hand-written backward.

    Forward reads ``x`` twice (group sums, then the product) and keeps the standardized group maps (``m / C`` of
    ``x``'s size); with one channel per group the maps are ``x`` itself, so it keeps nothing and backward recomputes
    them. Backward reads ``gy`` and ``x`` once for the per-channel sums of ``gy * x`` and makes one more pass that
    writes ``dx = gy * w + d_maps`` (the group maps' gradient broadcast over their channels). Autograd instead
    materializes the channel weights per channel, ``gy * x``, the broadcast map gradient and the sum of the two
    input gradients. The small linear map runs in float32 (at least) whatever the autocast state.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float, per_group: bool):
        # With one channel per group and x in float32 (or float64) the maps are x itself: standardize a copy.
        maps_are_x = x.shape[1] == groups and x.dtype == stat_dtype(x.dtype)
        standardized, mean, std, inv = standardize_maps(group_sum(x, groups), eps, overwrite=not maps_are_x)
        pooled, weights = _gate(torch.sigmoid(standardized).mean(spatial_dims(x)), weight, bias)
        kept_maps = None if x.shape[1] == groups else standardized
        ctx.save_for_backward(x, kept_maps, mean, std, inv, pooled, weights, weight)
        ctx.groups, ctx.per_group = groups, per_group
        return _scale_channels(x, weights.to(x.dtype), groups, per_group), weights.clone()

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad, grad_gate):
        x, standardized, mean, std, inv, pooled, weights, weight = ctx.saved_tensors
        groups, per_group = ctx.groups, ctx.per_group
        grad_x = None
        # y = x * w_c: dL/dw_c = sum_p gy * x, summed over a group's channels when one weight serves the group.
        channel_sums, product = spatial_dot(grad, x)
        grad_pooled, grad_weight, grad_bias = _gate_backward(ctx, channel_sums, grad_gate, pooled, weights, weight)
        if ctx.needs_input_grad[0]:
            if standardized is None:  # one channel per group: the maps are x, converted to float32 if need be
                standardized = restandardize_maps(
                    group_sum(x, groups), mean, std, inv, overwrite=x.dtype != stat_dtype(x.dtype)
                )
            # pooled = mean_p sigmoid(standardized): each position gets 1/N of the pooled gradient.
            grad_pooled = broadcast_channels(grad_pooled / spatial_size(x), standardized).to(standardized.dtype)
            grad_standardized = torch.ops.aten.sigmoid_backward(grad_pooled, torch.sigmoid(standardized))
            grad_maps = standardize_maps_backward(grad_standardized, standardized, std, inv, overwrite=True)
            # One pass over x: gy * w plus the group map's gradient, shared by the group's channels; on CPU written
            # over the product gy * x, whose memory is free again (a fresh allocation costs page faults there).
            grad_x = _scale_channels(
                grad, weights.to(x.dtype), groups, per_group, add_maps=grad_maps.to(x.dtype), out=product
            )
        return grad_x, grad_weight, grad_bias, None, None, None


def _scale_channels(
    x: torch.Tensor,
    weights: torch.Tensor,
    groups: int,
    per_group: bool,
    add_maps: "torch.Tensor | None" = None,
    out: "torch.Tensor | None" = None,
) -> torch.Tensor:
    """``x * w`` with ``w`` one weight per group (``(B, m)``) or per channel (``(B, C)``), plus ``add_maps``
    (``(B, m, *spatial)``, broadcast over each group's channels) when given, in one pass over ``x``; written into
    ``out`` (shaped and laid out like ``x``) when given."""
    if add_maps is None:
        # A fresh tensor, not a view of a grouped product: callers may modify the output in place.
        if per_group:
            weights = weights.unsqueeze(2).expand(-1, -1, x.shape[1] // groups).reshape(x.shape[:2])
        return x * broadcast_channels(weights, x)
    grouped = x.unflatten(1, (groups, -1))
    weights = weights.view(x.shape[0], groups, 1 if per_group else -1, *([1] * (x.dim() - 2)))
    if out is None:
        return torch.addcmul(add_maps.unsqueeze(2), grouped, weights).flatten(1, 2)
    torch.addcmul(add_maps.unsqueeze(2), grouped, weights, out=out.unflatten(1, (groups, -1)))
    return out


def _gate(pooled: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled saliency ``(B, m)`` in the parameters' dtype (at least float32) and the gate ``sigmoid(W p + b)``,
    ``(B, m)`` or ``(B, C)``."""
    dtype = torch.promote_types(pooled.dtype, weight.dtype)
    pooled = pooled.to(dtype)
    return pooled, torch.sigmoid((pooled.unsqueeze(1) * weight.to(dtype)).sum(-1) + bias.to(dtype))


def _gate_backward(
    ctx,
    channel_sums: torch.Tensor,
    grad_gate: torch.Tensor,
    pooled: torch.Tensor,
    weights: torch.Tensor,
    weight: torch.Tensor,
):
    """From the per-channel sums of ``gy * x`` (``(B, C)``) and the gate output's own gradient: the gradients of the
    pooled saliency ``(B, m)``, of ``W`` and of ``b`` (None where not needed)."""
    grad_weights = channel_sums.to(weights.dtype)
    if ctx.per_group:
        grad_weights = grad_weights.unflatten(1, (ctx.groups, -1)).sum(2)
    grad_weights = grad_weights + grad_gate.to(grad_weights.dtype)  # the weights are an output too
    grad_logits = grad_weights * weights * (1 - weights)
    grad_weight = (
        (grad_logits.unsqueeze(2) * pooled.unsqueeze(1)).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
    )
    grad_bias = grad_logits.sum(0).to(weight.dtype) if ctx.needs_input_grad[2] else None
    grad_pooled = (grad_logits.unsqueeze(2) * weight.to(grad_logits.dtype)).sum(1)
    return grad_pooled, grad_weight, grad_bias


class _ChannelGroupAttentionKernels(torch.autograd.Function):
    """``_ChannelGroupAttention`` on the Triton kernels (CUDA): three passes over ``x`` forward, two backward.

    Forward: one kernel sums each group's channels into float32 maps (not written with one channel per group: the
    maps are ``x``) with per-tile statistics, one merges the statistics, one sums each map's standardized sigmoid
    per tile, one computes the gate (pooling, the linear map, the sigmoid, the per-channel weights) and one writes
    ``x * w``. Backward: one kernel reads ``gy``, ``x`` and the maps for the per-channel sums of ``gy * x`` and the
    sums the standardization's gradient needs, one runs the gate's backward for the whole batch, and one writes
    ``dx = gy * w + d(maps)``, computing the maps' gradient on the fly. It keeps the raw maps (``m / C`` of ``x``;
    none with one channel per group) and their statistics.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float, per_group: bool):
        kernels = triton_kernels()
        batch, channels = x.shape[:2]
        maps, stats = kernels.group_maps(x, groups, eps, store=channels != groups)
        map_rows = x.view(batch, groups, -1) if maps is None else maps
        pooled, gate, gate_out, channel_weights = kernels.cga_gate(
            kernels.saliency_sums(map_rows, stats), spatial_size(x), weight, bias, channels, x.dtype, per_group
        )
        ctx.save_for_backward(x, maps, stats, pooled, gate, channel_weights, weight)
        ctx.groups, ctx.per_group = groups, per_group
        return kernels.scale_add(x, channel_weights, groups), gate_out

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad, grad_gate):
        x, maps, stats, pooled, gate, channel_weights, weight = ctx.saved_tensors
        kernels = triton_kernels()
        grad = grad.contiguous()
        batch, channels = x.shape[:2]
        map_rows = x.view(batch, ctx.groups, -1) if maps is None else maps
        channel_sums, slopes = kernels.row_dots(grad, x, ctx.groups, map_rows, stats)
        grad_weight, grad_bias, coef = kernels.cga_gate_backward(
            channel_sums, grad_gate, gate, pooled, weight, slopes, stats, spatial_size(x), ctx.per_group
        )
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.scale_add(
                grad, channel_weights, ctx.groups, maps=map_rows, stats=stats, coef=coef, out_dtype=x.dtype
            )
        return (
            grad_x,
            grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None,
            grad_bias.to(weight.dtype) if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
        )
