"""Pieces the fused autograd Functions of CGA, SGE and SGAU are built from.

The same mathematics as :mod:`group_attention.layers.group_ops`, arranged for fewer passes over memory: group sums
and dot products accumulated channel by channel, standardization in place with the statistics that backward needs,
each closed-form gradient written once (derivations: docs, "From paper to code"), and U-Net's exact 2x upsampling as
separable two-tap filters on CPU. Tensors may be in any memory format: reductions name the spatial dims instead of
reshaping, so a channels-last tensor is never copied. Statistics are in at least float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..group_ops import (
    INTERPOLATION_MODES,
    broadcast_channels,
    gradient_flows,
    spatial_dims,
    spatial_size,
    stat_dtype,
)

# Up to this many channels per group, a group's channels are combined by a loop of fused multiply-adds into one
# float32 map; beyond it by one broadcast product and a sum (fewer kernel launches, one temporary).
LOOP_MAX_CHANNELS_PER_GROUP = 4
# From this many gradient elements on, the adjoint of U-Net's 2x upsampling is one strided depthwise convolution
# (about half the time of the separable passes at (2, 32, 192, 256) on a Xeon; no faster at (2, 32, 32, 32)).
STRIDED_ADJOINT_MIN_NUMEL = 1 << 17


def group_dot(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """Per group and position, the sum over the group's channels of ``a * b``, in at least float32.

    ``b`` may broadcast over space (``(B, C, 1, ..)``): then this is the dot product of each position's feature
    vector with ``b``. Small groups are accumulated channel by channel, so no ``(B, C, *spatial)`` product is
    materialized.

    Shape:
        ``(B, C, *spatial), (B, C, *spatial or 1s) -> (B, groups, *spatial)``.
    """
    a_grouped = a.unflatten(1, (groups, -1))
    b_grouped = b.unflatten(1, (groups, -1))
    per_group = a_grouped.shape[2]
    dtype = stat_dtype(torch.promote_types(a.dtype, b.dtype))
    if per_group > LOOP_MAX_CHANNELS_PER_GROUP:
        return (a_grouped * b_grouped).sum(2, dtype=dtype)
    dot = a_grouped[:, :, 0].to(dtype) * b_grouped[:, :, 0]
    for index in range(1, per_group):
        dot.addcmul_(a_grouped[:, :, index], b_grouped[:, :, index])
    return dot


def group_sum(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum each group of ``C / groups`` consecutive channels, in at least float32.

    With one channel per group and ``x`` already in the statistics dtype, the result is ``x`` itself (a view, not a
    copy): do not modify it in place.

    Shape:
        ``(B, C, *spatial) -> (B, groups, *spatial)``. ``unflatten`` is a view for any memory format.
    """
    grouped = x.unflatten(1, (groups, -1))
    per_group = grouped.shape[2]
    dtype = stat_dtype(x.dtype)
    if per_group > LOOP_MAX_CHANNELS_PER_GROUP:
        return grouped.sum(2, dtype=dtype)
    # A loop of adds reads each channel once; a reduction over the size-k group dim is several times slower on CPU.
    if per_group == 1:
        return grouped[:, :, 0].to(dtype)
    first = grouped[:, :, 0] if x.dtype == dtype else grouped[:, :, 0].to(dtype)
    summed = torch.add(first, grouped[:, :, 1])
    for index in range(2, per_group):
        summed.add_(grouped[:, :, index])
    return summed


def spatial_dot(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, "torch.Tensor | None"]:
    """Per ``(b, c)``, the sum over space of ``a * b`` for two tensors of one shape, in at least float32; and, when
    the product had to be materialized (CPU), that product's memory for the caller to reuse, else None.

    On CUDA a batched matrix product reads ``a`` and ``b`` once and writes nothing of their size; on CPU that batched
    dot is several times slower than a product and a sum, whose temporary the caller can then overwrite instead of
    allocating (and page-faulting) a fresh tensor.

    Shape:
        ``(B, C, *spatial) x 2 -> (B, C)``, plus ``(B, C, *spatial)`` or None.
    """
    dtype = stat_dtype(torch.promote_types(a.dtype, b.dtype))
    if prefer_batched_dot(a) and a.dtype == b.dtype and a.is_contiguous() and b.is_contiguous():
        rows = a.shape[0] * a.shape[1]
        with torch.autocast(a.device.type, enabled=False):
            dot = torch.bmm(a.reshape(rows, 1, -1), b.reshape(rows, -1, 1))
        return dot.view(a.shape[:2]).to(dtype), None
    product = a * b
    return product.sum(spatial_dims(a), dtype=dtype), product


