"""Which implementation the layers run: fused Triton kernels for CUDA tensors, PyTorch operations otherwise.

``"auto"`` (the default) uses the Triton kernels for contiguous float32/float16/bfloat16 CUDA tensors in eager mode
when Triton is installed (it ships with PyTorch's CUDA wheels on Linux), and PyTorch operations everywhere else:
on CPU, for channels-last or other strided layouts, for float64, and inside ``torch.compile``, which fuses the
PyTorch formulation itself. ``"torch"`` always uses PyTorch operations. ``"triton"`` additionally runs the kernels on
CPU tensors when ``TRITON_INTERPRET=1`` was set before Triton was imported (Triton's interpreter: slow, for tests).

Select with :func:`set_kernels`, the :func:`kernels` context manager, or the environment variable
``GROUP_ATTENTION_KERNELS``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

KERNEL_CHOICES = ("auto", "torch", "triton")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_choice(name: str) -> str:
    if name not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {KERNEL_CHOICES}, got {name!r}")
    return name


_selected = _check_choice(os.environ.get("GROUP_ATTENTION_KERNELS", "auto"))
_triton_module: "ModuleType | None | bool" = False  # False: not tried yet; None: unavailable


def set_kernels(name: str) -> None:
    """Select the layers' implementation.

    Args:
        name: ``"auto"`` (default: Triton kernels for contiguous float32/float16/bfloat16 CUDA tensors in eager mode,
            PyTorch operations otherwise), ``"torch"`` (PyTorch operations everywhere) or ``"triton"`` (as
            ``"auto"``, and also on CPU tensors when ``TRITON_INTERPRET=1`` was set before Triton was imported:
            Triton's interpreter, slow, for tests).

    Raises:
        ValueError: for any other name.
    """
    global _selected
    _selected = _check_choice(name)


def get_kernels() -> str:
    """The selected implementation: ``"auto"``, ``"torch"`` or ``"triton"``."""
    return _selected


@contextlib.contextmanager
def kernels(name: str) -> Iterator[None]:
    """Run the layers with the implementation ``name`` inside the ``with`` block, e.g. to compare the two.

    Example:
        >>> import torch
        >>> from group_attention import CGA
        >>> from group_attention.layers import kernels
        >>> with kernels("torch"):
        ...     y = CGA(64)(torch.randn(1, 64, 8, 8))
    """
    previous = _selected
    set_kernels(name)
    try:
        yield
    finally:
        set_kernels(previous)


def triton_kernels() -> "ModuleType | None":
    """The kernel module, or None when Triton cannot be imported."""
    global _triton_module
    if _triton_module is False:
        try:
            from . import _triton_kernels
        except ImportError:
            _triton_module = None
        else:
            _triton_module = _triton_kernels
    return _triton_module


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return is_compiling is not None and is_compiling()


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the layers' Triton kernels should handle ``tensors`` (see the module docstring)."""
    if _selected == "torch":
        return False
    cpu_allowed = _selected == "triton" and _interpreting()
    for tensor in tensors:
        on_device = tensor.is_cuda or (cpu_allowed and tensor.device.type == "cpu")
        if not on_device or tensor.dtype not in _KERNEL_DTYPES or not tensor.is_contiguous() or tensor.numel() == 0:
            return False
    return not _compiling() and triton_kernels() is not None
