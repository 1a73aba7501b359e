"""Triton kernels of CGA (eqs 1-2): the saliency sums, the gate (pooling, linear map, sigmoid) and its backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    GATE_TILE_ELEMENTS,
    _inv_dof,
    _launch,
    _on_input_device,
    _program_tile,
    _standardized_tile,
)


@triton.jit
def _saliency_sum_kernel(maps_ptr, stats_ptr, part_ptr, N, T, BLOCK_N: tl.constexpr):
    """Per tile of each map, the sum of ``sigmoid((t - mean) * scale)`` (CGA's pooled saliency)."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    saliency = tl.sigmoid(_standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N))
    tl.store(part_ptr + bg * T + t, tl.sum(tl.where(mask_n, saliency, 0.0), axis=0))


@triton.jit
def _cga_gate_kernel(
    part_ptr,
    weight_ptr,
    bias_ptr,
    pooled_ptr,
    gate_ptr,
    gate_out_ptr,
    channel_ptr,
    M,
    T,
    O,  # noqa: E741 - the output width, named as in the kernel's comments
    K,
    inv_n,
    PER_GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """CGA's gate for one sample: the pooled saliency (mean over the tiles' sums), ``sigmoid(W pooled + b)`` (kept
    and returned, two copies) and the weight of every channel in the features' dtype."""
    b = tl.program_id(0)
    gs = tl.arange(0, BLOCK_M)
    mask_g = gs < M
    sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        tile = tl.load(
            part_ptr + (b * M + gs)[:, None] * T + ts[None, :], mask=mask_g[:, None] & (ts < T)[None, :], other=0.0
        )
        sums += tl.sum(tile, axis=1)
    pooled = sums * inv_n
    tl.store(pooled_ptr + b * M + gs, pooled, mask=mask_g)
    for o0 in range(0, O, BLOCK_O):
        os = o0 + tl.arange(0, BLOCK_O)
        mask_o = os < O
        weight = tl.load(
            weight_ptr + os[:, None] * M + gs[None, :], mask=mask_o[:, None] & mask_g[None, :], other=0.0
        ).to(tl.float32)
        bias = tl.load(bias_ptr + os, mask=mask_o, other=0.0).to(tl.float32)
        gate = tl.sigmoid(tl.sum(weight * pooled[None, :], axis=1) + bias)
        tl.store(gate_ptr + b * O + os, gate, mask=mask_o)
        tl.store(gate_out_ptr + b * O + os, gate, mask=mask_o)
        if PER_GROUP:
            for k0 in range(0, K, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                channels = os[:, None] * K + ks[None, :]
                values = tl.broadcast_to(gate[:, None], (BLOCK_O, BLOCK_K))
                tl.store(
                    channel_ptr + b * O * K + channels,
                    values.to(channel_ptr.dtype.element_ty),
                    mask=mask_o[:, None] & (ks < K)[None, :],
                )
        else:
            tl.store(channel_ptr + b * O + os, gate.to(channel_ptr.dtype.element_ty), mask=mask_o)


@triton.jit
def _cga_gate_backward_kernel(
    sums_ptr,
    grad_gate_ptr,
    gate_ptr,
    pooled_ptr,
    weight_ptr,
    slopes_ptr,
    stats_ptr,
    grad_weight_ptr,
    grad_bias_ptr,
    grad_pooled_ptr,
    coef_ptr,
    B,
    M,
    O,  # noqa: E741 - the output width, named as in the kernel's comments
    K,
    N,
    inv_n,
    inv_dof,
    PER_GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """CGA's gate backward for the whole batch in one program: from the per-channel sums of ``gy * x`` and the
    returned gate's own gradient, the gradients of ``W`` and ``b``, and per map the coefficients ``(c0, c1, c2)``
    of the maps' gradient ``c1 (s' - c0) + c2 s`` (see ``_scale_add_kernel``)."""
    gs = tl.arange(0, BLOCK_M)
    mask_g = gs < M
    for o0 in range(0, O, BLOCK_O):
        os = o0 + tl.arange(0, BLOCK_O)
        mask_o = os < O
        weight = tl.load(
            weight_ptr + os[:, None] * M + gs[None, :], mask=mask_o[:, None] & mask_g[None, :], other=0.0
        ).to(tl.float32)
        grad_weight = tl.zeros((BLOCK_O, BLOCK_M), dtype=tl.float32)
        grad_bias = tl.zeros((BLOCK_O,), dtype=tl.float32)
        for b in range(0, B):
            if PER_GROUP:
                grad_gate = tl.zeros((BLOCK_O,), dtype=tl.float32)
                for k0 in range(0, K, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    channel_sums = tl.load(
                        sums_ptr + b * O * K + os[:, None] * K + ks[None, :],
                        mask=mask_o[:, None] & (ks < K)[None, :],
                        other=0.0,
                    )
                    grad_gate += tl.sum(channel_sums, axis=1)
            else:
                grad_gate = tl.load(sums_ptr + b * O + os, mask=mask_o, other=0.0)
            grad_gate += tl.load(grad_gate_ptr + b * O + os, mask=mask_o, other=0.0).to(tl.float32)
            gate = tl.load(gate_ptr + b * O + os, mask=mask_o, other=0.0)
            grad_logits = tl.where(mask_o, grad_gate * gate * (1.0 - gate), 0.0)
            pooled = tl.load(pooled_ptr + b * M + gs, mask=mask_g, other=0.0)
            grad_weight += grad_logits[:, None] * pooled[None, :]
            grad_bias += grad_logits
            partial = tl.sum(grad_logits[:, None] * weight, axis=0)
            if o0 > 0:
                partial += tl.load(grad_pooled_ptr + b * M + gs, mask=mask_g, other=0.0)
            tl.store(grad_pooled_ptr + b * M + gs, partial, mask=mask_g)
        tl.debug_barrier()  # the next chunk reads what this one stored
        tl.store(grad_weight_ptr + os[:, None] * M + gs[None, :], grad_weight, mask=mask_o[:, None] & mask_g[None, :])
        tl.store(grad_bias_ptr + os, grad_bias, mask=mask_o)
    tl.debug_barrier()
    # Each position of map (b, g) gets a = d pooled / N; through the sigmoid, d = a s'; the standardization's
    # gradient is a inv (s' - mean s') - a s sum(s' s) / ((N - 1) std), with inv 0 for a constant map.
    for b in range(0, B):
        scale = tl.load(grad_pooled_ptr + b * M + gs, mask=mask_g, other=0.0) * inv_n
        rows = b * M + gs
        std = tl.load(stats_ptr + rows * 4 + 1, mask=mask_g, other=0.0)
        factor = tl.load(stats_ptr + rows * 4 + 3, mask=mask_g, other=0.0)
        coupling = tl.where(std > 0, inv_dof / tl.where(std > 0, std, 1.0), 0.0)
        slope_sum = tl.load(slopes_ptr + rows * 2, mask=mask_g, other=0.0)
        slope_dot = tl.load(slopes_ptr + rows * 2 + 1, mask=mask_g, other=0.0)
        tl.store(coef_ptr + rows * 3, slope_sum / N, mask=mask_g)
        tl.store(coef_ptr + rows * 3 + 1, scale * factor, mask=mask_g)
        tl.store(coef_ptr + rows * 3 + 2, -scale * slope_dot * coupling, mask=mask_g)


@_on_input_device
def saliency_sums(maps: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Per map and tile, the sum of ``sigmoid(standardized maps)``: ``(B, m, N)`` maps (any float dtype) ->
    ``(B * m, T)`` float32."""
    launch = _launch(maps, maps.shape[1])
    partials = torch.empty(launch.grid, device=maps.device, dtype=torch.float32)
    _saliency_sum_kernel[launch.grid](
        maps, stats, partials, launch.positions, launch.tiles, BLOCK_N=launch.block_n, num_warps=launch.num_warps
    )
    return partials


def _gate_blocks(groups: int, out_features: int, per_group_channels: int) -> tuple[int, int, int]:
    block_m = triton.next_power_of_2(groups)
    block_o = max(1, min(triton.next_power_of_2(out_features), GATE_TILE_ELEMENTS // block_m))
    return block_m, block_o, min(triton.next_power_of_2(per_group_channels), 64)


@_on_input_device
def cga_gate(
    saliency_sums: torch.Tensor,
    positions: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    channels: int,
    feature_dtype: torch.dtype,
    per_group: bool,
) -> tuple[torch.Tensor, ...]:
    """CGA's gate from the per-tile saliency sums ``(B * m, T)``: ``(pooled (B, m), gate kept (B, O), gate returned
    (B, O), channel weights (B, C) in feature_dtype)``, float32 but the last."""
    maps, tiles = saliency_sums.shape
    out_features, groups = weight.shape
    batch = maps // groups
    device = saliency_sums.device
    pooled = torch.empty((batch, groups), device=device, dtype=torch.float32)
    gate = torch.empty((batch, out_features), device=device, dtype=torch.float32)
    gate_out = torch.empty_like(gate)
    channel_weights = torch.empty((batch, channels), device=device, dtype=feature_dtype)
    per_group_channels = channels // out_features if per_group else 1
    block_m, block_o, block_k = _gate_blocks(groups, out_features, per_group_channels)
    block_t = max(1, min(triton.next_power_of_2(tiles), 64, GATE_TILE_ELEMENTS // block_m))
    _cga_gate_kernel[(batch,)](
        saliency_sums,
        weight,
        bias,
        pooled,
        gate,
        gate_out,
        channel_weights,
        groups,
        tiles,
        out_features,
        per_group_channels,
        1.0 / positions,
        PER_GROUP=per_group,
        BLOCK_M=block_m,
        BLOCK_T=block_t,
        BLOCK_O=block_o,
        BLOCK_K=block_k,
    )
    return pooled, gate, gate_out, channel_weights


@_on_input_device
def cga_gate_backward(
    channel_sums: torch.Tensor,
    grad_gate: torch.Tensor,
    gate: torch.Tensor,
    pooled: torch.Tensor,
    weight: torch.Tensor,
    slopes: torch.Tensor,
    stats: torch.Tensor,
    positions: int,
    per_group: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad W (O, m), grad b (O,), coef (B * m, 3))`` float32, for :func:`scale_add`'s maps' gradient."""
    batch, channels = channel_sums.shape
    out_features, groups = weight.shape
    device = channel_sums.device
    grad_weight = torch.empty((out_features, groups), device=device, dtype=torch.float32)
    grad_bias = torch.empty((out_features,), device=device, dtype=torch.float32)
    grad_pooled = torch.empty((batch, groups), device=device, dtype=torch.float32)
    coef = torch.empty((batch * groups, 3), device=device, dtype=torch.float32)
    per_group_channels = channels // out_features if per_group else 1
    block_m, block_o, block_k = _gate_blocks(groups, out_features, per_group_channels)
    _cga_gate_backward_kernel[(1,)](
        channel_sums,
        grad_gate.contiguous(),
        gate,
        pooled,
        weight,
        slopes,
        stats,
        grad_weight,
        grad_bias,
        grad_pooled,
        coef,
        batch,
        groups,
        out_features,
        per_group_channels,
        positions,
        1.0 / positions,
        _inv_dof(positions),
        PER_GROUP=per_group,
        BLOCK_M=block_m,
        BLOCK_O=block_o,
        BLOCK_K=block_k,
    )
    return grad_weight, grad_bias, coef
