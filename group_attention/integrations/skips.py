"""Turn the concatenating skip connections of existing U-Nets into SGAU skips (eq. 3 of Ye et al. 2020)."""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._checks import check_positive_int, divisors
from ..layers.group_ops import DEFAULT_EPS
from ..layers.sgau import SkipAttention
from ._wrap import InsertedModule, check_insertable, original
from .insert import InsertedAttention, declared_channels


class GatedSkip(InsertedModule):
    """A U-Net decoder block whose skip argument is gated by :class:`~group_attention.layers.SkipAttention` (SGAU's
    gate) before the block sees it.

    ``forward`` takes the block's own arguments; the high-level features are its first argument, the skip the
    argument named ``skip_argument`` (left alone when it is None). The state dict is the block's.

    Args:
        block: the decoder block (e.g. smp's ``UnetDecoderBlock``, MONAI's ``UpCat``).
        attention: the :class:`~group_attention.layers.SkipAttention` for the block's skip.
        skip_argument: the name of the block's ``forward`` argument that receives the skip features.
    """

    inserted_name = "skip_attention"

    def __init__(self, block: nn.Module, attention: SkipAttention, skip_argument: str) -> None:
        super().__init__(block, attention)
        names = list(inspect.signature(original(block).forward).parameters)
        self.skip_argument = skip_argument
        self.skip_index = names.index(skip_argument)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        high = args[0]
        if self.skip_argument in kwargs:
            if kwargs[self.skip_argument] is not None:
                kwargs[self.skip_argument] = self.inserted(kwargs[self.skip_argument], high)
        elif len(args) > self.skip_index and args[self.skip_index] is not None:
            args = args[: self.skip_index] + (self.inserted(args[self.skip_index], high),) + args[self.skip_index + 1 :]
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"skip_argument={self.skip_argument!r}"


@dataclass
class _Skip:
    """One concatenating skip of a supported U-Net: the block at ``parent.<attribute>`` (called ``name``) that joins
    ``channels`` skip channels passed as its ``forward`` argument ``argument`` to ``high_channels`` high-level ones."""

    name: str
    parent: nn.Module
    attribute: str
    channels: int
    high_channels: int
    argument: str

    @property
    def block(self) -> nn.Module:
        return getattr(self.parent, self.attribute)


def _smp_unet_skips(model: nn.Module) -> list[_Skip] | None:
    """segmentation_models_pytorch's ``Unet``: block ``i`` of the decoder gets the ``i``-th deepest skip, upsampled
    features first; encoders whose first stages return 0-channel placeholders have no skip there."""
    smp = sys.modules.get("segmentation_models_pytorch")
    if smp is None or not isinstance(model, smp.Unet):
        return None
    skip_channels = list(model.encoder.out_channels)[1:][::-1][1:]  # the decoder's own order (see UnetDecoder)
    skips = []
    for index, block in enumerate(model.decoder.blocks):
        channels = skip_channels[index] if index < len(skip_channels) else 0
        if channels:
            high_channels = _first_conv(block).in_channels - channels  # its first conv sees Cat(up, skip)
            argument = _skip_argument(block, ("skip_connection", "skip"))
            skips.append(
                _Skip(f"decoder.blocks.{index}", model.decoder.blocks, str(index), channels, high_channels, argument)
            )
    return skips


def _monai_basic_unet_skips(model: nn.Module) -> list[_Skip] | None:
    """MONAI's ``BasicUNet`` (2D or 3D): ``upcat_k(x, x_e)`` joins the output of ``down_{k-1}`` (``conv_0`` for
    ``k = 1``)."""
    nets = sys.modules.get("monai.networks.nets")
    if nets is None or not isinstance(model, nets.BasicUNet):
        return None
    skips = []
    for level, encoder_stage in ((4, "down_3"), (3, "down_2"), (2, "down_1"), (1, "conv_0")):
        channels = declared_channels(original(getattr(model, encoder_stage)))
        if channels is None:
            raise ValueError(f"cannot tell the channels of BasicUNet.{encoder_stage}")
        attribute = f"upcat_{level}"
        block = getattr(model, attribute)
        high_channels = _first_conv(block).in_channels  # its first conv is the upsampling of x
        skips.append(_Skip(attribute, model, attribute, channels, high_channels, _skip_argument(block, ("x_e",))))
    return skips


