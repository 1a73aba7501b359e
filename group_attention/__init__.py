"""group-attention: group attention layers and GANet for medical image segmentation.

Layers: :class:`CGA`, :class:`SGAU`, :class:`SE`, :class:`SGE` (and the plain U-Net skip :class:`ConcatSkip`),
built by name with :func:`create_attention`; the U-Net builder :class:`UNet` with Table 1's :data:`VARIANTS` and
:class:`GANet`; :class:`GeneralizedDiceLoss` and :class:`SegmentationMetrics`. Subpackages: ``losses``, ``metrics``,
``data`` (IDRiD and its synthetic look-alike) and ``engine`` (the training loop behind ``examples/idrid_ganet.py``).
"""

from .inference import load_model
from .integrations import add_attention, remove_attention, sgau_skips
from .layers import CGA, SE, SGAU, SGE, ConcatSkip
from .losses import GeneralizedDiceLoss
from .metrics import SegmentationMetrics
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
    "add_attention",
    "remove_attention",
    "sgau_skips",
    "UNet",
    "GANet",
    "VARIANTS",
    "build_variant",
    "GeneralizedDiceLoss",
    "SegmentationMetrics",
    "load_model",
    "__version__",
]
