"""SGAU's fused autograd Functions: PyTorch operations with a hand-written backward, and the Triton kernels' version
(2D); both compute ``Cat(spatial_group_attention(low, high); up)`` (:mod:`group_attention.layers.sgau`)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..dispatch import triton_kernels, use_triton
from ..group_ops import broadcast_channels, spatial_dims, spatial_size, stat_dtype
from .common import (
    channel_dot,
    doubles,
    group_dot,
    group_pooled_dot,
    memory_format_of,
    resize_to,
    resize_to_backward,
    standardize_maps,
    standardize_maps_backward,
)


def fused_attention_skip(
    low: torch.Tensor, high: torch.Tensor, up: torch.Tensor, groups: int, eps: float
) -> torch.Tensor:
    """``Cat(low * (1 + Up(A(high))); up)`` in one autograd Function (Triton kernels for 2D features they serve)."""
    kernels = low.dim() == 4 and use_triton(low, high)  # the kernels interpolate in 2D
    function = _SpatialGroupAttentionSkipKernels if kernels else _SpatialGroupAttentionSkip
    return function.apply(low, high, up, groups, eps)


class _SpatialGroupAttentionSkip(torch.autograd.Function):
    """``SGAU.forward`` (``Cat(attend(low, high); up)``) with a hand-written backward.

    Forward reads ``high`` twice (channel means, dot-product maps) and ``low`` once, writing the attended half
    straight into the concatenated output (no separate attended tensor to copy); with one channel per group and
    contiguous features the interpolated gain ``1 + Up(A)`` is written there first and multiplied by ``low`` in
    place. It keeps the output, which the next convolution keeps anyway, instead of ``low`` and the upsampled
    attention: ``low = attended / (1 + A)`` is recovered from it, and ``1 + A`` is re-interpolated from the
    standardized maps at the high-level size. Backward reads the gradient and the output once for ``A``'s gradient,
    writes ``d low = g * (1 + A)``, and reads ``high`` once more for the per-channel sums before writing ``d high``.

    The output must not be modified in place before backward (autograd raises an error if it is).
    """

    @staticmethod
    def forward(ctx, low, high, up, groups: int, eps: float):
        channel_mean, standardized, std, inv = _attention_statistics(high, groups, eps)
        low_channels = low.shape[1]
        out = torch.empty(
            (low.shape[0], 2 * low_channels, *low.shape[2:]),
            dtype=torch.promote_types(low.dtype, up.dtype),
            device=low.device,
            memory_format=memory_format_of(low),
        )
        attended = out[:, :low_channels]
        if low_channels == groups and out.dtype == standardized.dtype and low.is_contiguous():
            # 1 + Up(A), written where the attended features go, times low in place: no map of low's size. (In a
            # channels-last output the attended half is every other run of C values: written once, by addcmul.)
            _gain(torch.sigmoid(standardized), low.shape[2:], out=attended).mul_(low)
        else:
            attention = resize_to(torch.sigmoid(standardized), low.shape[2:]).to(low.dtype).unsqueeze(2)
            grouped = low.unflatten(1, (groups, -1))
            torch.addcmul(grouped, grouped, attention, out=attended.unflatten(1, (groups, -1)))
        out[:, low_channels:].copy_(up)
        ctx.save_for_backward(out, high, channel_mean, standardized, std, inv)
        ctx.groups, ctx.low_dtype, ctx.up_dtype = groups, low.dtype, up.dtype
        return out

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad):
        out, high, channel_mean, standardized, std, inv = ctx.saved_tensors
        groups = ctx.groups
        low_channels = out.shape[1] // 2
        grad_attended, grad_up = grad[:, :low_channels], grad[:, low_channels:]
        attended = out[:, :low_channels]
        one_channel_per_group = low_channels == groups  # then 1 + A has d low's shape
        saliency = torch.sigmoid(standardized)
        # This runs early in backward, near the peak of memory. With one channel per group 1 + A is as large as d
        # low: it is interpolated twice, and A's gradient is formed in the first copy's memory, so that one
        # temporary of that size is alive at a time. With several, 1 + A (1 / k of d low) is interpolated once and
        # kept for d low. d low is formed before d high is allocated.
        grad_low = grad_high = grad_maps = gain = None
        if ctx.needs_input_grad[1]:
            # attended = low * (1 + A): dL/dA = sum_k g * low = sum_k g * attended / (1 + A).
            gain = _gain(saliency, out.shape[2:])
            if one_channel_per_group:
                grad_attention = torch.div(grad_attended, gain, out=gain).mul_(attended)
                gain = None  # its memory is A's gradient now
            else:
                grad_attention = group_dot(grad_attended, attended, groups).div_(gain)
            grad_saliency = resize_to_backward(grad_attention, standardized.shape)
            del grad_attention
            grad_standardized = torch.ops.aten.sigmoid_backward(grad_saliency, saliency)
            del grad_saliency
            grad_maps = standardize_maps_backward(grad_standardized, standardized, std, inv, overwrite=True)
        if ctx.needs_input_grad[0]:
            gain = _gain(saliency, out.shape[2:]) if gain is None else gain
            if one_channel_per_group and gain.dtype == grad.dtype:
                grad_low = gain.mul_(grad_attended)
            else:
                grad_low = _times_gain(grad_attended, gain.to(grad.dtype), groups)
            grad_low = grad_low.to(ctx.low_dtype)
        del gain
        if grad_maps is not None:
            del saliency
            grad_high = _pooled_dot_backward(grad_maps, high, channel_mean, groups)
        grad_up = grad_up.to(ctx.up_dtype) if ctx.needs_input_grad[2] else None
        return grad_low, grad_high, grad_up, None, None


class _SpatialGroupAttention(torch.autograd.Function):
    """:func:`~group_attention.layers.sgau.spatial_group_attention` (``low * (1 + Up(A(high)))``, the gated skip of a
    converted U-Net) with a hand-written backward.

    As :class:`_SpatialGroupAttentionSkip` without the concatenation: forward reads ``high`` twice and writes the
    attended features in one pass over ``low``; the attention is upsampled (on CPU, U-Net's doubling as separable
    two-tap filters instead of ATen's bilinear kernels, whose backward scatters) and kept at the high-level size as
    its standardized maps, next to ``low`` and ``1 + Up(A)`` (which autograd keeps too). Backward reads the
    gradient and ``low`` once for ``A``'s gradient, writes ``d low = g * (1 + Up(A))``, and reads ``high`` once more
    for ``d high``.
    """

    @staticmethod
    def forward(ctx, low, high, groups: int, eps: float):
        channel_mean, standardized, std, inv = _attention_statistics(high, groups, eps)
        gain = _gain(torch.sigmoid(standardized), low.shape[2:]).to(low.dtype)
        ctx.save_for_backward(low, gain, high, channel_mean, standardized, std, inv)
        ctx.groups = groups
        return _times_gain(low, gain, groups)

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad):
        low, gain, high, channel_mean, standardized, std, inv = ctx.saved_tensors
        groups = ctx.groups
        grad_low = grad_high = spare = None
        if ctx.needs_input_grad[1]:
            # attended = low * (1 + A): dL/dA = sum_k g * low.
            grad_attention = group_dot(grad, low, groups)
            grad_saliency = resize_to_backward(grad_attention, standardized.shape)
            if grad_attention.shape == low.shape and grad_attention.dtype == low.dtype:
                spare = grad_attention  # one channel per group: free again, d low's memory (no fresh page faults)
            del grad_attention
            grad_standardized = torch.ops.aten.sigmoid_backward(grad_saliency, torch.sigmoid(standardized))
            grad_maps = standardize_maps_backward(grad_standardized, standardized, std, inv, overwrite=True)
            grad_high = _pooled_dot_backward(grad_maps, high, channel_mean, groups)
        if ctx.needs_input_grad[0]:
            grad_low = _times_gain(grad, gain.to(grad.dtype), groups, out=spare).to(low.dtype)
        return grad_low, grad_high, None, None


def fused_spatial_group_attention(low: torch.Tensor, high: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """``low * (1 + Up(A(high)))`` as :func:`~group_attention.layers.sgau.spatial_group_attention`, in one autograd
    Function on PyTorch operations."""
    return _SpatialGroupAttention.apply(low, high, groups, eps)


def _attention_statistics(high: torch.Tensor, groups: int, eps: float):
    """The channel means of ``high`` ``(B, C_high)`` and its standardized dot-product maps ``(B, m, *s)`` with their
    statistics (:func:`~group_attention.layers.fused.common.standardize_maps`): what eq. 3's attention is made of."""
    channel_mean = high.mean(spatial_dims(high), dtype=stat_dtype(high.dtype))
    standardized, _, std, inv = standardize_maps(group_pooled_dot(high, groups, channel_mean), eps, overwrite=True)
    return channel_mean, standardized, std, inv


def _pooled_dot_backward(
    grad_maps: torch.Tensor, high: torch.Tensor, channel_mean: torch.Tensor, groups: int
) -> torch.Tensor:
    """The gradient of ``high`` from that of its dot-product maps ``(B, m, *s)``: maps = sum_k high_k * mean_k, and
    mean_k = sum_p high_k / N, so both paths lead to ``high``."""
    grad_maps = grad_maps.unsqueeze(2)
    grouped_high = high.unflatten(1, (groups, -1))
    grad_mean = channel_dot(grouped_high, grad_maps, first_spatial_dim=3) / spatial_size(high)
    mean = broadcast_channels(channel_mean, high).unflatten(1, (groups, -1))
    grad_high = torch.addcmul(broadcast_channels(grad_mean, grouped_high), grad_maps, mean)
    return grad_high.flatten(1, 2).to(high.dtype)


def _times_gain(x: torch.Tensor, gain: torch.Tensor, groups: int, out: "torch.Tensor | None" = None) -> torch.Tensor:
    """``x * gain`` with one ``(B, m, *S)`` gain map per group of channels, into ``out`` (``x``'s shape) or a fresh
    tensor laid out like ``x`` (not a view of a grouped product: callers may modify it in place)."""
    out = torch.empty_like(x) if out is None else out
    torch.mul(x.unflatten(1, (groups, -1)), gain.unsqueeze(2), out=out.unflatten(1, (groups, -1)))
    return out


class _SpatialGroupAttentionSkipKernels(torch.autograd.Function):
    """``_SpatialGroupAttentionSkip`` on the Triton kernels (2D CUDA features).

    Forward: the channel means of ``high``, one kernel for the dot-product maps and their per-tile statistics, one
    that merges the statistics, and one that interpolates the attention on the fly (no upsampled map is written)
    while writing ``low * (1 + A)`` into the output and copying the upsampled half beside it. It keeps the output,
    ``high``, the raw maps and their statistics. Backward: one kernel reads the gradient and the output for
    ``d low = g (1 + A)`` and ``dA = sum_k g * attended / (1 + A)``; one kernel gathers the interpolation's adjoint
    (for U-Net's exact doubling; ATen's scattering kernel otherwise), takes it through the sigmoid and sums what the
    standardization's gradient needs, one forms the maps' gradient and its per-channel dot products with ``high``,
    and one writes ``d high``.
    """

    @staticmethod
    def forward(ctx, low, high, up, groups: int, eps: float):
        kernels = triton_kernels()
        channel_mean = high.mean(spatial_dims(high), dtype=torch.float32)
        maps, stats = kernels.group_maps(high, groups, eps, coef=channel_mean)
        maps = maps.view(high.shape[0], groups, *high.shape[2:])
        low_channels = low.shape[1]
        out = torch.empty(
            (low.shape[0], 2 * low_channels, *low.shape[2:]),
            dtype=torch.promote_types(low.dtype, up.dtype),
            device=low.device,
        )
        kernels.attend(low, up.contiguous(), maps, stats, out)
        ctx.save_for_backward(out, high, channel_mean, maps, stats)
        ctx.groups, ctx.low_dtype, ctx.up_dtype = groups, low.dtype, up.dtype
        return out

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad):
        out, high, channel_mean, maps, stats = ctx.saved_tensors
        kernels = triton_kernels()
        grad = grad.contiguous()
        low_channels = out.shape[1] // 2
        grad_low, grad_attention = kernels.attend_backward(grad, out, maps, stats, ctx.low_dtype)
        grad_high = None
        if ctx.needs_input_grad[1]:
            positions = spatial_size(maps)
            if doubles(maps.shape[2:], out.shape[2:]):  # U-Net's skips: the gathered adjoint
                grad_maps, sums = kernels.doubled_adjoint_sums(grad_attention, maps, stats)
            else:
                grad_maps = resize_to_backward(grad_attention, maps.shape)
                sums = kernels.sigmoid_standardize_sums(grad_maps, maps, stats)
            del grad_attention
            # maps = sum_k high_k * mean_k, and mean_k = sum_p high_k / N: both paths lead to high.
            grad_mean = kernels.maps_gradient_dot(high, grad_maps, maps, stats, sums) / positions
            grad_high = kernels.maps_to_rows(grad_maps, channel_mean, grad_mean, high.shape[1], high.dtype)
        grad_up = grad[:, low_channels:].to(ctx.up_dtype) if ctx.needs_input_grad[2] else None
        return (grad_low if ctx.needs_input_grad[0] else None), grad_high, grad_up, None, None


def _gain(
    saliency: torch.Tensor, size: "torch.Size | tuple[int, ...]", out: "torch.Tensor | None" = None
) -> torch.Tensor:
    """``1 + Up(A)``: the attention maps plus one, interpolated to the low-level ``size`` (linear interpolation
    keeps constants: one is added at the high-level size), in a fresh tensor or into ``out``."""
    return resize_to(saliency + 1, size, out=out)
