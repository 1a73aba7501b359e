"""Triton kernels for the layers' CUDA path, one module per layer and the shared ones in ``common``.

Imports only where Triton is installed; :mod:`group_attention.layers.dispatch` decides when they run. With
``TRITON_INTERPRET=1`` set before Triton is imported the kernels also run on CPU tensors (slowly), which is how the
test suite checks them on machines without a GPU. The launchers imported here are private: the fused Functions
call them as attributes of this package, which :func:`~group_attention.layers.dispatch.triton_kernels` returns.
"""

# The launchers are attributes of this package for the fused Functions (dispatch.triton_kernels), not public names.
# ruff: noqa: F401
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

__all__: list[str] = []
