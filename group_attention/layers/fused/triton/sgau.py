"""Triton kernels of SGAU (eq. 3): ``low * (1 + Up(A))`` with the bilinear interpolation done on the fly, and
its backward (the interpolation's adjoint, gathered for U-Net's exact doubling)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    MAX_INLINE_SUM_TILES,
    _inv_dof,
    _launch,
    _load_stats,
    _on_input_device,
    _program_tile,
    _rows_tile,
    _standardized_tile,
)


@triton.jit
def _bilinear_saliency(maps_ptr, bg, mean, scale, offs_n, mask_n, W_out, h, w, scale_h, scale_w):
    """SGAU's attention at output positions ``offs_n`` of a ``(H_out, W_out)`` grid: the sigmoid of the
    standardized ``(h, w)`` map, bilinearly interpolated as ``F.interpolate(align_corners=False)`` does."""
    oy = offs_n // W_out
    ox = offs_n % W_out
    sy = tl.maximum((oy.to(tl.float32) + 0.5) * scale_h - 0.5, 0.0)
    sx = tl.maximum((ox.to(tl.float32) + 0.5) * scale_w - 0.5, 0.0)
    y0 = sy.to(tl.int32)
    x0 = sx.to(tl.int32)
    ly = sy - y0.to(tl.float32)
    lx = sx - x0.to(tl.float32)
    y1 = tl.minimum(y0 + 1, h - 1)
    x1 = tl.minimum(x0 + 1, w - 1)
    base = maps_ptr + bg.to(tl.int64) * h * w
    v00 = tl.sigmoid((tl.load(base + y0 * w + x0, mask=mask_n, other=0.0) - mean) * scale)
    v01 = tl.sigmoid((tl.load(base + y0 * w + x1, mask=mask_n, other=0.0) - mean) * scale)
    v10 = tl.sigmoid((tl.load(base + y1 * w + x0, mask=mask_n, other=0.0) - mean) * scale)
    v11 = tl.sigmoid((tl.load(base + y1 * w + x1, mask=mask_n, other=0.0) - mean) * scale)
    return (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)


@triton.jit
def _attend_kernel(
    low_ptr,
    up_ptr,
    maps_ptr,
    stats_ptr,
    out_ptr,
    G,
    N,
    K,
    W_out,
    h,
    w,
    scale_h,
    scale_w,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """SGAU's output: the attended half ``low * (1 + A)`` into the first ``C_low = G K`` of ``2 C_low`` channels,
    and the upsampled features ``up`` (``C_low`` channels too) copied into the second half."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    mean, _std, _inv, scale = _load_stats(stats_ptr, bg)
    gain = 1.0 + _bilinear_saliency(maps_ptr, bg, mean, scale, offs_n, mask_n, W_out, h, w, scale_h, scale_w)
    out_row0 = (bg // G) * (2 * G * K) + (bg % G) * K
    out_shift = (out_row0 - bg * K).to(tl.int64) * N  # from a row of low to its row of the output
    up_shift = (out_row0 + G * K - bg * K).to(tl.int64) * N  # from a row of up to its row (int64: G K N >= 2^31)
    for k0 in range(0, K, BLOCK_K):
        _rows, _mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        attended = tl.load(low_ptr + offsets, mask=mask, other=0.0).to(tl.float32) * gain[None, :]
        tl.store(out_ptr + out_shift + offsets, attended.to(out_ptr.dtype.element_ty), mask=mask)
        up = tl.load(up_ptr + offsets, mask=mask, other=0.0)
        tl.store(out_ptr + up_shift + offsets, up.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _attend_backward_kernel(
    grad_ptr,
    out_ptr,
    maps_ptr,
    stats_ptr,
    grad_low_ptr,
    grad_att_ptr,
    G,
    N,
    K,
    W_out,
    h,
    w,
    scale_h,
    scale_w,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """SGAU's backward at the low level: ``d low = g (1 + A)`` and ``dA = sum_k g * attended / (1 + A)``."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    mean, _std, _inv, scale = _load_stats(stats_ptr, bg)
    gain = 1.0 + _bilinear_saliency(maps_ptr, bg, mean, scale, offs_n, mask_n, W_out, h, w, scale_h, scale_w)
    out_row0 = (bg // G) * (2 * G * K) + (bg % G) * K
    grad_attention = tl.zeros((BLOCK_N,), dtype=tl.float32)
    out_shift = (out_row0 - bg * K).to(tl.int64) * N  # from a row of low to its row of the output
    for k0 in range(0, K, BLOCK_K):
        _rows, _mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        g = tl.load(grad_ptr + out_shift + offsets, mask=mask, other=0.0).to(tl.float32)
        attended = tl.load(out_ptr + out_shift + offsets, mask=mask, other=0.0).to(tl.float32)
        grad_attention += tl.sum(g * attended, axis=0)
        tl.store(grad_low_ptr + offsets, (g * gain[None, :]).to(grad_low_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_att_ptr + bg.to(tl.int64) * N + offs_n, grad_attention / gain, mask=mask_n)


@triton.jit
def _sigmoid_standardize_sums_kernel(grad_ptr, maps_ptr, stats_ptr, part_ptr, N, T, BLOCK_N: tl.constexpr):
    """In place, ``d = g * s'`` (the gradient at the standardized maps ``s`` from the one at their sigmoid), and
    per tile the sums of ``d`` and ``d * s``."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    offsets = bg.to(tl.int64) * N + offs_n
    standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
    saliency = tl.sigmoid(standardized)
    grad = tl.load(grad_ptr + offsets, mask=mask_n, other=0.0) * saliency * (1.0 - saliency)
    tl.store(grad_ptr + offsets, grad, mask=mask_n)
    tl.store(part_ptr + (bg * T + t) * 2, tl.sum(grad, axis=0))
    tl.store(part_ptr + (bg * T + t) * 2 + 1, tl.sum(grad * standardized, axis=0))


@triton.jit
def _maps_gradient_dot_kernel(
    x_ptr,
    grad_ptr,
    maps_ptr,
    stats_ptr,
    sums_ptr,
    dot_ptr,
    N,
    K,
    T,
    T_SUMS,
    inv_dof,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """The maps' gradient through the standardization, ``dm = inv (d - mean d) - s sum(d s) / ((N - 1) std)``
    (``d`` read from and ``dm`` written over ``grad``; ``inv`` 0 for a constant map; the sums of ``d`` and ``d s``
    from ``T_SUMS`` tiles), and per row and tile ``sum x * dm`` over the group's rows."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    _mean, std, _inv, scale = _load_stats(stats_ptr, bg)
    ts = tl.arange(0, BLOCK_T)
    total = tl.sum(tl.load(sums_ptr + (bg * T_SUMS + ts) * 2, mask=ts < T_SUMS, other=0.0), axis=0)
    dot = tl.sum(tl.load(sums_ptr + (bg * T_SUMS + ts) * 2 + 1, mask=ts < T_SUMS, other=0.0), axis=0)
    coupling = tl.where(std > 0, inv_dof / tl.where(std > 0, std, 1.0), 0.0)
    offsets = bg.to(tl.int64) * N + offs_n
    standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
    grad = tl.load(grad_ptr + offsets, mask=mask_n, other=0.0)
    grad_maps = scale * (grad - total / N) - dot * coupling * standardized
    grad_maps = tl.where(mask_n, grad_maps, 0.0)
    tl.store(grad_ptr + offsets, grad_maps, mask=mask_n)
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(dot_ptr + rows * T + t, tl.sum(x * grad_maps[None, :], axis=1), mask=mask_k)


@triton.jit
def _doubling_taps(i, n):
    """The four output rows ``2i - 1 .. 2i + 2`` that a doubling bilinear interpolation (``align_corners=False``)
    takes from input row ``i`` of ``n``, and their weights (the clamped ends carry 1 instead of 3/4)."""
    first = tl.where(i >= 1, 0.25, 0.0)
    second = tl.where(i == 0, 1.0, 0.75)
    third = tl.where(i == n - 1, 1.0, 0.75)
    fourth = tl.where(i <= n - 2, 0.25, 0.0)
    return 2 * i - 1, first, second, third, fourth


@triton.jit
def _doubled_adjoint_sums_kernel(grad_ptr, maps_ptr, stats_ptr, out_ptr, part_ptr, N, T, h, w, BLOCK_N: tl.constexpr):
    """The adjoint of SGAU's doubling interpolation, gathered (no atomics): per position of the ``(h, w)`` maps,
    the weighted sum of the ``4 x 4`` upsampled gradients that interpolated from it; then through the sigmoid of the
    standardized maps ``s`` (``d = g s'``, written) with per tile the sums of ``d`` and ``d s``."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    i = offs_n // w
    j = offs_n % w
    row0, wy0, wy1, wy2, wy3 = _doubling_taps(i, h)
    col0, wx0, wx1, wx2, wx3 = _doubling_taps(j, w)
    width = 2 * w
    base = grad_ptr + bg.to(tl.int64) * 4 * N
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for a in tl.static_range(4):
        wy = wy0 if a == 0 else (wy1 if a == 1 else (wy2 if a == 2 else wy3))
        row = row0 + a
        row_mask = mask_n & (wy > 0)
        line = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for b in tl.static_range(4):
            wx = wx0 if b == 0 else (wx1 if b == 1 else (wx2 if b == 2 else wx3))
            col = col0 + b
            tap = tl.load(base + row * width + col, mask=row_mask & (wx > 0), other=0.0)
            line += wx * tap
        total += wy * line
    offsets = bg.to(tl.int64) * N + offs_n
    standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
    saliency = tl.sigmoid(standardized)
    grad = tl.where(mask_n, total * saliency * (1.0 - saliency), 0.0)
    tl.store(out_ptr + offsets, grad, mask=mask_n)
    tl.store(part_ptr + (bg * T + t) * 2, tl.sum(grad, axis=0))
    tl.store(part_ptr + (bg * T + t) * 2 + 1, tl.sum(grad * standardized, axis=0))


@triton.jit
def _maps_to_rows_kernel(maps_ptr, factor_ptr, shift_ptr, out_ptr, N, K, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """``out[r] = map[g] * factor[r] + shift[r]`` for the ``K`` rows ``r`` of each group ``g`` (SGAU's ``d high``)."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    values = tl.load(maps_ptr + bg.to(tl.int64) * N + offs_n, mask=mask_n, other=0.0)
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        factor = tl.load(factor_ptr + rows, mask=mask_k, other=0.0)
        shift = tl.load(shift_ptr + rows, mask=mask_k, other=0.0)
        out = values[None, :] * factor[:, None] + shift[:, None]
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


def _bilinear_args(maps_hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, float, float]:
    (h, w), (height, width) = maps_hw, size
    return width, h, w, h / height, w / width


@_on_input_device
def attend(low: torch.Tensor, up: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, out: torch.Tensor) -> None:
    """Write ``low * (1 + Up(sigmoid(standardized maps)))`` into ``out[:, :C_low]`` and ``up`` into
    ``out[:, C_low:]``: ``low`` and ``up`` ``(B, C_low, H, W)``, ``maps`` ``(B, m, h, w)`` float32, ``out``
    ``(B, 2 C_low, H, W)``, all contiguous."""
    groups = maps.shape[1]
    launch = _launch(low, groups)
    _attend_kernel[launch.grid](
        low,
        up,
        maps,
        stats,
        out,
        groups,
        launch.positions,
        launch.per_group,
        *_bilinear_args(maps.shape[2:], low.shape[2:]),
        **launch.meta,
    )


@_on_input_device
def attend_backward(
    grad: torch.Tensor, out: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, low_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d low, dA)`` from the gradient of SGAU's output and the output: ``(B, C_low, H, W)`` in ``low_dtype``
    and ``(B, m, H, W)`` float32."""
    batch, channels, height, width = out.shape
    groups = maps.shape[1]
    launch = _launch(out, groups, channels // 2)
    grad_low = torch.empty((batch, channels // 2, height, width), device=out.device, dtype=low_dtype)
    grad_attention = torch.empty((batch, groups, height, width), device=out.device, dtype=torch.float32)
    _attend_backward_kernel[launch.grid](
        grad,
        out,
        maps,
        stats,
        grad_low,
        grad_attention,
        groups,
        launch.positions,
        launch.per_group,
        *_bilinear_args(maps.shape[2:], (height, width)),
        **launch.meta,
    )
    return grad_low, grad_attention


@_on_input_device
def sigmoid_standardize_sums(grad: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Turn ``grad`` (at the maps' sigmoid, ``(B, m, *s)`` float32, contiguous) in place into the gradient at the
    standardized maps ``d``; return per map and tile ``(sum d, sum d s)``, ``(B * m, T, 2)``."""
    launch = _launch(maps, maps.shape[1])
    partials = torch.empty((*launch.grid, 2), device=maps.device, dtype=torch.float32)
    _sigmoid_standardize_sums_kernel[launch.grid](
        grad, maps, stats, partials, launch.positions, launch.tiles, BLOCK_N=launch.block_n, num_warps=launch.num_warps
    )
    return partials


@_on_input_device
def maps_gradient_dot(
    x: torch.Tensor, grad: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, sums: torch.Tensor
) -> torch.Tensor:
    """Overwrite ``grad`` (``d``, the gradient at the standardized maps, ``(B, m, *s)``) with the maps' gradient
    and return per channel of ``x`` (``(B, C, *s)``) ``sum_p x * dm`` over its group's map, ``(B, C)`` float32;
    ``sums`` are the per-tile ``(sum d, sum d s)``, ``(B * m, T, 2)``."""
    launch = _launch(x, maps.shape[1])
    batch, channels = x.shape[:2]
    dots = torch.empty((batch * channels, launch.tiles), device=x.device, dtype=torch.float32)
    if sums.shape[1] > MAX_INLINE_SUM_TILES:  # every program reads all tile sums: merge many of them first
        sums = sums.sum(1, keepdim=True)
    sum_tiles = sums.shape[1]
    _maps_gradient_dot_kernel[launch.grid](
        x,
        grad,
        maps,
        stats,
        sums,
        dots,
        launch.positions,
        launch.per_group,
        launch.tiles,
        sum_tiles,
        _inv_dof(launch.positions),
        BLOCK_T=triton.next_power_of_2(sum_tiles),
        **launch.meta,
    )
    return dots.sum(1).view(batch, channels)


@_on_input_device
def doubled_adjoint_sums(
    grad: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``grad`` ``(B, m, 2h, 2w)`` at the doubled attention and ``maps`` ``(B, m, h, w)``: the gradient at the
    standardized maps, ``d = Up^T(grad) * s'`` (``(B, m, h, w)`` float32), and per map and tile
    ``(sum d, sum d s)`` (``(B * m, T, 2)``)."""
    launch = _launch(maps, maps.shape[1])
    out = torch.empty_like(maps)
    partials = torch.empty((*launch.grid, 2), device=maps.device, dtype=torch.float32)
    _doubled_adjoint_sums_kernel[launch.grid](
        grad,
        maps,
        stats,
        out,
        partials,
        launch.positions,
        launch.tiles,
        *maps.shape[2:],
        BLOCK_N=launch.block_n,
        num_warps=launch.num_warps,
    )
    return out, partials


@_on_input_device
def maps_to_rows(
    maps: torch.Tensor, factor: torch.Tensor, shift: torch.Tensor, channels: int, out_dtype: torch.dtype
) -> torch.Tensor:
    """``(B, C, *s)``: each group's map ``(B, m, *s)`` times a per-channel ``factor`` plus a per-channel ``shift``
    (both ``(B, C)`` float32)."""
    launch = _launch(maps, maps.shape[1], channels)
    out = torch.empty((launch.batch, channels, *maps.shape[2:]), device=maps.device, dtype=out_dtype)
    _maps_to_rows_kernel[launch.grid](
        maps, factor.contiguous(), shift.contiguous(), out, launch.positions, launch.per_group, **launch.meta
    )
    return out
