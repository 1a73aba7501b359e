"""Names of the attention layers and skip connections: the only place that knows them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .layers import CGA, SE, SGAU, SGE, ConcatSkip

ATTENTION_LAYERS: dict[str, type[nn.Module]] = {"cga": CGA, "se": SE, "sge": SGE}
SKIP_CONNECTIONS: dict[str, type[nn.Module]] = {"concat": ConcatSkip, "sgau": SGAU}


def get_attention(name: Any) -> "Callable[..., nn.Module] | None":
    """The layer class for ``name``: a registered name (case-insensitive), a class/callable, or None/"none"."""
    if name is None or (isinstance(name, str) and name.lower() == "none"):
        return None
    if isinstance(name, nn.Module):
        raise TypeError(
            f"attention must be a name, a class or a factory taking the channel count, not a module "
            f"instance ({type(name).__name__}); pass its class (e.g. CGA or partial(CGA, groups=16))"
        )
    if callable(name):
        return name
    if isinstance(name, str) and name.lower() in ATTENTION_LAYERS:
        return ATTENTION_LAYERS[name.lower()]
    raise ValueError(
        f"unknown attention {name!r}; valid names: {sorted(ATTENTION_LAYERS) + ['none']} (or None, or a class)"
    )


def create_attention(name: Any, channels: int, **kwargs: Any) -> nn.Module:
    """Build the attention layer ``name`` for ``channels`` channels.

    Args:
        name: ``"cga"``, ``"se"``, ``"sge"`` (case-insensitive), a module class or factory taking the channel count
            first, or ``None``/``"none"``.
        channels: number of channels of the feature map the layer will see.
        **kwargs: passed to the layer (e.g. ``groups=16``).

    Returns:
        The layer; ``nn.Identity()`` for ``None``/``"none"`` (so a model's ``forward`` needs no branch).

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    Example:
        >>> create_attention("cga", 64, groups=16)
        CGA(...)
    """
    layer = get_attention(name)
    return nn.Identity() if layer is None else layer(channels, **kwargs)


def get_skip(name: Any) -> "Callable[..., nn.Module]":
    """The skip-connection class for ``"concat"`` or ``"sgau"`` (or a class/callable, returned as is)."""
    if callable(name):
        return name
    if isinstance(name, str) and name.lower() in SKIP_CONNECTIONS:
        return SKIP_CONNECTIONS[name.lower()]
    raise ValueError(f"unknown skip connection {name!r}; valid names: {sorted(SKIP_CONNECTIONS)} (or a class)")
