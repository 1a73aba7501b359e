"""CGA's fused autograd Functions: PyTorch operations with a hand-written backward, and the Triton kernels' version.

Both compute :func:`group_attention.layers.cga.channel_group_attention` and the channel weights that made it; the
memory passes they save are counted in the docs ("Benchmarks").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from ..dispatch import triton_kernels, use_triton
from ..group_ops import broadcast_channels, expand_groups, spatial_dims, spatial_size, stat_dtype
from .common import (
    StandardizedMaps,
    coupling_factor,
    group_sum,
    map_dot,
    scale_factor,
    spatial_dot,
    standardize_maps,
)


def fused_channel_group_attention(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float, per_group: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x * w, gate)`` as :meth:`~group_attention.CGA.forward_with_gate` (the gate per group or per channel),
    on the Triton kernels where they serve ``x``, else on PyTorch operations."""
    if use_triton(x, weight):
        return _ChannelGroupAttentionKernels.apply(x, weight, bias, groups, eps, per_group)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias))):
        return _channel_group_attention_inference(x, weight, bias, groups, eps, per_group)
    return _ChannelGroupAttention.apply(x, weight, bias, groups, eps, per_group)


def _channel_group_attention_inference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float, per_group: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_ChannelGroupAttention``'s forward where no gradient will be asked for (``torch.no_grad``, inference mode,
    frozen inputs): the same passes without the saliency's derivative that backward would need."""
    statistics, output = _standardized_group_maps(x, groups, eps)
    saliency = statistics.values.sigmoid_().mean(spatial_dims(x))
    weights = _gate(saliency, weight, bias)[1]
    return _scale_channels(x, weights.to(x.dtype), groups, per_group, out=output), weights


def _standardized_group_maps(
    x: torch.Tensor, groups: int, eps: float
) -> tuple[StandardizedMaps, "torch.Tensor | None"]:
    """Each group's summed map standardized over space (eq. 1 before its sigmoid), with its statistics; and the
    output's memory when the maps were standardized there, else None.

    With one channel per group in float32 (or float64) the maps are ``x`` itself, standardized into the output's
    memory (written over by the output at the end): a fresh temporary of ``x``'s size costs page faults on CPU.
    """
    maps = group_sum(x, groups)
    maps_are_x = x.shape[1] == groups and maps.dtype == x.dtype  # group_sum's view of x
    output = torch.empty_like(x) if maps_are_x else None
    return standardize_maps(maps, eps, overwrite=not maps_are_x, out=output), output


