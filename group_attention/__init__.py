"""group-attention: group attention layers and GANet for medical image segmentation.

The core: layers :class:`CGA`, :class:`SGAU`, :class:`SE`, :class:`SGE` (and the plain U-Net skip
:class:`ConcatSkip`), built by name with :func:`create_attention`; the U-Net builder :class:`UNet` with Table 1's
:data:`VARIANTS` and :class:`GANet`; :class:`GeneralizedDiceLoss` and :class:`SegmentationMetrics`; ``integrations``
(timm, torchvision, smp, MONAI) and generic ``inference`` (checkpoints, an N-d sliding window).

The fundus application (IDRiD data, the experiment engine, prediction of photographs, the command line) lives in
:mod:`group_attention.fundus`, above the core: ``import group_attention`` does not import it. :func:`load_model`, the
application's reader of trained lesion models, stays reachable here; it imports the application when first used.
"""

import importlib
from typing import Any

from .integrations import add_attention, remove_attention, sgau_skips
from .layers import CGA, SE, SGAU, SGE, ConcatSkip
from .losses import GeneralizedDiceLoss
from .metrics import SegmentationMetrics
from .models import VARIANTS, GANet, UNet, build_variant
from .registry import ATTENTION_LAYERS, SKIP_CONNECTIONS, create_attention
from .version import __version__

#: Names of the fundus application offered at the top level, imported on first use (PEP 562).
_APPLICATION_NAMES = {"load_model": "group_attention.fundus.checkpoint"}

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


def __getattr__(name: str) -> Any:
    if name in _APPLICATION_NAMES:
        return getattr(importlib.import_module(_APPLICATION_NAMES[name]), name)
    raise AttributeError(f"module 'group_attention' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
