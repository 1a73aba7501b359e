"""The rows of Table 1 of Ye et al. (SPIE Medical Imaging 2020) as data: one configuration per row."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from .unet import UNet

# "We remove a convolution from each layer of the decoder path of U-Net and take it as our baseline" (section 3.4).
_BASELINE = {"decoder_convs": 1, "encoder_attention": None, "skip": "concat"}

VARIANTS: "MappingProxyType[str, dict[str, Any]]" = MappingProxyType(
    {
        "unet": {"decoder_convs": 2, "encoder_attention": None, "skip": "concat"},
        "baseline": dict(_BASELINE),
        "baseline+sgau": {**_BASELINE, "skip": "sgau"},
        "baseline+se": {**_BASELINE, "encoder_attention": "se"},
        "baseline+cga": {**_BASELINE, "encoder_attention": "cga"},
        "ganet": {**_BASELINE, "encoder_attention": "cga", "skip": "sgau"},
    }
)
"""Table 1's rows, name -> :class:`UNet` keyword arguments. Parameter counts (3 -> 2 channels): 7.766M, 6.981M,
6.981M, 7.026M, 6.986M, 6.986M (Table 1: 7.764M, 6.981M, 6.981M, 7.025M, 6.987M, 6.987M)."""

VARIANT_LABELS: "MappingProxyType[str, str]" = MappingProxyType(
    {
        "unet": "Unet",
        "baseline": "Baseline",
        "baseline+sgau": "Baseline + SGAU",
        "baseline+se": "Baseline + SE",
        "baseline+cga": "Baseline + CGA",
        "ganet": "Baseline + SGAU+CGA",
    }
)
"""Table 1's row labels, name (a key of :data:`VARIANTS`) -> the label the paper prints."""


def build_variant(name: str, in_channels: int = 3, num_classes: int = 2, **overrides: Any) -> UNet:
    """Build the Table 1 row ``name`` (see :data:`VARIANTS`), with any :class:`UNet` argument overridden.

    Example:
        >>> build_variant("baseline+cga", num_classes=2, groups=16)
        UNet(...)
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid names: {list(VARIANTS)}")
    return UNet(in_channels, num_classes, **{**VARIANTS[key], **overrides})


class GANet(UNet):
    """GANet: the Baseline U-Net (one convolution per decoder level) with CGA after each encoder stage and SGAU skip
    connections (Table 1's "Baseline+SGAU+CGA": 6,986,498 parameters for 3 -> 2 channels; Table 1 prints 6.987M).

    Args:
        in_channels: input channels (default 3).
        num_classes: output logits (default 2: background and lesion).
        **overrides: any other :class:`UNet` argument (e.g. ``groups=16``, ``spatial_dims=3``).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, **overrides: Any) -> None:
        super().__init__(in_channels, num_classes, **{**VARIANTS["ganet"], **overrides})