# Products for per-map dot products on CPU are formed in a buffer of at most this many elements (1 MiB of float32),
# reused row block by row block: a fresh buffer of the maps' size page-faults at every call (about 1.5 ms per 4 MB on
# the machine of the benchmark docs), and a small one stays in cache. At (2, 32, 96, 128) blocks of 2**18 elements
# take 0.36 ms, as one product over all the maps in memory that is not fresh, where blocks of 2**16 took 0.58 ms
# (more calls).
DOT_BUFFER_ELEMENTS = 1 << 18


def map_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per map, the sum over space of ``a * b`` for two ``(B, G, *spatial)`` tensors of one shape and dtype, kept as
    ``(B, G, 1, ..)``, in that dtype (the statistics dtype of the callers).

    On CPU, for contiguous maps, the product is formed a block of whole maps at a time in one small buffer
    (:data:`DOT_BUFFER_ELEMENTS`) instead of a temporary of the maps' size; elsewhere :func:`spatial_dot` (a
    batched matrix product on CUDA) or a product and a sum.
    """
    dims = spatial_dims(a)
    if a.device.type != "cpu":
        return spatial_dot(a, b)[0].view(*a.shape[:2], *([1] * len(dims))).to(a.dtype)
    if not (a.is_contiguous() and b.is_contiguous()) or a.numel() <= DOT_BUFFER_ELEMENTS:
        return (a * b).sum(dims, keepdim=True)
    positions = spatial_size(a)
    rows_a, rows_b = a.view(-1, positions), b.view(-1, positions)
    per_block = max(1, DOT_BUFFER_ELEMENTS // positions)
    buffer = a.new_empty(min(per_block, rows_a.shape[0]), positions)
    sums = a.new_empty(rows_a.shape[0])
    for start in range(0, rows_a.shape[0], per_block):
        rows = min(per_block, rows_a.shape[0] - start)
        product = torch.mul(rows_a[start : start + rows], rows_b[start : start + rows], out=buffer[:rows])
        torch.sum(product, 1, out=sums[start : start + rows])
    return sums.view(*a.shape[:2], *([1] * len(dims)))


def prefer_batched_dot(x: torch.Tensor) -> bool:
    """Whether :func:`spatial_dot` should use a batched matrix product for ``x``: on CUDA, except in float16, whose
    matrix-product output (not its accumulator) could overflow for sums over a whole feature map."""
    return x.device.type == "cuda" and x.dtype != torch.float16


def channel_dot(a: torch.Tensor, b: torch.Tensor, first_spatial_dim: int = 2) -> torch.Tensor:
    """Per channel, the sum over space of ``a * b``, in at least float32.

    Shape:
        ``(B, C, *spatial) -> (B, C)``; with ``first_spatial_dim=3``, ``(B, m, k, *spatial) -> (B, m, k)``.
    """
    dims = tuple(range(first_spatial_dim, max(a.dim(), b.dim())))
    return (a * b).sum(dims, dtype=stat_dtype(torch.promote_types(a.dtype, b.dtype)))


def group_pooled_dot(x: torch.Tensor, groups: int, channel_mean: "torch.Tensor | None" = None) -> torch.Tensor:
    """Per group, the dot product of each position's feature vector with the group's spatial mean.

    ``out[b, g, p] = sum_k x[b, g, k, p] * mean_p'(x[b, g, k, p'])`` without materializing ``x * mean``, in at
    least float32. ``channel_mean`` (``(B, C)``) is computed when not given.

    Shape:
        ``(B, C, *spatial) -> (B, groups, *spatial)``.
    """
    if channel_mean is None:
        channel_mean = x.mean(spatial_dims(x), dtype=stat_dtype(x.dtype))
    return group_dot(x, broadcast_channels(channel_mean, x), groups)


class StandardizedMaps(NamedTuple):
    """:func:`standardize_maps`'s result: the standardized maps and the per-map statistics (``(B, G, 1, ..)``)."""

    values: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    inv: torch.Tensor  # 1 / (std + eps)


