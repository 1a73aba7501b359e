"""Which implementation a layer runs: its readable functional form, a fused autograd Function, or Triton kernels.

Every layer's file holds its equation as a short functional form (e.g. :func:`~group_attention.layers.cga.
channel_group_attention`). That form is what runs under ``torch.compile``, ``torch.export``, ``torch.jit.trace``
(ONNX export), ``torch.fx`` tracing and ``torch.func`` transforms, and for tensor subclasses: there every size stays
symbolic and autograd differentiates it. In plain eager mode the layers run the same mathematics as fused autograd
Functions (:mod:`group_attention.layers.fused`), which make fewer passes over memory, and on CUDA as Triton kernels:

``"auto"`` (the default) uses the Triton kernels for contiguous float32/float16/bfloat16 tensors on NVIDIA GPUs in
eager mode when Triton is installed (it ships with PyTorch's CUDA wheels on Linux), and PyTorch operations everywhere
else: on CPU, for channels-last or other strided layouts, for float64, on GPUs older than compute capability 7.0
(Triton's floor) and for bfloat16 below 8.0 (Ampere; PTX has no bfloat16 arithmetic before it), and on ROCm, where
the kernels have not been tested. The first time a GPU would use them, ``"auto"`` launches a tiny kernel to check
that Triton can compile and run there (it needs a C compiler at run time, which slim containers lack); if that fails
it warns once and uses PyTorch operations on that GPU.

``"torch"`` always uses PyTorch operations. ``"triton"`` uses the kernels for every CUDA tensor they take, with no
capability check or trial launch (errors surface), and also on CPU tensors when ``TRITON_INTERPRET=1`` was set before
Triton was imported (Triton's interpreter: slow, for tests).

Select with :func:`set_kernels`, the :func:`kernels` context manager, or the environment variable
``GROUP_ATTENTION_KERNELS``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

from .. import _compat

KERNEL_CHOICES = ("auto", "torch", "triton")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MIN_CAPABILITY = (7, 0)  # Triton's floor for NVIDIA GPUs (as PyTorch's own has_triton check)
MIN_BFLOAT16_CAPABILITY = (8, 0)  # PTX's bfloat16 conversions and arithmetic need sm_80


def _check_choice(name: str) -> str:
    if name not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {KERNEL_CHOICES}, got {name!r}")
    return name


_selected = _check_choice(os.environ.get("GROUP_ATTENTION_KERNELS", "auto"))
_triton_module: "ModuleType | None | bool" = False  # False: not tried yet; None: unavailable
_capabilities: dict[int, tuple[int, int]] = {}  # CUDA device index -> compute capability
_trial_passed: dict[int, bool] = {}  # CUDA device index -> whether the trial launch succeeded ("auto" only)


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
    """The kernel module, or None when Triton cannot be imported or is older than ``_compat.TRITON_FLOOR``."""
    global _triton_module
    if _triton_module is False:
        if not _compat.triton_supported():  # not installed, or older than the kernels need
            _triton_module = None
            return None
        try:
            from .fused import triton as triton_module
        except ImportError:
            _triton_module = None
        else:
            _triton_module = triton_module
    return _triton_module


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def gpu_supports(device: torch.device, dtypes: "set[torch.dtype]") -> bool:
    """Whether ``"auto"`` runs the kernels for ``dtypes`` on the CUDA ``device``: an NVIDIA GPU (not ROCm) of
    compute capability at least :data:`MIN_CAPABILITY`, and :data:`MIN_BFLOAT16_CAPABILITY` for bfloat16."""
    if torch.version.hip is not None:
        return False
    index = _device_index(device)
    if index not in _capabilities:
        _capabilities[index] = torch.cuda.get_device_capability(index)
    return _capabilities[index] >= (MIN_BFLOAT16_CAPABILITY if torch.bfloat16 in dtypes else MIN_CAPABILITY)


def gpu_ready(device: torch.device) -> bool:
    """Whether Triton compiles and runs a trial kernel on the CUDA ``device``; tried once per device. On failure
    (typically no C compiler for Triton's launcher) warn once and answer False from then on."""
    index = _device_index(device)
    if index not in _trial_passed:
        if _capturing():  # no trial inside a CUDA graph capture; the kernels' own errors will surface
            return True
        try:
            triton_kernels().trial(torch.device("cuda", index))
        except torch.cuda.OutOfMemoryError:
            raise  # the GPU, not Triton: the layer would fail either way
        except Exception as error:  # any failure of Triton's toolchain: use PyTorch operations
            warnings.warn(
                f"group_attention: Triton kernels cannot run on cuda:{index} ({type(error).__name__}: "
                f"{str(error).strip()[:300]}); the layers use PyTorch operations there. Call "
                f"group_attention.layers.set_kernels('torch') to choose them explicitly and silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            _trial_passed[index] = False
        else:
            _trial_passed[index] = True
    return _trial_passed[index]


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the layers' Triton kernels should handle ``tensors`` (see the module docstring)."""
    if _selected == "torch":
        return False
    cpu_allowed = _selected == "triton" and _interpreting()
    for tensor in tensors:
        on_device = tensor.is_cuda or (cpu_allowed and tensor.device.type == "cpu")
        if not on_device or tensor.dtype not in _KERNEL_DTYPES or not tensor.is_contiguous() or tensor.numel() == 0:
            return False
    if tracing_or_compiling() or triton_kernels() is None:
        return False
    if _selected == "triton" or not tensors[0].is_cuda:
        return True
    device = tensors[0].device
    return gpu_supports(device, {tensor.dtype for tensor in tensors}) and gpu_ready(device)


def tracing_or_compiling() -> bool:
    """Inside ``torch.compile``, ``torch.export``, ``torch.jit.trace``/``script`` (ONNX export) or ``torch.fx``
    symbolic tracing: where a graph is recorded, the layers run their readable functional form."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or _compat.is_compiling()
        or _compat.is_exporting()
        or _compat.is_fx_symbolic_tracing()
    )


def _plain_tensor(tensor: object) -> bool:
    """A ``torch.Tensor`` or ``nn.Parameter`` itself: not a fake, functional, batched or other wrapped tensor."""
    return type(tensor) in (torch.Tensor, torch.nn.Parameter) and not torch._C._functorch.is_functorch_wrapped_tensor(
        tensor
    )


def use_fused(*tensors: torch.Tensor) -> bool:
    """Whether a layer may run its fused autograd Function (or kernels) on ``tensors``: plain eager mode, outside
    every graph capture and ``torch.func`` transform, on plain tensors."""
    return not tracing_or_compiling() and all(_plain_tensor(tensor) for tensor in tensors)


class NotScriptable:
    """Mixin: ``torch.jit.script`` refuses the module at once, naming the export paths that work.

    TorchScript cannot compile the layers' Python (keyword-only arguments, einops-style shape logic, autograd
    Functions); ``torch.export`` and ``torch.jit.trace`` record the readable functional forms instead.
    """

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"{type(self).__name__} does not support torch.jit.script. Export with torch.export.export(model, "
            "example_inputs, dynamic_shapes=...) (or torch.onnx.export(..., dynamo=True)), or trace with "
            "torch.jit.trace(model, example_inputs); see the docs' 'Deploying' page."
        )
