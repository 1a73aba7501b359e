"""The group operations CGA, SGE and SGAU are written in, as plain tensor code.

All three layers split ``C`` channels into ``m`` groups of ``C / m`` consecutive channels, reduce each group to one
spatial map, standardize that map over space and squash it with a sigmoid. These functions are that vocabulary; the
layers' functional forms are built from them, and they are what ``torch.compile``, ``torch.export``, ONNX export and
``torch.func`` transforms see. Every size they use is read from the tensors, so traced and exported graphs stay right
at every input size.

Statistics are computed in at least float32. The conventions (unbiased standard deviation, a constant map
standardizes to exactly 0) are explained once in the docs: "From paper to code", section "Norm: the
standardization in eqs 1 and 3".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _compat

DEFAULT_EPS = 1e-5
INTERPOLATION_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype for statistics over ``dtype`` features: at least float32, so fp16/bf16 sums cannot overflow."""
    return torch.promote_types(dtype, torch.float32)


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial dims of a ``(B, C, *spatial)`` tensor: ``(2, 3)`` for 2D maps, ``(2, 3, 4)`` for volumes."""
    return tuple(range(2, x.dim()))


def spatial_size(x: torch.Tensor) -> int:
    """The number of positions ``N`` of a ``(B, C, *spatial)`` tensor (a symbolic size while tracing or exporting)."""
    return math.prod(x.shape[2:])


def broadcast_channels(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View per-channel values ``(B, C)`` (or ``(B, m, k)``) with singleton spatial dims to broadcast over ``like``."""
    return values.view(*values.shape, *([1] * (like.dim() - values.dim())))


def grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``b (g k) *s -> b g k *s``: the channels split into ``groups`` groups of ``k`` consecutive channels (a view,
    also for channels-last tensors). Written with the tensor's own sizes, which stay symbolic in traced graphs."""
    return x.reshape(x.shape[0], groups, -1, *x.shape[2:])


