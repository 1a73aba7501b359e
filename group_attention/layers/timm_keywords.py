"""The keyword arguments timm passes to an attention layer, handled in one place for CGA, SE and SGE.

timm builds a model's ``attn_layer``/``se_layer`` as ``layer(channels, **keywords)`` with keywords from
:data:`TIMM_KEYWORDS` (cspnet passes ``act_layer``; efficientnet probes ``layer(8, rd_ratio=1.0)`` and passes
``act_layer`` and ``rd_ratio``). SE takes them as its bottleneck and activations; CGA and SGE have neither, so they
accept and ignore them, except a gate other than their equation's sigmoid, which they refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from .._checks import check_positive_int, check_positive_real

#: The keyword arguments of timm's attention-layer contract, in the order timm's own ``SEModule`` takes them.
TIMM_KEYWORDS = ("rd_ratio", "rd_channels", "rd_divisor", "act_layer", "gate_layer")


@dataclass(frozen=True)
class TimmKeywords:
    """timm's attention-layer keyword arguments, checked once (see the module docstring).

    Args:
        rd_ratio: bottleneck width as a share of the channels (SE's ``1 / reduction``).
        rd_channels: bottleneck width; overrides ``rd_ratio``.
        rd_divisor: what timm rounds the width to a multiple of; always ignored (SE's width is not rounded, which
            gives Table 1's Baseline+SE parameter count).
        act_layer: hidden activation: a class, a timm name such as ``"leaky_relu"``, or None (SE's default ReLU).
        gate_layer: gating activation: a class, a timm name, or None (the sigmoid).
    """

    rd_ratio: "float | None" = None
    rd_channels: "int | None" = None
    rd_divisor: object = None
    act_layer: "type[nn.Module] | str | None" = None
    gate_layer: "type[nn.Module] | str | None" = None

    @classmethod
    def parse(cls, owner: str, keywords: "dict[str, Any]") -> "TimmKeywords":
        """The keywords ``owner`` received beyond its own; ``TypeError`` names any that timm does not pass."""
        unknown = sorted(set(keywords) - {field.name for field in fields(cls)})
        if unknown:
            raise TypeError(
                f"{owner} got unexpected keyword arguments {unknown}; besides its own it takes timm's "
                f"{list(TIMM_KEYWORDS)}"
            )
        return cls(**keywords)

    def require_sigmoid_gate(self, owner: str) -> None:
        """Accept only a sigmoid gate (``None``, ``"sigmoid"`` or ``nn.Sigmoid``): ``owner``'s equation fixes it,
        and another gate would silently change it. The other keywords are ignored."""
        gate = self.gate_layer
        if gate is None or gate is nn.Sigmoid or gate == "sigmoid":
            return
        raise ValueError(
            f"{owner}: gate_layer must be the sigmoid of its equation (None, 'sigmoid' or nn.Sigmoid), "
            f"got {gate!r}; use SE for another gate"
        )

    def bottleneck_width(self, channels: int, reduction: int) -> int:
        """The hidden width: ``rd_channels``, else ``channels * rd_ratio``, else ``channels // reduction``; at least
        one, not rounded to ``rd_divisor``."""
        if self.rd_channels is not None:
            return check_positive_int("rd_channels", self.rd_channels)
        ratio = 1 / reduction if self.rd_ratio is None else check_positive_real("rd_ratio", self.rd_ratio)
        return max(1, int(channels * ratio + 1e-9))

    def activation(self) -> nn.Module:
        """The hidden activation ``act_layer`` (default ``nn.ReLU``)."""
        return _activation("act_layer", self.act_layer, nn.ReLU)

    def gate(self) -> nn.Module:
        """The gating activation ``gate_layer`` (default ``nn.Sigmoid``)."""
        return _activation("gate_layer", self.gate_layer, nn.Sigmoid)


def _activation(name: str, layer: "type[nn.Module] | str | None", default: type[nn.Module]) -> nn.Module:
    """An activation module from a class, a timm activation name, or None (``default``)."""
    if layer is None:
        return default()
    if isinstance(layer, str):
        from timm.layers import get_act_layer  # timm's names, as its attention layers take them

        try:
            resolved = get_act_layer(layer)
        except Exception as error:  # noqa: BLE001 - timm raises KeyError or others for unknown names
            raise ValueError(
                f"{name}: unknown activation name {layer!r} (timm's names, e.g. 'relu', "
                f"'leaky_relu', 'silu', 'sigmoid')"
            ) from error
        return resolved()
    if isinstance(layer, nn.Module):
        return layer
    if not callable(layer):
        raise TypeError(f"{name} must be an activation class, a timm activation name or None, got {layer!r}")
    return layer()
