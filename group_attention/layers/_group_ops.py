"""Group operations shared by CGA, SGE and SGAU.

All three layers split ``C`` channels into ``m`` groups, reduce each group to one spatial map, standardize that map
over space and squash it with a sigmoid. The helpers here hold that logic once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_EPS = 1e-5


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype for statistics over ``dtype`` features: at least float32, so fp16/bf16 sums cannot overflow."""
    return torch.promote_types(dtype, torch.float32)


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial dims of a ``(B, C, *spatial)`` tensor: ``(2, 3)`` for 2D maps, ``(2, 3, 4)`` for volumes."""
    return tuple(range(2, x.dim()))


def group_sum(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum each group of ``C / groups`` consecutive channels, in at least float32.

    Shape:
        ``(B, C, *spatial) -> (B, groups, *spatial)``. ``unflatten`` is a view for any memory format.
    """
    return x.unflatten(1, (groups, -1)).sum(2, dtype=stat_dtype(x.dtype))


def group_pooled_dot(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Per group, the dot product of each position's feature vector with the group's spatial mean.

    ``out[b, g, p] = sum_k x[b, g, k, p] * mean_p'(x[b, g, k, p'])`` without materializing ``x * mean``
    (a batched matrix product over the group's channels), in at least float32.

    Shape:
        ``(B, C, *spatial) -> (B, groups, *spatial)``.
    """
    batch, channels, *spatial = x.shape
    grouped = x.reshape(batch * groups, channels // groups, -1).to(stat_dtype(x.dtype))
    pooled = grouped.mean(2, keepdim=True)
    dot = torch.bmm(pooled.transpose(1, 2), grouped)
    return dot.reshape(batch, groups, *spatial)


class _SpatialStandardize(torch.autograd.Function):
    """``(t - mean) / (std + eps)`` over the trailing dims of a ``(R, N)`` tensor, with a hand-written backward.

    Autograd through ``var_mean``, a subtraction and a division keeps four map-sized temporaries and makes six
    passes backwards; the closed form below keeps the output and makes three:
    ``dt = (g - mean(g)) / (std + eps) - y * sum(g * y) / ((N - 1) std)``.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, eps: float) -> torch.Tensor:
        positions = rows.shape[1]
        variance, mean = torch.var_mean(rows, dim=1, keepdim=True, correction=1 if positions > 1 else 0)
        std = variance.sqrt()
        inv = 1.0 / (std + eps)
        standardized = torch.addcmul(-mean * inv, rows, inv)
        ctx.save_for_backward(standardized, std, inv)
        return standardized

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        standardized, std, inv = ctx.saved_tensors
        positions = standardized.shape[1]
        # A constant row (std == 0) standardizes to 0 whatever small change is made: its second term vanishes.
        scale = torch.where(std > 0, 1.0 / (std * max(positions - 1, 1)), torch.zeros_like(std))
        coupling = (grad * standardized).sum(1, keepdim=True) * scale
        grad_rows = grad * inv
        grad_rows.sub_(grad.mean(1, keepdim=True) * inv)
        grad_rows.addcmul_(standardized, coupling, value=-1.0)
        return grad_rows, None


def spatial_standardize(maps: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Standardize each ``(b, g)`` map over space: ``(t - mean) / (std + eps)``.

    ``std`` is the unbiased standard deviation, as in the SGE authors' code; a map of one position has no spread
    and standardizes to 0 instead of NaN, and a constant map standardizes to exactly 0.

    Shape:
        ``(B, G, *spatial) -> (B, G, *spatial)``.
    """
    rows = maps.reshape(maps.shape[0] * maps.shape[1], -1)
    return _SpatialStandardize.apply(rows, eps).view(maps.shape)


def expand_groups(group_values: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat each group's value for the ``channels / groups`` channels of the group.

    Shape:
        ``(B, G, *rest) -> (B, channels, *rest)``.
    """
    return group_values.repeat_interleave(channels // group_values.shape[1], dim=1)


def resize_to(maps: torch.Tensor, size: "torch.Size | tuple[int, ...]") -> torch.Tensor:
    """Linearly interpolate ``(B, G, *spatial)`` maps to ``size`` (bilinear in 2D, trilinear in 3D)."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)


def pad_or_crop_to(x: torch.Tensor, size: "torch.Size | tuple[int, ...]") -> torch.Tensor:
    """Zero-pad or centre-crop the spatial dims of ``x`` to ``size`` (U-Net's odd-size skip handling)."""
    pads: list[int] = []
    for current, target in zip(reversed(x.shape[2:]), reversed(tuple(size))):
        diff = target - current
        pads += [diff // 2, diff - diff // 2]
    if not any(pads):
        return x
    return F.pad(x, pads)