class _ChannelGroupAttention(torch.autograd.Function):
    """``CGA.forward_with_gate``: ``(x * w, w)`` with ``w = channel_weights(x)`` per group or channel, and a
    hand-written backward.

    Each pooled saliency ``GP(s)_g`` depends on its own group map ``t_g`` only, so backward needs, besides the
    per-channel sums of ``gy * x`` (one read of ``gy`` and ``x``), just the derivative ``dGP(s)_g / dt_g`` of each
    map (:func:`saliency_derivative`), times the pooled values' gradient: ``dx = gy * w + d_maps`` in one more pass,
    ``d_maps`` broadcast over each group's channels. With several channels per group, forward computes that
    derivative and keeps it (``m / C`` of ``x``'s size, where the standardized maps were kept before); with one
    channel per group it would be as large as ``x``, so forward keeps only the maps' statistics and backward
    recomputes the standardized maps and their sigmoid from ``x`` (the memory of ``x`` alone, as before). Autograd
    instead keeps the standardized maps and the sigmoid, materializes the channel weights per channel, ``gy * x``,
    the gradients of the sigmoid and of the standardization and the sum of the two input gradients. The small
    linear map runs in float32 (at least) whatever the autocast state.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float, per_group: bool):
        ctx.set_materialize_grads(False)  # most callers use only the output: no zero gradient for the gate
        one_channel_per_group = x.shape[1] == groups
        (standardized, mean, std, inv), output = _standardized_group_maps(x, groups, eps)
        dims = spatial_dims(x)
        if one_channel_per_group:
            saliency, kept = standardized.sigmoid_().mean(dims), (mean, std, inv)
        else:
            sigmoid = torch.sigmoid(standardized)
            saliency = sigmoid.mean(dims)
            derivative = saliency_derivative(standardized, sigmoid, std, inv)
            kept = (derivative if derivative.dtype == x.dtype else derivative.to(x.dtype),)  # fp16/bf16: as x
        pooled, weights = _gate(saliency, weight, bias)
        ctx.save_for_backward(x, pooled, weights, weight, *kept)
        ctx.groups, ctx.per_group, ctx.one_channel_per_group = groups, per_group, one_channel_per_group
        return _scale_channels(x, weights.to(x.dtype), groups, per_group, out=output), weights.clone()

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad, grad_gate):
        x, pooled, weights, weight, *kept = ctx.saved_tensors
        groups, per_group = ctx.groups, ctx.per_group
        if grad is None:  # only the gate was used
            grad = torch.zeros_like(x)
        # y = x * w_c: dL/dw_c = sum_p gy * x, summed over a group's channels when one weight serves the group.
        channel_sums, product = spatial_dot(grad, x)
        grad_pooled, grad_weight, grad_bias = _gate_backward(ctx, channel_sums, grad_gate, pooled, weights, weight)
        if not ctx.needs_input_grad[0]:
            return None, grad_weight, grad_bias, None, None, None
        grad_pooled = broadcast_channels(grad_pooled.to(stat_dtype(x.dtype)), x)
        if ctx.one_channel_per_group:
            # The maps are x: dx is written into the product's memory (free after its sums) with the maps recomputed.
            scratch = product if product is not None and product.dtype == grad_pooled.dtype else None
            grad_x = one_channel_input_gradient(x, grad, weights, *kept, grad_pooled, out=scratch).to(x.dtype)
        else:
            (derivative,) = kept
            grad_maps = (derivative * grad_pooled).to(x.dtype)
            # One pass over x: gy * w plus the group map's gradient, shared by the group's channels; on CPU written
            # over the product gy * x (a fresh tensor of x's size costs page faults there).
            grad_x = _scale_channels(grad, weights.to(x.dtype), groups, per_group, add_maps=grad_maps, out=product)
        return grad_x, grad_weight, grad_bias, None, None, None


# With one channel per group, backward recomputes the standardized maps a block of whole maps of at most this many
# elements at a time (2 MiB of float32), in two small reused buffers, instead of two temporaries of x's size (fresh
# memory of that size page-faults on CPU at every call).
RECOMPUTE_BLOCK_ELEMENTS = 1 << 19


def one_channel_input_gradient(
    x: torch.Tensor,
    grad: torch.Tensor,
    weights: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    inv: torch.Tensor,
    grad_pooled: torch.Tensor,
    out: "torch.Tensor | None" = None,
) -> torch.Tensor:
    """CGA's input gradient with one channel per group, where each map is its channel of ``x``:
    ``dx = gy * w + grad_pooled * dGP/dt`` (:func:`saliency_derivative`), the standardized maps and their sigmoid
    recomputed from ``x`` and forward's statistics. Written into ``out`` (``x``'s shape, the statistics dtype) when
    given.

    With ``y = Norm(x)``, ``s' = sigmoid'(y)`` and ``q = grad_pooled`` per map, it is, in closed form::

        dx = gy * w + q (std + eps)^-1 / N * (s' - mean(s')) - q sum(s' y) / ((N - 1) std N) * y

    On CPU, for contiguous tensors of the statistics dtype, a block of whole maps (:data:`RECOMPUTE_BLOCK_ELEMENTS`)
    at a time, each block in a few whole-block operations: only ``out`` is of ``x``'s size.

    Shape:
        ``(B, C, *S)`` ``x`` and ``gy``, ``(B, C)`` weights, ``(B, C, 1, ..)`` statistics and pooled gradient
        ``-> (B, C, *S)``.
    """
    dtype = std.dtype
    out = torch.empty_like(x, dtype=dtype) if out is None else out
    positions = spatial_size(x)
    weights = broadcast_channels(weights.to(dtype), x)
    terms = _GradientTerms(mean, scale_factor(std, inv), coupling_factor(std, positions), weights, grad_pooled)
    tensors = (x, grad, out)
    contiguous = all(t.is_contiguous() and t.dtype == dtype for t in tensors)
    blocked = x.device.type == "cpu" and x.numel() > 0 and contiguous
    if not blocked:
        _input_gradient_block(*tensors, torch.empty_like(out), torch.empty_like(out), terms, positions)
        return out
    rows = x.shape[0] * x.shape[1]
    x_rows, grad_rows, out_rows = (t.view(rows, positions) for t in tensors)
    terms = _GradientTerms(*(t.reshape(rows, 1) for t in terms))
    per_block = max(1, RECOMPUTE_BLOCK_ELEMENTS // positions)
    standardized, product = (out.new_empty(min(per_block, rows), positions) for _ in range(2))
    for start in range(0, rows, per_block):
        block = slice(start, min(start + per_block, rows))
        size = block.stop - start
        _input_gradient_block(
            x_rows[block],
            grad_rows[block],
            out_rows[block],
            standardized[:size],
            product[:size],
            _GradientTerms(*(t[block] for t in terms)),
            positions,
        )
    return out


class _GradientTerms(NamedTuple):
    """Per-map values of :func:`one_channel_input_gradient`, ``(B, C, 1, ..)`` (or ``(rows, 1)`` for blocks)."""

    mean: torch.Tensor
    scale: torch.Tensor  # 1 / (std + eps), 0 for a constant map
    coupling: torch.Tensor  # 1 / ((N - 1) std), 0 for a constant map
    weights: torch.Tensor  # the gate's weight of each channel
    grad_pooled: torch.Tensor


def _input_gradient_block(
    x: torch.Tensor,
    grad: torch.Tensor,
    out: torch.Tensor,
    standardized: torch.Tensor,
    product: torch.Tensor,
    terms: _GradientTerms,
    positions: int,
) -> None:
    """:func:`one_channel_input_gradient` for whole maps, into ``out``; ``standardized`` and ``product`` are scratch
    memory of ``out``'s shape."""
    dims = spatial_dims(out) if out.dim() > 2 else (1,)  # a (B, C, *S) tensor, or a block of (maps, N) rows
    y = torch.sub(x, terms.mean, out=standardized).mul_(terms.scale)  # as forward standardized
    slope = torch.sigmoid(y, out=out)
    slope.addcmul_(slope, slope, value=-1.0)  # s' = s (1 - s)
    slope_sum = slope.sum(dims, keepdim=True)
    slope_dot = torch.mul(slope, y, out=product).sum(dims, keepdim=True)  # sum(s' y)
    slope_factor = terms.grad_pooled * terms.scale / positions
    y_factor = (terms.grad_pooled * terms.coupling / -positions).mul_(slope_dot)
    constant = (slope_factor * slope_sum).div_(-positions)
    torch.addcmul(constant, slope, slope_factor, out=out)
    out.addcmul_(y, y_factor).addcmul_(grad, terms.weights)


def saliency_derivative(
    standardized: torch.Tensor, saliency: torch.Tensor, std: torch.Tensor, inv: torch.Tensor
) -> torch.Tensor:
    """The derivative of each pooled saliency ``GP(s)_g = mean_p sigmoid(Norm(t_g))_p`` with respect to its map.

    With ``y = Norm(t)`` (``standardized``), ``s = sigmoid(y)`` (``saliency``, overwritten with the result) and
    ``s' = s (1 - s)``, it is (the standardization's gradient, docs "From paper to code")::

        dGP/dt_p = ((s'_p - mean(s')) / (std + eps) - y_p sum_q(s'_q y_q) / ((N - 1) std)) / N

    which is 0 for a constant map (its saliency is sigmoid(0) whatever its value).

    Shape:
        ``(B, m, *S)`` maps and ``(B, m, 1, ..)`` statistics ``-> (B, m, *S)``, in the maps' dtype.
    """
    dims, positions = spatial_dims(standardized), spatial_size(standardized)
    slope = saliency.addcmul_(saliency, saliency, value=-1.0)  # s (1 - s), in place
    # sum(s' y) / ((N - 1) std N), 0 for a constant map.
    coupling = map_dot(slope, standardized).mul_(coupling_factor(std, positions)).div_(positions)
    scale = scale_factor(std, inv).div_(positions)
    derivative = torch.addcmul(slope.mean(dims, keepdim=True).mul_(scale).neg_(), slope, scale, out=slope)
    return derivative.addcmul_(standardized, coupling, value=-1.0)


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
    ``out`` (shaped and laid out like ``x``; ``add_maps`` may be that memory) when given."""
    if out is None:
        out = torch.empty_like(x)  # a fresh tensor, not a view of a grouped product: callers may modify it in place
    if add_maps is None and not x.is_contiguous():
        # One weight per channel (a (B, C) expansion of the group weights): over channels-last features a product
        # broadcast over each group's channels runs inner loops as short as a group, 4.7x slower at (2, 64, 96, 128).
        channel_weights = expand_groups(weights, x.shape[1]) if per_group else weights
        return torch.mul(x, broadcast_channels(channel_weights, x), out=out)
    grouped, out_grouped = x.unflatten(1, (groups, -1)), out.unflatten(1, (groups, -1))
    weights = weights.view(x.shape[0], groups, 1 if per_group else -1, *([1] * (x.dim() - 2)))
    if add_maps is None:
        torch.mul(grouped, weights, out=out_grouped)
    else:
        torch.addcmul(add_maps.unsqueeze(2), grouped, weights, out=out_grouped)
    return out


def _gate(pooled: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled saliency ``(B, m)`` in the parameters' dtype (at least float32) and the gate ``sigmoid(W p + b)``,
    ``(B, m)`` or ``(B, C)``: a product and a sum rather than a matrix product, which autocast would lower."""
    dtype = torch.promote_types(pooled.dtype, weight.dtype)
    pooled = pooled.to(dtype)
    logits = (pooled.unsqueeze(1) * weight.to(dtype)).sum(-1)
    return pooled, logits.add_(bias.to(dtype)).sigmoid_()


def _gate_backward(
    ctx,
    channel_sums: torch.Tensor,
    grad_gate: "torch.Tensor | None",
    pooled: torch.Tensor,
    weights: torch.Tensor,
    weight: torch.Tensor,
):
    """From the per-channel sums of ``gy * x`` (``(B, C)``) and the gate output's own gradient (None when unused):
    the gradients of the pooled saliency ``(B, m)``, of ``W`` and of ``b`` (None where not needed)."""
    grad_weights = channel_sums.to(weights.dtype)
    if ctx.per_group:
        grad_weights = grad_weights.unflatten(1, (ctx.groups, -1)).sum(2)
    if grad_gate is not None:  # the weights are an output too
        grad_weights = grad_weights + grad_gate.to(grad_weights.dtype)
    grad_logits = grad_weights.mul_(weights).mul_(1 - weights)
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
