"""Attention layers, one per file, each a module and the functional form of its equation.

The functional forms (``channel_group_attention``, ``squeeze_excite``, ``spatial_group_enhance``,
``spatial_group_attention``) are the equations as tensor code, built from :mod:`.group_ops`; the modules run them
wherever a graph is traced, compiled or exported, and their fused versions (:mod:`.fused`) in plain eager mode, as
:mod:`.dispatch` decides. To add a layer, see the docs' contributing page.
"""

from .cga import CGA, cga_channel_weights, channel_group_attention, group_saliency
from .dispatch import get_kernels, kernels, set_kernels
from .se import SE, squeeze_excite
from .sgau import SGAU, SkipAttention, sgau_attention, spatial_group_attention
from .sge import SGE, sge_gate, spatial_group_enhance
from .skip import ConcatSkip

__all__ = [
    "CGA",
    "SE",
    "SGE",
    "SGAU",
    "ConcatSkip",
    "SkipAttention",
    "channel_group_attention",
    "cga_channel_weights",
    "group_saliency",
    "squeeze_excite",
    "spatial_group_enhance",
    "sge_gate",
    "spatial_group_attention",
    "sgau_attention",
    "get_kernels",
    "kernels",
    "set_kernels",
]
