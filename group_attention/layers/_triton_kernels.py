"""Triton kernels for the layers' CUDA path: each pass over a feature map is one kernel.

Every kernel sees a contiguous ``(B, C, *spatial)`` tensor as rows of ``N`` positions (row ``b * C + c``) and a
group ``g`` of ``K = C / m`` consecutive channels as ``K`` consecutive rows; a program handles one group (or one row)
and one tile of ``BLOCK_N`` positions. Reductions over space are written per tile and summed by a second, small
step, so results do not depend on scheduling (no atomics).

The launch wrappers take and return torch tensors; :mod:`._kernels` decides when they are used. The module imports
only where Triton is installed. With ``TRITON_INTERPRET=1`` the kernels also run on CPU tensors (slowly), which is
how the test suite checks them on machines without a GPU.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, TypeVar

import torch
import triton
import triton.language as tl

# Elements of one (channels x positions) tile a program holds; channels beyond BLOCK_K are looped over.
TILE_ELEMENTS = 4096
MAX_BLOCK_K = 16
GATE_TILE_ELEMENTS = 8192  # the largest (outputs x groups) or (groups x tiles) block of CGA's gate kernels
MAX_BLOCK_N = 2048
MAX_INLINE_SUM_TILES = 64  # per-tile sums a program may read itself; more are merged by one reduction first
MAX_GRID_TILES = 65535  # CUDA's limit on a grid's second dimension, which counts the tiles
STATS_FIELDS = 4  # mean, std, inv = 1 / (std + eps), scale = inv or 0 for a constant map


_Wrapper = TypeVar("_Wrapper", bound=Callable)


def _on_input_device(wrapper: _Wrapper) -> _Wrapper:
    """Run a launch wrapper with its first argument's CUDA device current: Triton launches on the current device,
    whichever device the tensors are on (``model.to("cuda:1")`` without ``torch.cuda.set_device(1)``)."""

    @functools.wraps(wrapper)
    def on_device(first: torch.Tensor, *args, **kwargs):
        if first.is_cuda and first.device.index != torch.cuda.current_device():
            with torch.cuda.device(first.device):
                return wrapper(first, *args, **kwargs)
        return wrapper(first, *args, **kwargs)

    return on_device  # type: ignore[return-value]


class _Launch(NamedTuple):
    """How a kernel over ``groups`` groups of ``per_group`` rows of ``positions`` is laid out: one program per group
    and tile of ``block_n`` positions, ``block_k`` rows at a time."""

    batch: int
    groups: int
    positions: int
    per_group: int
    block_k: int
    block_n: int
    tiles: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.batch * self.groups, self.tiles

    @property
    def meta(self) -> dict[str, int]:
        """The block sizes and warps, as keyword arguments of a launch."""
        return {"BLOCK_K": self.block_k, "BLOCK_N": self.block_n, "num_warps": self.num_warps}

    @property
    def num_warps(self) -> int:
        return 8 if self.block_k * self.block_n >= TILE_ELEMENTS else 4


def _launch(x: torch.Tensor, groups: int, channels: "int | None" = None) -> _Launch:
    """The layout for ``(B, C, *spatial)`` features ``x`` (``C`` = ``channels`` when given) in ``groups`` groups;
    for maps, ``groups`` is their count and each group is one row."""
    channels = x.shape[1] if channels is None else channels
    positions = x[0, 0].numel()
    per_group = channels // groups
    block_k = min(triton.next_power_of_2(per_group), MAX_BLOCK_K)
    block_n = max(16, min(MAX_BLOCK_N, TILE_ELEMENTS // block_k, triton.next_power_of_2(positions)))
    # Beyond 65535 tiles (over 16.7M positions per channel for the widest groups) the tiles grow instead.
    block_n = max(block_n, triton.next_power_of_2(triton.cdiv(positions, MAX_GRID_TILES)))
    return _Launch(x.shape[0], groups, positions, per_group, block_k, block_n, triton.cdiv(positions, block_n))


def _inv_dof(positions: int) -> float:
    """``1 / max(N - 1, 1)``: the unbiased variance's normalization (a single position has no spread)."""
    return 1.0 / max(positions - 1, 1)


