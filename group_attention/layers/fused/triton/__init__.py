"""Triton kernels for the layers' CUDA path, one module per layer and the shared ones in ``common``.

Imports only where Triton is installed; :mod:`group_attention.layers.dispatch` decides when they run. With
``TRITON_INTERPRET=1`` set before Triton is imported the kernels also run on CPU tensors (slowly), which is how the
test suite checks them on machines without a GPU.
"""

from .cga import cga_gate, cga_gate_backward, saliency_sums
from .common import combine_stats, group_maps, row_dots, scale_add, trial
from .sgau import (
    attend,
    attend_backward,
    doubled_adjoint_sums,
    maps_gradient_dot,
    maps_to_rows,
    sigmoid_standardize_sums,
)
from .sge import gate_groups, gate_groups_backward, gate_groups_backward_sums

__all__ = [
    "attend",
    "attend_backward",
    "cga_gate",
    "cga_gate_backward",
    "combine_stats",
    "doubled_adjoint_sums",
    "gate_groups",
    "gate_groups_backward",
    "gate_groups_backward_sums",
    "group_maps",
    "maps_gradient_dot",
    "maps_to_rows",
    "row_dots",
    "saliency_sums",
    "scale_add",
    "sigmoid_standardize_sums",
    "trial",
]