def standardize_maps(
    maps: torch.Tensor, eps: float, *, overwrite: bool = False, out: "torch.Tensor | None" = None
) -> StandardizedMaps:
    """``(t - mean) / (std + eps)`` over the spatial dims of ``(B, G, *spatial)`` maps, with what backward needs.

    ``std`` is the unbiased standard deviation, as in the SGE authors' code; a map of one position has no spread
    and standardizes to 0 instead of NaN, and a constant map standardizes to exactly 0. The two-pass formula (mean,
    then the norm of the centred maps) replaces ``torch.var_mean``, whose Welford loop is tens of times slower than
    a sum on CPU.

    Args:
        maps: ``(B, G, *spatial)`` maps, in any memory format.
        eps: added to the standard deviation.
        overwrite: standardize ``maps`` in place (for a temporary the caller owns).
        out: memory of the maps' shape and dtype for the standardized maps, when not ``overwrite``.
    """
    dims = spatial_dims(maps)
    mean = maps.mean(dims, keepdim=True)
    centered = maps.sub_(mean) if overwrite else torch.sub(maps, mean, out=out)
    std = spatial_norm(centered, dims) / math.sqrt(max(spatial_size(maps) - 1, 1))
    # A constant map's mean can be off by an ulp; its centred values are rounding noise, set to exactly 0.
    constant = constant_maps(centered, mean, std)
    if constant is not None:
        std = std.masked_fill_(constant, 0.0)
    inv = 1.0 / (std + eps)
    return StandardizedMaps(centered.mul_(scale_factor(std, inv)), mean, std, inv)