#: The U-Nets :func:`sgau_skips` supports: their names, each with the function that finds the skips of such a model
#: (and returns None for a model of another kind).
SUPPORTED_UNETS: dict[str, Callable[[nn.Module], list[_Skip] | None]] = {
    "segmentation_models_pytorch.Unet": _smp_unet_skips,
    "monai.networks.nets.BasicUNet": _monai_basic_unet_skips,
}


def _first_conv(block: nn.Module) -> nn.modules.conv._ConvNd:
    for module in original(block).modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module
    raise ValueError(
        f"{type(original(block)).__name__} has no convolution; this version of the package is not supported"
    )


def _skip_argument(block: nn.Module, candidates: tuple[str, ...]) -> str:
    names = inspect.signature(original(block).forward).parameters
    for name in candidates:
        if name in names:
            return name
    raise ValueError(
        f"{type(original(block)).__name__}.forward has none of the skip arguments {list(candidates)} "
        f"(arguments: {list(names)}); this version of the package is not supported"
    )


def sgau_skips(model: nn.Module, groups: int = 32, *, eps: float = DEFAULT_EPS) -> list[InsertedAttention]:
    """Gate the skip connections of a U-Net by SGAU's spatial group attention, in place.

    Each decoder block's skip features ``low`` are replaced by ``low * (1 + Up(A(high)))`` before the block
    concatenates them, with ``A`` the spatial attention maps of the block's high-level input (eq. 3 of Ye et al.
    2020; the model keeps its own upsampling). No parameters are added and the output shape does not change; the
    blocks keep their state-dict keys, and :func:`remove_attention` restores them.

    Supported: ``segmentation_models_pytorch.Unet`` (any encoder; skips of 0 channels are left alone) and
    ``monai.networks.nets.BasicUNet`` (2D and 3D). Anything else raises ``TypeError`` and is not changed; so is a
    model for which ``groups`` does not divide every skip's channels (``ValueError``, listing the groups that do).

    Args:
        model: the U-Net to change.
        groups: number of groups ``m`` (default 32); must divide the channels of every skip and of the high-level
            features entering each block.
        eps: added to the spatial standard deviation (default 1e-5).

    Returns:
        One :class:`InsertedAttention` ``(name, channels, layer)`` per gated skip, deepest first.

    Example:
        >>> import segmentation_models_pytorch as smp
        >>> model = smp.Unet("resnet18", encoder_weights=None, classes=2)
        >>> [(s.name, s.channels) for s in sgau_skips(model, groups=32)]
        [('decoder.blocks.0', 256), ('decoder.blocks.1', 128), ('decoder.blocks.2', 64), ('decoder.blocks.3', 64)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_positive_int("groups", groups)
    skips = None
    for find_skips in SUPPORTED_UNETS.values():
        skips = find_skips(model)
        if skips is not None:
            break
    if skips is None:
        hint = (
            ' (group_attention\'s own UNet takes skip="sgau")'
            if type(model).__module__.startswith("group_attention")
            else ""
        )
        raise TypeError(
            f"sgau_skips supports {list(SUPPORTED_UNETS)}, got {type(model).__module__}."
            f"{type(model).__qualname__}{hint}"
        )
    for skip in skips:
        check_insertable(skip.name, skip.block, GatedSkip)
    bad = [skip for skip in skips if skip.channels % groups or skip.high_channels % groups]
    if bad:
        common = divisors(math.gcd(*(c for skip in skips for c in (skip.channels, skip.high_channels))))
        listed = ", ".join(
            f"{skip.name!r} joins {skip.channels} skip and {skip.high_channels} high-level channels" for skip in bad
        )
        raise ValueError(
            f"groups={groups} does not divide the channels at every skip ({listed}); groups valid "
            f"for every skip of this model: {common}"
        )
    layers = [SkipAttention(skip.channels, groups, eps=eps) for skip in skips]
    for skip, layer in zip(skips, layers):
        setattr(skip.parent, skip.attribute, GatedSkip(skip.block, layer, skip.argument))
    return [InsertedAttention(skip.name, skip.channels, layer) for skip, layer in zip(skips, layers)]
