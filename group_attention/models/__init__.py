"""Models: the U-Net builder, Table 1's variants and GANet."""

from .decoder import SegmentationHead, UNetDecoder
from .encoders import EncoderStage, TimmEncoder, UNetEncoder
from .unet import UNet
from .variants import VARIANTS, GANet, build_variant

__all__ = [
    "UNet",
    "GANet",
    "VARIANTS",
    "build_variant",
    "UNetEncoder",
    "EncoderStage",
    "TimmEncoder",
    "UNetDecoder",
    "SegmentationHead",
]
