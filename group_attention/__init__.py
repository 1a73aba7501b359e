"""group-attention: group attention layers and GANet for medical image segmentation.

Layers: :class:`CGA`, :class:`SGAU`, :class:`SE`, :class:`SGE` (and the plain U-Net skip :class:`ConcatSkip`),
built by name with :func:`create_attention`.
"""

from .layers import CGA, SE, SGAU, SGE, ConcatSkip
from .models import VARIANTS, GANet, UNet, build_variant
from .registry import ATTENTION_LAYERS, SKIP_CONNECTIONS, create_attention

__version__ = "0.1.0.dev0"

__all__ = [
    "CGA",
    "SE",
    "SGE",
    "SGAU",
    "ConcatSkip",
    "ATTENTION_LAYERS",
    "SKIP_CONNECTIONS",
    "create_attention",
    "UNet",
    "GANet",
    "VARIANTS",
    "build_variant",
    "__version__",
]