def spatial_norm(maps: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The Euclidean norm of each map over ``dims``, kept as ``(B, G, 1, ..)``. ``torch.linalg.vector_norm``, except on
    CPU for maps not stored contiguously (channels-last), where its reduction over the outer spatial dims took 27x
    the contiguous time (7.6 ms at (2, 32, 192, 256)) and a sum of squares takes 0.9 ms."""
    if maps.is_contiguous() or maps.device.type != "cpu":
        return torch.linalg.vector_norm(maps, dim=dims, keepdim=True)
    return maps.square().sum(dims, keepdim=True).sqrt_()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """Channels-last when ``x`` is stored channels-last (and not also contiguous), else contiguous: the layout for
    fresh tensors that elementwise operations will combine with ``x`` (mixed layouts make them several times
    slower on CPU)."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def constant_maps(centered: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> "torch.Tensor | None":
    """Which of the centred maps were constant before centring (``(B, G, 1, ..)`` booleans), or None when none can
    have been.

    The exact test compares each map's largest and smallest centred value: two passes over the maps. (Centring
    keeps distinct values distinct while ``N u < 1``, ``u`` the unit roundoff: the mean lies within their range up
    to rounding.) On CPU it runs only when some map's spread is small enough for rounding to explain it: summing
    ``N`` equal values ``v`` errs by at most ``(N - 1) u N |v|``, so a constant map's computed ``std`` is below
    ``1.5 N u |v|``, under the bound ``N eps |mean|`` (``eps = 2u``) while ``N u <= 1/4``. Elsewhere (a device where
    the test would cost a synchronisation, or maps too large for the bound) it always runs.
    """
    dims = spatial_dims(centered)
    bound = spatial_size(centered) * torch.finfo(std.dtype).eps
    if centered.device.type == "cpu" and bound <= 0.5 and not bool((std <= mean.abs() * bound).any()):
        return None
    return centered.amax(dims, keepdim=True) == centered.amin(dims, keepdim=True)


def scale_factor(std: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """The factor of the centred maps: ``inv``, or 0 where the spread is 0 (constant maps)."""
    return inv.masked_fill(std == 0, 0.0)


def standardize_maps_backward(
    grad: torch.Tensor, standardized: torch.Tensor, std: torch.Tensor, inv: torch.Tensor, *, overwrite: bool = False
) -> torch.Tensor:
    """The gradient through :func:`standardize_maps`, in closed form (three passes over the maps).

    ``dt = (g - mean(g)) / (std + eps) - y * sum(g * y) / ((N - 1) std)`` with ``y`` the standardized maps;
    ``overwrite`` reuses ``grad``'s memory for the result. For an exactly constant map, which the forward maps to 0
    whatever its value, the gradient is 0. Exact when ``g`` is constant over the map (CGA's pooled maps), where the
    formula's ``(g - mean(g)) / eps`` would only amplify the rounding of ``mean(g)``; where ``g`` varies (SGE, SGAU)
    the derivative at that singular point is ``(g - mean(g)) / eps``, and 0 (the derivative along constant maps) is
    the chosen, well-conditioned value (docs: "From paper to code").
    """
    dims = spatial_dims(standardized)
    positions = spatial_size(standardized)
    # A constant map (std == 0) standardizes to 0 whatever small change is made: its second term vanishes.
    scale = coupling_factor(std, positions)
    coupling = map_dot(grad, standardized).to(scale.dtype) * scale
    grad_mean = grad.mean(dims, keepdim=True)
    grad_maps = grad.sub_(grad_mean) if overwrite else grad - grad_mean
    return grad_maps.mul_(scale_factor(std, inv)).addcmul_(standardized, coupling, value=-1.0)


def coupling_factor(std: torch.Tensor, positions: int) -> torch.Tensor:
    """``1 / ((N - 1) std)``, the factor of the standardization gradient's second term; 0 where ``std`` is 0."""
    return torch.where(std > 0, 1.0 / (std * max(positions - 1, 1)), torch.zeros_like(std))


def resize_to(
    maps: torch.Tensor, size: "torch.Size | tuple[int, ...]", out: "torch.Tensor | None" = None
) -> torch.Tensor:
    """:func:`group_attention.layers.group_ops.resize_to` for the fused path (eager mode only): the maps themselves
    when the size is unchanged, and on CPU an exact doubling of every spatial dim (U-Net's skips) as separable
    two-tap filters (:func:`double_linear`). With ``out`` (``(B, G, *size)``, any strides) the result is written
    there; the doubling writes its last pass straight into it."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps if out is None else out.copy_(maps)
    # double_linear writes with out=: not differentiable
    if maps.device.type == "cpu" and doubles(maps.shape[2:], size) and not gradient_flows(maps):
        return double_linear(maps, out=out)
    resized = F.interpolate(maps, size=tuple(size), mode=INTERPOLATION_MODES[len(size)], align_corners=False)
    return resized if out is None else out.copy_(resized)


def resize_to_backward(grad: torch.Tensor, input_shape: "torch.Size | tuple[int, ...]") -> torch.Tensor:
    """The gradient through :func:`resize_to` from maps of ``input_shape``: the adjoint of the interpolation."""
    output_size = list(grad.shape[2:])
    if output_size == list(input_shape[2:]):
        return grad
    if grad.device.type == "cpu" and doubles(input_shape[2:], output_size):
        return double_linear_backward(grad)
    backward = {
        1: torch.ops.aten.upsample_linear1d_backward,
        2: torch.ops.aten.upsample_bilinear2d_backward,
        3: torch.ops.aten.upsample_trilinear3d_backward,
    }[len(output_size)]
    return backward(grad.contiguous(), output_size, list(input_shape), False)


def doubles(size: "tuple[int, ...] | torch.Size", target: "tuple[int, ...] | torch.Size | list[int]") -> bool:
    """Whether ``target`` is exactly twice ``size`` in every spatial dim (U-Net's skips)."""
    return all(2 * s == t for s, t in zip(size, target))


def double_linear(maps: torch.Tensor, out: "torch.Tensor | None" = None) -> torch.Tensor:
    """``F.interpolate(maps, scale_factor=2, mode="(bi|tri)linear", align_corners=False)``, one dim at a time; the
    last pass writes into ``out`` when given.

    Along a dim of length ``n``, output ``2i`` samples the input at ``i - 1/4`` and output ``2i + 1`` at
    ``i + 1/4``, clamped to the ends: ``out[2i] = lerp(x[i], x[i - 1], 1/4)``, ``out[2i + 1] = lerp(x[i], x[i + 1],
    1/4)``.
    """
    for dim in reversed(range(2, maps.dim())):
        maps = _double_along(maps, dim, out if dim == 2 else None)
    return maps


def double_linear_backward(grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`double_linear`: each output's gradient goes back to its two taps.

    Large float32/float64 gradients take :func:`_double_linear_backward_strided` (one convolution); small ones, where
    a convolution's fixed cost outweighs the passes it saves, and half-precision ones (the attention's gradients are
    float32 statistics; CPU convolutions in half precision vary with the torch version) take separable slices and
    adds.
    """
    if grad.numel() >= STRIDED_ADJOINT_MIN_NUMEL and grad.dtype in (torch.float32, torch.float64):
        return _double_linear_backward_strided(grad)
    for dim in reversed(range(2, grad.dim())):
        grad = _double_along_backward(grad, dim)
    return grad


def _double_linear_backward_strided(grad: torch.Tensor) -> torch.Tensor:
    """:func:`double_linear_backward` as a strided convolution: :func:`double_linear` is a transposed convolution of
    the edge-padded maps (stride 2, taps ``[1/4, 3/4, 3/4, 1/4]`` along each dim, one map per channel), so its
    adjoint is the strided convolution with the same taps (one oneDNN call), followed by the padding's adjoint: each
    padded edge's gradient is added to the edge it repeats. ``(B, m, *2s) -> (B, m, *s)``."""
    spatial = grad.dim() - 2
    taps = grad.new_tensor([0.25, 0.75, 0.75, 0.25])
    kernel = taps
    for _ in range(spatial - 1):
        kernel = kernel.unsqueeze(-1) * taps  # the separable taps' outer product, (4,) * spatial
    kernel = kernel.expand(grad.shape[1], 1, *kernel.shape).contiguous()
    convolution = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    with torch.autocast(grad.device.type, enabled=False):  # the taps are exact in grad's own dtype
        padded = convolution(grad, kernel, stride=2, padding=3, groups=grad.shape[1])  # (B, m, *(s + 2))
    out = padded
    for dim in range(2, grad.dim()):
        length = padded.shape[dim] - 2
        inner = out.narrow(dim, 1, length)
        inner.narrow(dim, 0, 1).add_(out.narrow(dim, 0, 1))
        inner.narrow(dim, length - 1, 1).add_(out.narrow(dim, length + 1, 1))
        out = inner
    return out.contiguous(memory_format=memory_format_of(grad))


def _double_along(x: torch.Tensor, dim: int, out: "torch.Tensor | None" = None) -> torch.Tensor:
    length = x.shape[dim]
    if out is None:
        shape = x.shape[:dim] + (2 * length,) + x.shape[dim + 1 :]
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    phases = out.unflatten(dim, (length, 2))
    even, odd = phases.select(dim + 1, 0), phases.select(dim + 1, 1)
    inner = length - 1
    torch.lerp(x.narrow(dim, 1, inner), x.narrow(dim, 0, inner), 0.25, out=even.narrow(dim, 1, inner))
    torch.lerp(x.narrow(dim, 0, inner), x.narrow(dim, 1, inner), 0.25, out=odd.narrow(dim, 0, inner))
    even.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
    odd.narrow(dim, inner, 1).copy_(x.narrow(dim, inner, 1))
    return out


def _double_along_backward(grad: torch.Tensor, dim: int) -> torch.Tensor:
    length = grad.shape[dim] // 2
    phases = grad.unflatten(dim, (length, 2))
    even, odd = phases.select(dim + 1, 0), phases.select(dim + 1, 1)
    inner = length - 1
    out = torch.add(even, odd).mul_(0.75)
    out.narrow(dim, 0, inner).add_(even.narrow(dim, 1, inner), alpha=0.25)
    out.narrow(dim, 1, inner).add_(odd.narrow(dim, 0, inner), alpha=0.25)
    # The clamped ends: out[0] = x[0] and out[2n - 1] = x[n - 1] carry their whole gradient to one tap.
    out.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1), alpha=0.25)
    out.narrow(dim, inner, 1).add_(odd.narrow(dim, inner, 1), alpha=0.25)
    return out