@triton.jit
def _map_tile(src_ptr, coef_ptr, row0, offs_n, mask_n, N, K,
              HAS_COEF: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """``sum_k coef[row0 + k] * src[row0 + k, offs_n]`` (coef 1 when absent) in float32, one tile of a group."""
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(row0, k0, K, offs_n, mask_n, N, BLOCK_K)
        tile = tl.load(src_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_COEF:
            coef = tl.load(coef_ptr + rows, mask=mask_k, other=0.0).to(tl.float32)
            tile = tile * coef[:, None]
        acc += tl.sum(tile, axis=0)
    return acc


@triton.jit
def _load_stats(stats_ptr, bg):
    base = stats_ptr + bg * 4
    return tl.load(base), tl.load(base + 1), tl.load(base + 2), tl.load(base + 3)


@triton.jit
def _program_tile(N, BLOCK_N: tl.constexpr):
    """This program's group (or map) ``bg``, tile ``t``, its positions and their mask."""
    bg = tl.program_id(0)
    t = tl.program_id(1)
    offs_n = t * BLOCK_N + tl.arange(0, BLOCK_N)
    return bg, t, offs_n, offs_n < N


@triton.jit
def _rows_tile(row0, k0, K, offs_n, mask_n, N, BLOCK_K: tl.constexpr):
    """Rows ``row0 + k0 ..`` (up to ``BLOCK_K`` of ``K``) of a tile: the rows (int64), their mask, the elements'
    offsets and mask."""
    ks = k0 + tl.arange(0, BLOCK_K)
    mask_k = ks < K
    rows = (row0 + ks).to(tl.int64)
    return rows, mask_k, rows[:, None] * N + offs_n[None, :], mask_k[:, None] & mask_n[None, :]


@triton.jit
def _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N):
    """A tile of map ``bg`` standardized with its statistics (0 where masked or constant), float32."""
    mean, _std, _inv, scale = _load_stats(stats_ptr, bg)
    values = tl.load(maps_ptr + bg.to(tl.int64) * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    return tl.where(mask_n, (values - mean) * scale, 0.0)


@triton.jit
def _group_maps_kernel(src_ptr, coef_ptr, maps_ptr, part_ptr, N, K, T,
                       HAS_COEF: tl.constexpr, STORE_MAPS: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    """Group maps (sums of a group's rows, optionally weighted) and per-tile (sum, M2, max, min) of each map."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    values = _map_tile(src_ptr, coef_ptr, bg * K, offs_n, mask_n, N, K, HAS_COEF, BLOCK_K, BLOCK_N)
    if STORE_MAPS:
        tl.store(maps_ptr + bg.to(tl.int64) * N + offs_n, values, mask=mask_n)
    count = tl.minimum(N - t * BLOCK_N, BLOCK_N).to(tl.float32)
    total = tl.sum(tl.where(mask_n, values, 0.0), axis=0)
    centered = tl.where(mask_n, values - total / count, 0.0)
    base = part_ptr + (bg * T + t) * 4
    tl.store(base, total)
    tl.store(base + 1, tl.sum(centered * centered, axis=0))
    tl.store(base + 2, tl.max(tl.where(mask_n, values, -float("inf")), axis=0))
    tl.store(base + 3, tl.min(tl.where(mask_n, values, float("inf")), axis=0))


@triton.jit
def _combine_stats_kernel(part_ptr, stats_ptr, N, T, eps, inv_dof, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    """Per map: mean, unbiased std (0 for a constant map), ``1 / (std + eps)`` and the centred maps' factor.

    Tile statistics are merged with Chan et al.'s formula, ``M2 = sum_t M2_t + n_t (mean_t - mean)^2``;
    ``inv_dof`` is ``1 / max(N - 1, 1)``.
    """
    bg = tl.program_id(0)
    totals = tl.zeros((BLOCK_T,), dtype=tl.float32)
    highs = tl.full((BLOCK_T,), -float("inf"), dtype=tl.float32)
    lows = tl.full((BLOCK_T,), float("inf"), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        mask = ts < T
        base = part_ptr + (bg * T + ts) * 4
        totals += tl.load(base, mask=mask, other=0.0)
        highs = tl.maximum(highs, tl.load(base + 2, mask=mask, other=-float("inf")))
        lows = tl.minimum(lows, tl.load(base + 3, mask=mask, other=float("inf")))
    mean = tl.sum(totals, axis=0) / N
    m2s = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        mask = ts < T
        base = part_ptr + (bg * T + ts) * 4
        count = tl.where(mask, tl.minimum(N - ts * BLOCK_N, BLOCK_N), 1).to(tl.float32)
        delta = tl.where(mask, tl.load(base, mask=mask, other=0.0) / count - mean, 0.0)
        m2s += tl.load(base + 1, mask=mask, other=0.0) + count * delta * delta
    std = tl.sqrt(tl.maximum(tl.sum(m2s, axis=0) * inv_dof, 0.0))
    std = tl.where(tl.max(highs, axis=0) == tl.min(lows, axis=0), 0.0, std)
    inv = 1.0 / (std + eps)
    base = stats_ptr + bg * 4
    tl.store(base, mean)
    tl.store(base + 1, std)
    tl.store(base + 2, inv)
    tl.store(base + 3, tl.where(std > 0, inv, 0.0))


@triton.jit
def _saliency_sum_kernel(maps_ptr, stats_ptr, part_ptr, N, T, BLOCK_N: tl.constexpr):
    """Per tile of each map, the sum of ``sigmoid((t - mean) * scale)`` (CGA's pooled saliency)."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    saliency = tl.sigmoid(_standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N))
    tl.store(part_ptr + bg * T + t, tl.sum(tl.where(mask_n, saliency, 0.0), axis=0))


@triton.jit
def _row_dot_kernel(a_ptr, b_ptr, maps_ptr, stats_ptr, dot_ptr, sig_ptr, N, K, T,
                    HAS_MAPS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per row and tile, ``sum a * b``; with maps, also per map and tile the sums of ``s'`` and ``s' * s`` where
    ``s`` is the standardized map and ``s'`` the sigmoid's derivative at it (CGA's backward)."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        a = tl.load(a_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(dot_ptr + rows * T + t, tl.sum(a * b, axis=1), mask=mask_k)
    if HAS_MAPS:
        standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
        saliency = tl.sigmoid(standardized)
        slope = tl.where(mask_n, saliency * (1.0 - saliency), 0.0)
        tl.store(sig_ptr + (bg * T + t) * 2, tl.sum(slope, axis=0))
        tl.store(sig_ptr + (bg * T + t) * 2 + 1, tl.sum(slope * standardized, axis=0))


@triton.jit
def _scale_add_kernel(g_ptr, w_ptr, shift_ptr, maps_ptr, stats_ptr, coef_ptr, out_ptr, N, K,
                      HAS_SHIFT: tl.constexpr, HAS_MAPS: tl.constexpr, BLOCK_K: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    """``out[r] = g[r] * w[r] + shift[r] + d(p)`` for the rows of a group, where
    ``d = c1 (s' - c0) + c2 s`` with ``s`` the group's standardized map, ``s'`` the sigmoid's derivative at it and
    ``(c0, c1, c2)`` per map (the gradient through CGA's standardize-sigmoid-pool; ``c0`` is the mean of ``s'``, so
    a constant map's gradient is exactly 0)."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    if HAS_MAPS:
        standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
        saliency = tl.sigmoid(standardized)
        c0 = tl.load(coef_ptr + bg * 3)
        c1 = tl.load(coef_ptr + bg * 3 + 1)
        c2 = tl.load(coef_ptr + bg * 3 + 2)
        added = c1 * (saliency * (1.0 - saliency) - c0) + c2 * standardized
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows, mask=mask_k, other=0.0).to(tl.float32)
        out = g * w[:, None]
        if HAS_SHIFT:
            out += tl.load(shift_ptr + rows, mask=mask_k, other=0.0).to(tl.float32)[:, None]
        if HAS_MAPS:
            out += added[None, :]
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


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
def _attend_kernel(low_ptr, up_ptr, maps_ptr, stats_ptr, out_ptr, G, N, K, W_out, h, w, scale_h, scale_w,
                   BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
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
def _attend_backward_kernel(grad_ptr, out_ptr, maps_ptr, stats_ptr, grad_low_ptr, grad_att_ptr, G, N, K, W_out,
                            h, w, scale_h, scale_w, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
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
def _maps_gradient_dot_kernel(x_ptr, grad_ptr, maps_ptr, stats_ptr, sums_ptr, dot_ptr, N, K, T, T_SUMS, inv_dof,
                              BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
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
def _affine_gate(maps_ptr, stats_ptr, affine_ptr, bg, G, offs_n, mask_n, N):
    """SGE's gate ``sigmoid(gamma s + beta)`` on a tile of map ``bg``, with the standardized map ``s``."""
    gamma = tl.load(affine_ptr + (bg % G) * 2).to(tl.float32)
    beta = tl.load(affine_ptr + (bg % G) * 2 + 1).to(tl.float32)
    standardized = _standardized_tile(maps_ptr, stats_ptr, bg, offs_n, mask_n, N)
    return tl.sigmoid(gamma * standardized + beta), standardized, gamma


@triton.jit
def _gate_groups_kernel(x_ptr, maps_ptr, stats_ptr, affine_ptr, out_ptr, G, N, K,
                        BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """SGE's output: each group's rows times its gate."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    gate, _s, _gamma = _affine_gate(maps_ptr, stats_ptr, affine_ptr, bg, G, offs_n, mask_n, N)
    for k0 in range(0, K, BLOCK_K):
        _rows, _mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, (x * gate[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gate_groups_backward_sums_kernel(g_ptr, x_ptr, maps_ptr, stats_ptr, affine_ptr, grad_affine_ptr, map_part_ptr,
                                      row_part_ptr, G, N, K, T, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
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
def _gate_groups_backward_kernel(g_ptr, maps_ptr, stats_ptr, affine_ptr, grad_affine_ptr, coef_ptr, mean_ptr,
                                 shift_ptr, out_ptr, G, N, K, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
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
def _doubled_adjoint_sums_kernel(grad_ptr, maps_ptr, stats_ptr, out_ptr, part_ptr, N, T, h, w,
                                 BLOCK_N: tl.constexpr):
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
def _cga_gate_kernel(part_ptr, weight_ptr, bias_ptr, pooled_ptr, gate_ptr, gate_out_ptr, channel_ptr, M, T, O, K,
                     inv_n, PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_T: tl.constexpr,
                     BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """CGA's gate for one sample: the pooled saliency (mean over the tiles' sums), ``sigmoid(W pooled + b)`` (kept
    and returned, two copies) and the weight of every channel in the features' dtype."""
    b = tl.program_id(0)
    gs = tl.arange(0, BLOCK_M)
    mask_g = gs < M
    sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        tile = tl.load(part_ptr + (b * M + gs)[:, None] * T + ts[None, :],
                       mask=mask_g[:, None] & (ts < T)[None, :], other=0.0)
        sums += tl.sum(tile, axis=1)
    pooled = sums * inv_n
    tl.store(pooled_ptr + b * M + gs, pooled, mask=mask_g)
    for o0 in range(0, O, BLOCK_O):
        os = o0 + tl.arange(0, BLOCK_O)
        mask_o = os < O
        weight = tl.load(weight_ptr + os[:, None] * M + gs[None, :], mask=mask_o[:, None] & mask_g[None, :],
                         other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + os, mask=mask_o, other=0.0).to(tl.float32)
        gate = tl.sigmoid(tl.sum(weight * pooled[None, :], axis=1) + bias)
        tl.store(gate_ptr + b * O + os, gate, mask=mask_o)
        tl.store(gate_out_ptr + b * O + os, gate, mask=mask_o)
        if PER_GROUP:
            for k0 in range(0, K, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                channels = os[:, None] * K + ks[None, :]
                values = tl.broadcast_to(gate[:, None], (BLOCK_O, BLOCK_K))
                tl.store(channel_ptr + b * O * K + channels, values.to(channel_ptr.dtype.element_ty),
                         mask=mask_o[:, None] & (ks < K)[None, :])
        else:
            tl.store(channel_ptr + b * O + os, gate.to(channel_ptr.dtype.element_ty), mask=mask_o)


@triton.jit
def _cga_gate_backward_kernel(sums_ptr, grad_gate_ptr, gate_ptr, pooled_ptr, weight_ptr, slopes_ptr, stats_ptr,
                              grad_weight_ptr, grad_bias_ptr, grad_pooled_ptr, coef_ptr, B, M, O, K, N, inv_n,
                              inv_dof, PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr,
                              BLOCK_K: tl.constexpr):
    """CGA's gate backward for the whole batch in one program: from the per-channel sums of ``gy * x`` and the
    returned gate's own gradient, the gradients of ``W`` and ``b``, and per map the coefficients ``(c0, c1, c2)``
    of the maps' gradient ``c1 (s' - c0) + c2 s`` (see ``_scale_add_kernel``)."""
    gs = tl.arange(0, BLOCK_M)
    mask_g = gs < M
    for o0 in range(0, O, BLOCK_O):
        os = o0 + tl.arange(0, BLOCK_O)
        mask_o = os < O
        weight = tl.load(weight_ptr + os[:, None] * M + gs[None, :], mask=mask_o[:, None] & mask_g[None, :],
                         other=0.0).to(tl.float32)
        grad_weight = tl.zeros((BLOCK_O, BLOCK_M), dtype=tl.float32)
        grad_bias = tl.zeros((BLOCK_O,), dtype=tl.float32)
        for b in range(0, B):
            if PER_GROUP:
                grad_gate = tl.zeros((BLOCK_O,), dtype=tl.float32)
                for k0 in range(0, K, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    channel_sums = tl.load(sums_ptr + b * O * K + os[:, None] * K + ks[None, :],
                                           mask=mask_o[:, None] & (ks < K)[None, :], other=0.0)
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


@triton.jit
def _maps_to_rows_kernel(maps_ptr, factor_ptr, shift_ptr, out_ptr, N, K, BLOCK_K: tl.constexpr,
                         BLOCK_N: tl.constexpr):
    """``out[r] = map[g] * factor[r] + shift[r]`` for the ``K`` rows ``r`` of each group ``g`` (SGAU's ``d high``)."""
    bg, t, offs_n, mask_n = _program_tile(N, BLOCK_N)
    values = tl.load(maps_ptr + bg.to(tl.int64) * N + offs_n, mask=mask_n, other=0.0)
    for k0 in range(0, K, BLOCK_K):
        rows, mask_k, offsets, mask = _rows_tile(bg * K, k0, K, offs_n, mask_n, N, BLOCK_K)
        factor = tl.load(factor_ptr + rows, mask=mask_k, other=0.0)
        shift = tl.load(shift_ptr + rows, mask=mask_k, other=0.0)
        out = values[None, :] * factor[:, None] + shift[:, None]
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _trial_kernel(x_ptr, out_ptr, N, BLOCK_N: tl.constexpr):
    """``out[0] = sum sigmoid(x)`` over ``N`` values: proof that Triton compiles and runs on a device."""
    offs_n = tl.arange(0, BLOCK_N)
    values = tl.load(x_ptr + offs_n, mask=offs_n < N, other=0.0)
    tl.store(out_ptr, tl.sum(tl.where(offs_n < N, tl.sigmoid(values), 0.0), axis=0))


# ----------------------------------------------------------------------------------------------------------------
# Launch wrappers. Inputs are contiguous; maps and statistics are float32.


@_on_input_device
def group_maps(x: torch.Tensor, groups: int, eps: float, coef: "torch.Tensor | None" = None, *,
               store: bool = True) -> tuple["torch.Tensor | None", torch.Tensor]:
    """The ``(B, m, N)`` float32 group maps of ``x`` (sums of each group's channels, each weighted by ``coef``
    ``(B, C)`` when given; None when ``store`` is False) and their ``(B * m, 4)`` statistics (mean, std, inv,
    scale)."""
    launch = _launch(x, groups)
    maps = torch.empty((launch.batch, groups, launch.positions), device=x.device, dtype=torch.float32) \
        if store else None
    partials = torch.empty((launch.batch * groups, launch.tiles, 4), device=x.device, dtype=torch.float32)
    coef_arg = coef.contiguous() if coef is not None else partials
    _group_maps_kernel[launch.grid](x, coef_arg, maps if store else partials, partials, launch.positions,
                                    launch.per_group, launch.tiles, HAS_COEF=coef is not None, STORE_MAPS=store,
                                    **launch.meta)
    return maps, combine_stats(partials, launch.positions, launch.block_n, eps)


@_on_input_device
def combine_stats(partials: torch.Tensor, positions: int, block_n: int, eps: float) -> torch.Tensor:
    """``(maps, tiles, 4)`` tile statistics -> ``(maps, 4)`` mean, std, inv, scale."""
    maps, tiles = partials.shape[:2]
    stats = torch.empty((maps, STATS_FIELDS), device=partials.device, dtype=torch.float32)
    block_t = min(triton.next_power_of_2(tiles), 1024)
    _combine_stats_kernel[(maps,)](partials, stats, positions, tiles, float(eps), _inv_dof(positions),
                                   BLOCK_N=block_n, BLOCK_T=block_t)
    return stats


@_on_input_device
def saliency_sums(maps: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Per map and tile, the sum of ``sigmoid(standardized maps)``: ``(B, m, N)`` maps (any float dtype) ->
    ``(B * m, T)`` float32."""
    launch = _launch(maps, maps.shape[1])
    partials = torch.empty(launch.grid, device=maps.device, dtype=torch.float32)
    _saliency_sum_kernel[launch.grid](maps, stats, partials, launch.positions, launch.tiles,
                                      BLOCK_N=launch.block_n, num_warps=launch.num_warps)
    return partials


@_on_input_device
def row_dots(a: torch.Tensor, b: torch.Tensor, groups: int, maps: "torch.Tensor | None" = None,
             stats: "torch.Tensor | None" = None) -> tuple[torch.Tensor, "torch.Tensor | None"]:
    """Per channel, ``sum_p a * b`` (``(B, C)`` float32); with ``maps`` (``(B, m, N)``) and their ``stats``, also
    per map ``(sum s', sum s' s)`` (``(B * m, 2)``) for the standardized maps ``s``."""
    launch = _launch(a, groups)
    batch, channels = a.shape[:2]
    dots = torch.empty((batch * channels, launch.tiles), device=a.device, dtype=torch.float32)
    slopes = torch.empty((*launch.grid, 2), device=a.device, dtype=torch.float32) if maps is not None else None
    _row_dot_kernel[launch.grid](
        a, b, maps if maps is not None else dots, stats if stats is not None else dots, dots,
        slopes if slopes is not None else dots, launch.positions, launch.per_group, launch.tiles,
        HAS_MAPS=maps is not None, **launch.meta)
    return dots.sum(1).view(batch, channels), (slopes.sum(1) if slopes is not None else None)


@_on_input_device
def scale_add(g: torch.Tensor, weights: torch.Tensor, groups: int, *, shift: "torch.Tensor | None" = None,
              maps: "torch.Tensor | None" = None, stats: "torch.Tensor | None" = None,
              coef: "torch.Tensor | None" = None, out_dtype: "torch.dtype | None" = None) -> torch.Tensor:
    """``g * w_c + shift_c + (c1 (s' - c0) + c2 s)`` per group, in one pass: ``weights`` and ``shift`` are ``(B, C)``,
    ``coef`` ``(B * m, 3)`` per map ``(c0, c1, c2)``."""
    launch = _launch(g, groups)
    out = torch.empty(g.shape, device=g.device, dtype=out_dtype or g.dtype)
    dummy = weights
    _scale_add_kernel[launch.grid](
        g, weights.contiguous(), shift.contiguous() if shift is not None else dummy,
        maps if maps is not None else dummy, stats if stats is not None else dummy,
        coef.contiguous() if coef is not None else dummy, out, launch.positions, launch.per_group,
        HAS_SHIFT=shift is not None, HAS_MAPS=maps is not None, **launch.meta)
    return out


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
    _attend_kernel[launch.grid](low, up, maps, stats, out, groups, launch.positions, launch.per_group,
                                *_bilinear_args(maps.shape[2:], low.shape[2:]), **launch.meta)


@_on_input_device
def attend_backward(grad: torch.Tensor, out: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor,
                    low_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d low, dA)`` from the gradient of SGAU's output and the output: ``(B, C_low, H, W)`` in ``low_dtype``
    and ``(B, m, H, W)`` float32."""
    batch, channels, height, width = out.shape
    groups = maps.shape[1]
    launch = _launch(out, groups, channels // 2)
    grad_low = torch.empty((batch, channels // 2, height, width), device=out.device, dtype=low_dtype)
    grad_attention = torch.empty((batch, groups, height, width), device=out.device, dtype=torch.float32)
    _attend_backward_kernel[launch.grid](grad, out, maps, stats, grad_low, grad_attention, groups, launch.positions,
                                         launch.per_group, *_bilinear_args(maps.shape[2:], (height, width)),
                                         **launch.meta)
    return grad_low, grad_attention


@_on_input_device
def sigmoid_standardize_sums(grad: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Turn ``grad`` (at the maps' sigmoid, ``(B, m, *s)`` float32, contiguous) in place into the gradient at the
    standardized maps ``d``; return per map and tile ``(sum d, sum d s)``, ``(B * m, T, 2)``."""
    launch = _launch(maps, maps.shape[1])
    partials = torch.empty((*launch.grid, 2), device=maps.device, dtype=torch.float32)
    _sigmoid_standardize_sums_kernel[launch.grid](grad, maps, stats, partials, launch.positions, launch.tiles,
                                                  BLOCK_N=launch.block_n, num_warps=launch.num_warps)
    return partials


@_on_input_device
def maps_gradient_dot(x: torch.Tensor, grad: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor,
                      sums: torch.Tensor) -> torch.Tensor:
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
        x, grad, maps, stats, sums, dots, launch.positions, launch.per_group, launch.tiles, sum_tiles,
        _inv_dof(launch.positions), BLOCK_T=triton.next_power_of_2(sum_tiles), **launch.meta)
    return dots.sum(1).view(batch, channels)


@_on_input_device
def gate_groups(x: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """SGE's output ``x * sigmoid(gamma_g s + beta_g)`` per group; ``affine`` is ``(m, 2)`` float32."""
    groups = affine.shape[0]
    launch = _launch(x, groups)
    out = torch.empty_like(x)
    _gate_groups_kernel[launch.grid](x, maps, stats, affine, out, groups, launch.positions, launch.per_group,
                                     **launch.meta)
    return out


@_on_input_device
def gate_groups_backward_sums(g: torch.Tensor, x: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor,
                              affine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SGE's first backward pass: the pre-activation gradient ``a`` (``(B, m, N)`` float32), per map
    ``(sum a, sum a s)`` (``(B * m, 2)``) and per channel ``(sum x a, sum x s)`` (``(B * C, 2)``)."""
    groups = affine.shape[0]
    launch = _launch(x, groups)
    batch, channels = x.shape[:2]
    grad_affine = torch.empty((batch, groups, launch.positions), device=x.device, dtype=torch.float32)
    map_partials = torch.empty((*launch.grid, 2), device=x.device, dtype=torch.float32)
    row_partials = torch.empty((batch * channels, launch.tiles, 2), device=x.device, dtype=torch.float32)
    _gate_groups_backward_sums_kernel[launch.grid](
        g, x, maps, stats, affine, grad_affine, map_partials, row_partials, groups, launch.positions,
        launch.per_group, launch.tiles, **launch.meta)
    return grad_affine, map_partials.sum(1), row_partials.sum(1)


@_on_input_device
def gate_groups_backward(g: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor, affine: torch.Tensor,
                         grad_affine: torch.Tensor, coef: torch.Tensor, channel_mean: torch.Tensor,
                         shift: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """SGE's ``dx = g * gate + dm * mean_k + shift_k`` (``channel_mean`` and ``shift`` ``(B, C)`` float32)."""
    groups = affine.shape[0]
    launch = _launch(g, groups)
    out = torch.empty(g.shape, device=g.device, dtype=out_dtype)
    _gate_groups_backward_kernel[launch.grid](
        g, maps, stats, affine, grad_affine, coef.contiguous(), channel_mean.contiguous(), shift.contiguous(), out,
        groups, launch.positions, launch.per_group, **launch.meta)
    return out


@_on_input_device
def doubled_adjoint_sums(grad: torch.Tensor, maps: torch.Tensor, stats: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``grad`` ``(B, m, 2h, 2w)`` at the doubled attention and ``maps`` ``(B, m, h, w)``: the gradient at the
    standardized maps, ``d = Up^T(grad) * s'`` (``(B, m, h, w)`` float32), and per map and tile
    ``(sum d, sum d s)`` (``(B * m, T, 2)``)."""
    launch = _launch(maps, maps.shape[1])
    out = torch.empty_like(maps)
    partials = torch.empty((*launch.grid, 2), device=maps.device, dtype=torch.float32)
    _doubled_adjoint_sums_kernel[launch.grid](grad, maps, stats, out, partials, launch.positions, launch.tiles,
                                              *maps.shape[2:], BLOCK_N=launch.block_n, num_warps=launch.num_warps)
    return out, partials


def _gate_blocks(groups: int, out_features: int, per_group_channels: int) -> tuple[int, int, int]:
    block_m = triton.next_power_of_2(groups)
    block_o = max(1, min(triton.next_power_of_2(out_features), GATE_TILE_ELEMENTS // block_m))
    return block_m, block_o, min(triton.next_power_of_2(per_group_channels), 64)


@_on_input_device
def cga_gate(saliency_sums: torch.Tensor, positions: int, weight: torch.Tensor, bias: torch.Tensor, channels: int,
             feature_dtype: torch.dtype, per_group: bool) -> tuple[torch.Tensor, ...]:
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
    _cga_gate_kernel[(batch,)](saliency_sums, weight, bias, pooled, gate, gate_out, channel_weights, groups, tiles,
                               out_features, per_group_channels, 1.0 / positions, PER_GROUP=per_group,
                               BLOCK_M=block_m, BLOCK_T=block_t, BLOCK_O=block_o, BLOCK_K=block_k)
    return pooled, gate, gate_out, channel_weights


@_on_input_device
def cga_gate_backward(channel_sums: torch.Tensor, grad_gate: torch.Tensor, gate: torch.Tensor, pooled: torch.Tensor,
                      weight: torch.Tensor, slopes: torch.Tensor, stats: torch.Tensor, positions: int,
                      per_group: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        channel_sums, grad_gate.contiguous(), gate, pooled, weight, slopes, stats, grad_weight, grad_bias, grad_pooled,
        coef, batch, groups, out_features, per_group_channels, positions, 1.0 / positions,
        _inv_dof(positions), PER_GROUP=per_group, BLOCK_M=block_m, BLOCK_O=block_o, BLOCK_K=block_k)
    return grad_weight, grad_bias, coef


@_on_input_device
def maps_to_rows(maps: torch.Tensor, factor: torch.Tensor, shift: torch.Tensor, channels: int,
                 out_dtype: torch.dtype) -> torch.Tensor:
    """``(B, C, *s)``: each group's map ``(B, m, *s)`` times a per-channel ``factor`` plus a per-channel ``shift``
    (both ``(B, C)`` float32)."""
    launch = _launch(maps, maps.shape[1], channels)
    out = torch.empty((launch.batch, channels, *maps.shape[2:]), device=maps.device, dtype=out_dtype)
    _maps_to_rows_kernel[launch.grid](maps, factor.contiguous(), shift.contiguous(), out, launch.positions,
                                      launch.per_group, **launch.meta)
    return out


def trial(device: torch.device) -> torch.Tensor:
    """Compile and launch a small kernel on ``device``; returns ``sum(sigmoid([-1, 0, 1]))``, which is 1.5."""
    return _trial(torch.tensor([-1.0, 0.0, 1.0], device=device))


@_on_input_device
def _trial(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty(1, device=x.device)
    _trial_kernel[(1,)](x, out, x.numel(), BLOCK_N=4)
    return out
