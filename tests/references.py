"""Float64 references written directly from the papers' equations, one loop per group, for the tests only."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def standardize(t: torch.Tensor, eps: float) -> torch.Tensor:
    """(t - mean) / (unbiased std + eps) over all positions of a 1D tensor; 0 for a single position."""
    if t.numel() == 1:
        return torch.zeros_like(t)
    return (t - t.mean()) / (t.std(unbiased=True) + eps)


def cga(x, weight, bias, groups, gate="group", eps=1e-5):
    x = x.double()
    batch, channels = x.shape[:2]
    per_group = channels // groups
    out = torch.empty_like(x)
    for b in range(batch):
        pooled = torch.empty(groups, dtype=torch.float64)
        for g in range(groups):
            summed = x[b, g * per_group : (g + 1) * per_group].sum(0).flatten()  # Div + channel sum
            pooled[g] = torch.sigmoid(standardize(summed, eps)).mean()  # sigma(Norm(.)), then GP
        weights = torch.sigmoid(weight.double() @ pooled + bias.double())  # sigma(Conv(GP(Submodule)))
        for c in range(channels):
            out[b, c] = x[b, c] * (weights[c // per_group] if gate == "group" else weights[c])
    return out


def se(x, w1, b1, w2, b2):
    x = x.double()
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        pooled = x[b].flatten(1).mean(1)
        weights = torch.sigmoid(w2.double() @ torch.relu(w1.double() @ pooled + b1.double()) + b2.double())
        for c in range(x.shape[1]):
            out[b, c] = x[b, c] * weights[c]
    return out


def sge(x, weight, bias, groups, eps=1e-5):
    x = x.double()
    batch, channels = x.shape[:2]
    per_group = channels // groups
    out = torch.empty_like(x)
    for b in range(batch):
        for g in range(groups):
            group = x[b, g * per_group : (g + 1) * per_group]
            flat = group.flatten(1)
            mean = flat.mean(1, keepdim=True)
            similarity = (flat * mean).sum(0)  # materialized x * GP(x), as the authors' code does
            gate = torch.sigmoid(standardize(similarity, eps) * weight[g].double() + bias[g].double())
            out[b, g * per_group : (g + 1) * per_group] = group * gate.view(group.shape[1:])
    return out


def sgau(low, high, up_weight, up_bias, groups, eps=1e-5):
    low, high = low.double(), high.double()
    batch, low_channels = low.shape[:2]
    high_channels = high.shape[1]
    low_per_group, high_per_group = low_channels // groups, high_channels // groups
    attended = torch.empty_like(low)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[low.dim() - 2]
    for b in range(batch):
        for g in range(groups):
            group = high[b, g * high_per_group : (g + 1) * high_per_group]
            flat = group.flatten(1)
            dot = (flat * flat.mean(1, keepdim=True)).sum(0)  # F^{n+1} (x) GP(F^{n+1}), summed over the group
            attention = torch.sigmoid(standardize(dot, eps)).view(1, 1, *group.shape[1:])
            attention = F.interpolate(attention, size=low.shape[2:], mode=mode, align_corners=False)[0, 0]
            chunk = low[b, g * low_per_group : (g + 1) * low_per_group]
            attended[b, g * low_per_group : (g + 1) * low_per_group] = chunk * attention + chunk  # with residual
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[low.dim() - 2]
    up = conv(high, up_weight.double(), up_bias.double(), stride=2)
    pads = []
    for current, target in zip(reversed(up.shape[2:]), reversed(low.shape[2:])):
        pads += [(target - current) // 2, (target - current) - (target - current) // 2]
    up = F.pad(up, pads)
    return torch.cat([attended, up], dim=1)
