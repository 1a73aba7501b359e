"""Attention layers: one module per file, the shared group operations in ``_group_ops``."""

from .cga import CGA
from .se import SE
from .sgau import SGAU
from .sge import SGE
from ._kernels import get_kernels, kernels, set_kernels
from .upsample import ConcatSkip

__all__ = ["CGA", "SE", "SGE", "SGAU", "ConcatSkip", "get_kernels", "kernels", "set_kernels"]
