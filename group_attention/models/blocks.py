"""Convolution blocks of the U-Net encoder and decoder, for 1D, 2D and 3D inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from .._checks import check_positive_int

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
NORMS: dict[str, Callable[[int, int], nn.Module]] = {
    "batch": lambda dims, c: getattr(nn, f"BatchNorm{dims}d")(c),
    "instance": lambda dims, c: getattr(nn, f"InstanceNorm{dims}d")(c, affine=True),
    "group": lambda dims, c: nn.GroupNorm(math.gcd(8, c), c),  # 8 groups, or fewer where 8 does not divide c
    "none": lambda dims, c: nn.Identity(),
}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}


def check_spatial_dims(spatial_dims: Any) -> int:
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or spatial_dims not in CONV:
        raise ValueError(f"spatial_dims must be one of {sorted(CONV)}, got {spatial_dims!r}")
    return spatial_dims


def make_norm(norm: Any, spatial_dims: int, channels: int) -> nn.Module:
    """A normalization layer from a name in ``NORMS`` (or None), or a class called with the channel count."""
    if norm is None:
        return nn.Identity()
    if isinstance(norm, str):
        if norm.lower() not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid names: {sorted(NORMS)} (or None, or a class)")
        return NORMS[norm.lower()](spatial_dims, channels)
    if not callable(norm):
        raise TypeError(f"norm must be a name in {sorted(NORMS)}, None or a class, got {norm!r}")
    return norm(channels)


def make_activation(act: Any) -> nn.Module:
    """An activation from a name in ``ACTIVATIONS``, or a class called without arguments."""
    if isinstance(act, str):
        if act.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown act {act!r}; valid names: {sorted(ACTIVATIONS)} (or a class)")
        return ACTIVATIONS[act.lower()]()
    if not callable(act):
        raise TypeError(f"act must be a name in {sorted(ACTIVATIONS)} or a class, got {act!r}")
    return act()


class ConvBlock(nn.Sequential):
    """``n_convs`` times (3x3 convolution with bias, normalization, activation), as in U-Net.

    Shape:
        ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_convs: int = 2,
        *,
        spatial_dims: int = 2,
        norm: Any = "batch",
        act: Any = "relu",
    ) -> None:
        check_positive_int("n_convs", n_convs)
        conv = CONV[check_spatial_dims(spatial_dims)]
        layers: list[nn.Module] = []
        for index in range(n_convs):
            layers += [
                conv(in_channels if index == 0 else out_channels, out_channels, kernel_size=3, padding=1),
                make_norm(norm, spatial_dims, out_channels),
                make_activation(act),
            ]
        super().__init__(*layers)
