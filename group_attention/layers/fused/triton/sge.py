"""Triton kernels of SGE: the gated product ``x * sigmoid(gamma * Norm(maps) + beta)`` and its backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    _launch,
    _on_input_device,
    _program_tile,
    _rows_tile,
    _standardized_tile,
)


@triton.jit
def _affine_gate(maps_ptr, stats_ptr, affine_ptr, bg, G, offs_n, mask_n, N):
    """SGE's gate ``sigmoid(gamma s + beta)`` on a tile of map ``bg``, with the standardized map ``s``."""
    gamma = tl.load(affine_ptr + (bg % G) * 2).to(tl.float32)
    beta = tl.load(affine_ptr + (bg % G) * 2 + 1).to(tl.float32)
    standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
    return tl.sigmoid(gamma * standardized + beta), standardized, gamma


@triton.jit
def _gate_groups_kernel(
    x_ptr, maps_ptr, stats_ptr, affine_ptr, out_ptr, G, N, K, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr
):
    """SGE's output: each group's rows times its gate."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    gate, _s, _gamma = _affine_gate(maps_ptr, stats_ptr, affine_ptr, bg, G, offs_n, mask_n, N)
    for k0 in range(0, K, BLOCK_K):
        _rows, _mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, (x * gate[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gate_groups_backward_sums_kernel(
    g_ptr,
    x_ptr,
    maps_ptr,
    stats_ptr,
    affine_ptr,
    grad_affine_ptr,
    map_part_ptr,
    row_part_ptr,
    G,
    N,
    K,
    T,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """SGE's first backward pass: the gradient at the gate's pre-activation ``a = sum_k g x * gate'`` (written), per
    map and tile ``(sum a, sum a s)``, and per row and tile ``(sum x a, sum x s)``."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    gate, standardized, _gamma = _affine_gate(maps_ptr, stats_ptr, affine_ptr, bg, G, offs_n, mask_n, N)
    grad_gate = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        _rows, _mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        grad_gate += tl.sum(g * x, axis=0)
    grad_affine = tl.where(mask_n, grad_gate * gate * (1.0 - gate), 0.0)
    tl.store(grad_affine_ptr + bg.to(tl.int64) * N + offs_n, grad_affine, mask=mask_n)
    tl.store(map_part_ptr + (bg * T + t) * 2, tl.sum(grad_affine, axis=0))
    tl.store(map_part_ptr + (bg * T + t) * 2 + 1, tl.sum(grad_affine * standardized, axis=0))
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(row_part_ptr + (rows * T + t) * 2, tl.sum(x * grad_affine[None, :], axis=1), mask=mask_k)
        tl.store(row_part_ptr + (rows * T + t) * 2 + 1, tl.sum(x * standardized[None, :], axis=1), mask=mask_k)


@triton.jit
def _gate_groups_backward_kernel(
    g_ptr,
    maps_ptr,
    stats_ptr,
    affine_ptr,
    grad_affine_ptr,
    coef_ptr,
    mean_ptr,
    shift_ptr,
    out_ptr,
    G,
    N,
    K,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """SGE's ``dx = g * gate + dm * mean_k + shift_k`` with the maps' gradient ``dm = c1 (a - c0) + c2 s``."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    gate, standardized, _gamma = _affine_gate(maps_ptr, stats_ptr, affine_ptr, bg, G, offs_n, mask_n, N)
    c0 = tl.load(coef_ptr + bg * 3)
    c1 = tl.load(coef_ptr + bg * 3 + 1)
    c2 = tl.load(coef_ptr + bg * 3 + 2)
    grad_affine = tl.load(grad_affine_ptr + bg.to(tl.int64) * N + offs_n, mask=mask_n, other=0.0)
    grad_maps = c1 * (grad_affine - c0) + c2 * standardized
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=mask_k, other=0.0)
        shift = tl.load(shift_ptr + rows, mask=mask_k, other=0.0)
        out = g * gate[None, :] + grad_maps[None, :] * mean[:, None] + shift[:, None]
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@_on_input_device
def gate_groups(x: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """SGE's output ``x * sigmoid(gamma_g s + beta_g)`` per group; ``affine`` is ``(m, 2)`` float32."""
    groups = affine.shape[0]
    launch = _launch(x, groups)
    out = torch.empty_like(x)
    _gate_groups_kernel[launch.grid](
        x, maps, stats, affine, out, groups, launch.positions, launch.per_group, **launch.meta
    )
    return out


@_on_input_device
def gate_groups_backward_sums(
    g: torch.Tensor, x: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, affine: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SGE's first backward pass: the pre-activation gradient ``a`` (``(B, m, N)`` float32), per map
    ``(sum a, sum a s)`` (``(B * m, 2)``) and per channel ``(sum x a, sum x s)`` (``(B * C, 2)``)."""
    groups = affine.shape[0]
    launch = _launch(x, groups)
    batch, channels = x.shape[:2]
    grad_affine = torch.empty((batch, groups, launch.positions), device=x.device, dtype=torch.float32)
    map_partials = torch.empty((*launch.grid, 2), device=x.device, dtype=torch.float32)
    row_partials = torch.empty((batch * channels, launch.tiles, 2), device=x.device, dtype=torch.float32)
    _gate_groups_backward_sums_kernel[launch.grid](
        g,
        x,
        maps,
        stats,
        affine,
        grad_affine,
        map_partials,
        row_partials,
        groups,
        launch.positions,
        launch.per_group,
        launch.tiles,
        **launch.meta,
    )
    return grad_affine, map_partials.sum(1), row_partials.sum(1)


@_on_input_device
def gate_groups_backward(
    g: torch.Tensor,
    maps: torch.Tensor,
    stats: torch.Tensor,
    affine: torch.Tensor,
    grad_affine: torch.Tensor,
    coef: torch.Tensor,
    channel_mean: torch.Tensor,
    shift: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """SGE's ``dx = g * gate + dm * mean_k + shift_k`` (``channel_mean`` and ``shift`` ``(B, C)`` float32)."""
    groups = affine.shape[0]
    launch = _launch(g, groups)
    out = torch.empty(g.shape, device=g.device, dtype=out_dtype)
    _gate_groups_backward_kernel[launch.grid](
        g,
        maps,
        stats,
        affine,
        grad_affine,
        coef.contiguous(),
        channel_mean.contiguous(),
        shift.contiguous(),
        out,
        groups,
        launch.positions,
        launch.per_group,
        **launch.meta,
    )
    return out