def times_group_maps(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``x`` times one map per group of its channels: ``out[b, c] = x[b, c] * maps[b, c // (C / m)]``.

    No view is involved, neither in the product nor in what its backward keeps: inductor (torch 2.14) cannot order
    the strides of a view it keeps (for this product's backward, or for a convolution that follows) when a size is
    symbolic (``dynamic=True``), and fails. A grouped view of ``x`` times the maps, viewed back to ``(B, C, *S)``,
    failed before a convolution; the maps expanded over each group and flattened (a view of a copy), or
    ``repeat_interleave`` (the same once decomposed), failed inside GANet. So one channel per group multiplies the
    maps directly, and several index them per channel (``index_select``: compiled, an indexed load in the fused
    loop; in eager mode, where the functional forms run only for tensor subclasses and ``torch.func``, a tensor of
    ``x``'s size). Autograd's adjoint of that index is a scatter-add, so compiled code takes the maps' gradient as
    each group's channels summed instead (:class:`_TimesGroupMaps`); exported graphs keep the plain product.

    Shape:
        ``(B, C, *S), (B, m, *S) -> (B, C, *S)``.
    """
    channels, groups = x.shape[1], maps.shape[1]
    if channels == groups:
        return x * maps
    index = channel_groups(channels, groups, x.device)
    if _compiling_not_exporting():
        return _TimesGroupMaps.apply(x, maps, index)
    return x * maps.index_select(1, index)


class _TimesGroupMaps(torch.autograd.Function):
    """:func:`times_group_maps` with several channels per group, for ``torch.compile``: forward gathers the maps per
    channel; backward sums each group's channels of ``grad * x`` for the maps' gradient, where autograd's adjoint of
    the gather is a scatter-add (at GANet's second decoder level, inductor's CPU loop for it took 10.4 of the gate's
    12.2 ms of generated kernels; 3.9 ms in all without it). It keeps ``x`` and the maps: no view, and nothing of
    ``x``'s size that ``x`` is not."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, maps, index)
        return x * maps.index_select(1, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, maps, index = ctx.saved_tensors
        grad_x = grad * maps.index_select(1, index) if ctx.needs_input_grad[0] else None
        grad_maps = None
        if ctx.needs_input_grad[1]:
            grad_maps = group_sum(grad * x, maps.shape[1]).to(maps.dtype)
        return grad_x, grad_maps, None


def channel_groups(channels: int, groups: int, device: torch.device) -> torch.Tensor:
    """Each channel's group: ``[0, .., 0, 1, .., m - 1]``, ``channels / groups`` times each, ``(C,)`` int64."""
    return torch.arange(channels, device=device) // (channels // groups)


def group_sum(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Each group's channels summed into one map: ``(B, C, *S) -> (B, m, *S)``, in at least float32."""
    return grouped(x, groups).sum(2, dtype=stat_dtype(x.dtype))


def group_pooled_dot(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Per group and position, the dot product of the feature vector with the group's spatially pooled vector.

    ``out[b, g, p] = sum_{k in g} x[b, k, p] * mean_p'(x[b, k, p'])`` (SGE's similarity, SGAU's eq. 3).

    Shape:
        ``(B, C, *S) -> (B, m, *S)``, in at least float32.
    """
    x = x.to(stat_dtype(x.dtype))
    pooled = x.mean(spatial_dims(x), keepdim=True)
    return group_sum(x * pooled, groups)


# The most groups for which compiled code forms the dot-product maps as a matrix product (it costs ``m`` times the
# group sum's multiply-adds); GANet and the paper use 32.
PRODUCT_MAX_GROUPS = 64


def maps_by_product(x: torch.Tensor, groups: int) -> bool:
    """Whether :func:`group_pooled_dot_by_product` should form the dot-product maps of ``x``: inside
    ``torch.compile`` (not ``torch.export``) on CPU, with several channels per group and at most
    :data:`PRODUCT_MAX_GROUPS` groups. The tests read the device and the channel and group counts, which a layer
    fixes, never a spatial size or the batch: no guard of a compiled graph depends on the input size."""
    return (
        _compiling_not_exporting() and x.device.type == "cpu" and x.shape[1] != groups and groups <= PRODUCT_MAX_GROUPS
    )


def group_pooled_dot_by_product(x: torch.Tensor, groups: int) -> torch.Tensor:
    """:func:`group_pooled_dot` as one batched matrix product, with the positions flattened: ``(B, C, *S) -> (B, m,
    N)``, in at least float32.

    The left factor is block-diagonal: row ``g`` of the ``(B, m, C)`` matrix holds the pooled values of group ``g``'s
    channels and zeros elsewhere, and it multiplies the features viewed ``(B, C, N)`` (a view in the plain and the
    channels-last layout). For inductor on CPU: it keeps a convolution's features channels-last, and there the
    group sum, fused into each spatial statistic, becomes a scalar loop that reads ``x`` once per group; the
    product's ``(B, m, N)`` output is laid out for those statistics instead. It costs ``m`` times the group sum's
    multiply-adds, in a matrix product. The statistics are taken on this flat output, not on a ``(B, m, *S)`` view
    of it: inductor (torch 2.14) cannot order the strides of such a view when it keeps it for backward and a map's
    size is symbolic (``dynamic=True``).
    """
    x = x.to(stat_dtype(x.dtype))
    pooled = x.mean(spatial_dims(x))  # (B, C)
    return _times_flat_positions(group_membership(x.shape[1], groups, x) * pooled[:, None], x)


def group_sum_by_product(x: torch.Tensor, groups: int) -> torch.Tensor:
    """:func:`group_sum` as a matrix product, with the positions flattened: ``(B, C, *S) -> (B, m, N)``, in at least
    float32. For inductor on CPU (:func:`maps_by_product`), the same reason as :func:`group_pooled_dot_by_product`:
    with a few channels per group it inlines the sum into each spatial statistic of a channels-last input, a scalar
    loop per group (CGA at GANet's second stage: 9 ms of its compiled forward). CGA uses it in inference only: in
    training it gained nothing measurable in GANet's step and kept 4% more activations (docs, "Under
    torch.compile")."""
    x = x.to(stat_dtype(x.dtype))
    return _times_flat_positions(group_membership(x.shape[1], groups, x).expand(x.shape[0], -1, -1), x)


def group_membership(channels: int, groups: int, like: torch.Tensor) -> torch.Tensor:
    """``member[g, c] = 1`` where channel ``c`` belongs to group ``g``, else 0: ``(m, C)`` in ``like``'s dtype."""
    member = channel_groups(channels, groups, like.device) == torch.arange(groups, device=like.device)[:, None]
    return member.to(like.dtype)


def _times_flat_positions(left: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``left @ x`` with ``x``'s positions flattened, one ``bmm``: ``(B, m, C), (B, C, *S) -> (B, m, N)``, autocast
    off (the statistics stay in at least float32)."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.bmm(left, x.reshape(x.shape[0], x.shape[1], -1))


def standardized_pooled_dot(x: torch.Tensor, groups: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``Norm(group_pooled_dot(x))``, the standardized dot-product maps of SGE and SGAU: ``(B, C, *S) -> (B, m,
    *S)``; compiled on CPU (:func:`maps_by_product`), the flat product's ``(B, m, N)``, which the caller views back
    with :func:`restore_positions` after its last elementwise step (see :func:`group_pooled_dot_by_product`)."""
    if maps_by_product(x, groups):
        return spatial_standardize(group_pooled_dot_by_product(x, groups), eps)
    return spatial_standardize(group_pooled_dot(x, groups), eps)


def restore_positions(maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Maps with flattened positions ``(B, m, N)`` viewed with ``like``'s spatial dims, ``(B, m, *S)``; maps that
    already have them are returned as they are."""
    return maps if maps.dim() == like.dim() else maps.view(*maps.shape[:2], *like.shape[2:])


def spatial_standardize(maps: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``Norm(t) = (t - mean) / (std + eps)`` over the spatial dims of each ``(b, g)`` map.

    ``std`` is the unbiased standard deviation (the SGE authors'); a map with no spread (constant, or one position)
    standardizes to exactly 0.

    Shape:
        ``(B, m, *S) -> (B, m, *S)``.
    """
    dims = spatial_dims(maps)
    centered = maps - maps.mean(dims, keepdim=True)
    std = torch.linalg.vector_norm(centered, dim=dims, keepdim=True) * unbiased_factor(spatial_size(maps), maps)
    constant = maps.amax(dims, keepdim=True) == maps.amin(dims, keepdim=True)
    scale = (1.0 / (std + eps)).masked_fill(constant, 0.0)
    return centered * scale


def unbiased_factor(positions, like: torch.Tensor):
    """``1 / sqrt(max(N - 1, 1))``, the unbiased standard deviation's normalization of a centred map's norm.

    ``positions`` is an int in eager mode, a ``SymInt`` under ``torch.compile``/``torch.export`` and a 0-dim tensor
    under ``torch.jit.trace``; each is kept symbolic, so no map size is frozen into an exported graph.
    """
    if isinstance(positions, torch.Tensor):
        return (positions - 1).clamp(min=1).to(like.dtype).rsqrt()
    if isinstance(positions, int):
        return 1.0 / math.sqrt(max(positions - 1, 1))
    return torch.sym_max(positions - 1, 1) ** -0.5


def expand_groups(group_values: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat each group's value for its ``channels / m`` channels: ``(B, m, *rest) -> (B, channels, *rest)``."""
    return group_values.repeat_interleave(channels // group_values.shape[1], dim=1)


def resize_to(maps: torch.Tensor, size: "torch.Size | tuple[int, ...]") -> torch.Tensor:
    """Linearly interpolate ``(B, m, *s)`` maps to ``size`` (bilinear in 2D, trilinear in 3D; ``align_corners=False``,
    so an unchanged size is the identity).

    Under ``torch.compile`` (not ``torch.export``) an exact doubling, U-Net's skips, is :func:`double_linear`: the
    same values as ``F.interpolate``, as a fixed stencil that inductor fuses into its loops and whose backward is a
    gather, where ATen's interpolation compiles to a scatter (atomic adds on CPU). Where no gradient will flow to the
    maps (inference), it is :func:`double_linear_by_gathers`, which inductor folds into the loads of the loop that
    uses the doubled maps. Exported graphs keep ``F.interpolate``, which stays right at every size (a doubling test
    would be a guard frozen into the graph).
    """
    if _compiling_not_exporting() and all(2 * s == t for s, t in zip(maps.shape[2:], size)):
        if gradient_flows(maps):
            return double_linear(maps)
        return double_linear_by_gathers(maps)
    return F.interpolate(maps, size=tuple(size), mode=INTERPOLATION_MODES[maps.dim() - 2], align_corners=False)


def double_linear(maps: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(maps, scale_factor=2, mode="(bi|tri)linear", align_corners=False)`` as a separable stencil:
    ``(B, m, *s) -> (B, m, *2s)``.

    Along a dim of length ``n``, output ``2i`` samples the input at ``i - 1/4`` and output ``2i + 1`` at ``i + 1/4``,
    clamped to the ends: ``out[2i] = lerp(x[i], x[i - 1], 1/4)``, ``out[2i + 1] = lerp(x[i], x[i + 1], 1/4)``, with
    ``x[-1] = x[0]`` and ``x[n] = x[n - 1]``. Only slices, concatenations and elementwise operations: differentiable,
    exportable and, compiled, one fused loop forward and a gather backward.
    """
    for dim in range(maps.dim() - 1, 1, -1):
        length = maps.shape[dim]
        # Edges repeated, then shifted windows of the input's own length (no slice of length n - 1, whose size-1
        # case would be a new specialization, hence a recompilation, under dynamic shapes).
        padded = torch.cat([maps.narrow(dim, 0, 1), maps, maps.narrow(dim, length - 1, 1)], dim)
        previous, following = padded.narrow(dim, 0, length), padded.narrow(dim, 2, length)
        even, odd = torch.lerp(maps, previous, 0.25), torch.lerp(maps, following, 0.25)
        maps = torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)
    return maps


def gradient_flows(x: torch.Tensor) -> bool:
    """Whether autograd will record a gradient for ``x`` (grad mode on and ``x`` requiring one). Compiled graphs are
    guarded on both already, so a choice made on it adds no recompilation."""
    return torch.is_grad_enabled() and x.requires_grad


def double_linear_by_gathers(maps: torch.Tensor) -> torch.Tensor:
    """:func:`double_linear`'s values by gathering, along each spatial dim, each output's two inputs: output ``j``
    interpolates input ``j // 2`` with a quarter of its neighbour ``j // 2 - 1`` (even ``j``) or ``j // 2 + 1`` (odd
    ``j``), clamped to the ends. ``(B, m, *s) -> (B, m, *2s)``.

    Compiled, the gathers become indexed loads inside the loop that consumes the doubled maps (SGAU's gate), so the
    doubled maps are never written out: compiled GANet's and Baseline+SGAU's inference 0.94x their time with
    :func:`double_linear` (CPU, two threads). It is for inference only: in training, autograd's partitioner
    recomputes the gathers in backward inside the channels-last loop of the features' gradient, a slower loop
    than the stencil's (docs, "Under torch.compile").
    """
    for dim in range(2, maps.dim()):
        length = maps.shape[dim]
        output = torch.arange(2 * length, device=maps.device)
        source = output // 2
        neighbour = (source + 2 * (output % 2) - 1).clamp(0, length - 1)
        maps = torch.lerp(maps.index_select(dim, source), maps.index_select(dim, neighbour), 0.25)
    return maps


def _compiling_not_exporting() -> bool:
    """Inside ``torch.compile`` and not ``torch.export`` (which also reports compiling). False on a torch without
    ``torch.compiler.is_exporting``, where the two cannot be told apart: exported graphs must stay general."""
    return _compat.HAS_COMPILER_IS_EXPORTING and _compat.is_compiling() and not _compat.is_exporting()


def pad_or_crop_to(x: torch.Tensor, size: "torch.Size | tuple[int, ...]") -> torch.Tensor:
    """Zero-pad or centre-crop the spatial dims of ``x`` to ``size`` (U-Net's odd-size skip handling)."""
    pads: list = []
    for current, target in zip(reversed(x.shape[2:]), reversed(tuple(size))):
        diff = target - current
        before = (diff - abs(diff) % 2) // 2  # floor(diff / 2) with an exact division: ONNX truncates negatives
        pads += [before, diff - before]
    if isinstance(x.shape[2], int) and not any(pads):  # eager: nothing to do; traced graphs always pad (by 0)
        return x
    return F.pad(x, pads)


def autocast_enabled(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device type."""
    return _compat.is_autocast_enabled(x.device.type)
