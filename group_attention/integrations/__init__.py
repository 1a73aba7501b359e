"""Group attention in models built elsewhere (timm, torchvision, segmentation_models_pytorch, MONAI).

:func:`add_attention` puts a channel attention layer after chosen submodules of any model, :func:`sgau_skips` turns
the concatenating skips of supported U-Nets into SGAU skips, and :func:`remove_attention` undoes both. Original
parameters keep their state-dict keys, so pretrained checkpoints still load. The frameworks are never imported
here: a model of theirs is recognised only once its package has been imported by the caller.
"""

from ._wrap import InsertedModule
from .insert import (
    AttentionAfter,
    InsertedAttention,
    add_attention,
    declared_channels,
    remove_attention,
)
from .skips import SUPPORTED_UNETS, GatedSkip, SkipAttention, sgau_skips

__all__ = [
    "SUPPORTED_UNETS",
    "AttentionAfter",
    "GatedSkip",
    "InsertedAttention",
    "InsertedModule",
    "SkipAttention",
    "add_attention",
    "declared_channels",
    "remove_attention",
    "sgau_skips",
]
