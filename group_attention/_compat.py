"""The one place for PyTorch version checks: what the library calls where an API is newer than its floor (torch 2.2).

Each helper tests for the feature itself (never a version number) and names the torch release that introduced
the API it prefers; the fallback is what older releases offer for the same question. Features that cannot work on
an older torch call :func:`require_torch` so they fail with a message naming the version they need, never with an
``AttributeError`` from inside the library. ``bash .ci/floor`` runs the test suite at the declared floor.
"""

from __future__ import annotations

import contextlib
import importlib.metadata

import torch

#: The oldest torch the package declares and tests (pyproject.toml, .ci/floor-constraints.txt).
TORCH_FLOOR = (2, 2)
#: The oldest Triton the layers' kernels run on (Triton 3.0 came with torch 2.4). Triton 2.2 (torch 2.2's) runs
#: them wrongly in its interpreter (``tl.arange`` refuses a block size passed down to a helper), so with an older
#: Triton the layers use PyTorch operations, as without Triton.
TRITON_FLOOR = (3, 0)

# Devices torch.autocast accepts on torch < 2.4 (besides the PrivateUse1 backend), from torch/amp/autocast_mode.py.
_AUTOCAST_DEVICES_BEFORE_2_4 = ("cpu", "cuda", "xpu", "ipu", "hpu", "xla")


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def torch_version() -> tuple[int, int]:
    """The installed torch's (major, minor), e.g. ``(2, 2)`` for ``2.2.2+cu121``."""
    return _major_minor(torch.__version__)


def triton_supported() -> bool:
    """Whether Triton is installed in a version the layers' kernels run on (:data:`TRITON_FLOOR` or newer)."""
    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return False
    return _major_minor(version) >= TRITON_FLOOR


def require_torch(version: tuple[int, int], feature: str) -> None:
    """Raise a clear error when the installed torch is older than ``version``, which ``feature`` needs.

    Raises:
        RuntimeError: naming ``feature``, the version it needs and the installed one.
    """
    if torch_version() < tuple(version):
        raise needs_torch(version, feature)


def needs_torch(version: tuple[int, int], feature: str) -> RuntimeError:
    """The error for ``feature``, which needs torch ``version`` or newer, on this torch."""
    needed, floor = (".".join(map(str, v)) for v in (version, TORCH_FLOOR))
    return RuntimeError(
        f"{feature} needs torch>={needed}; this is torch {torch.__version__}. Upgrade PyTorch for it; the rest of "
        f"group-attention works from torch {floor}."
    )


# Which newer APIs this torch has, read once: Dynamo (torch.compile) traces through the helpers below, and torch 2.2's
# Dynamo cannot trace hasattr/getattr on a module, but reads these constants.
HAS_COMPILER_IS_COMPILING = hasattr(torch.compiler, "is_compiling")  # torch >= 2.3
HAS_COMPILER_IS_EXPORTING = hasattr(torch.compiler, "is_exporting")  # torch >= 2.7
HAS_IS_FX_SYMBOLIC_TRACING = hasattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing")  # torch >= 2.9
HAS_AUTOCAST_AVAILABLE = hasattr(torch.amp, "is_autocast_available")  # torch >= 2.4
HAS_AMP_GRAD_SCALER = hasattr(torch.amp, "GradScaler")  # torch >= 2.3


def is_compiling() -> bool:
    """Whether Dynamo is tracing the caller (``torch.compile``, and ``torch.export`` in its default strict mode
    before torch 2.7)."""
    if HAS_COMPILER_IS_COMPILING:
        return torch.compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch 2.2: Dynamo folds this call to True while it traces


def is_exporting() -> bool:
    """Whether ``torch.export`` is tracing the caller; before torch 2.7 export traces with Dynamo, which
    :func:`is_compiling` answers."""
    return HAS_COMPILER_IS_EXPORTING and torch.compiler.is_exporting()


def is_fx_symbolic_tracing() -> bool:
    """Whether ``torch.fx.symbolic_trace`` is tracing the caller."""
    if HAS_IS_FX_SYMBOLIC_TRACING:
        return torch.fx._symbolic_trace.is_fx_symbolic_tracing()
    return torch.fx._symbolic_trace.is_fx_tracing()  # before torch 2.9; also true under make_fx


def is_autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``"cpu"``, ``"cuda"``, ...)."""
    try:
        return torch.is_autocast_enabled(device_type)  # torch >= 2.4 takes a device type
    except TypeError:
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def is_autocast_available(device_type: str) -> bool:
    """Whether ``torch.autocast`` accepts ``device_type``."""
    if HAS_AUTOCAST_AVAILABLE:
        return torch.amp.is_autocast_available(device_type)
    return device_type in _AUTOCAST_DEVICES_BEFORE_2_4 or device_type == torch._C._get_privateuse1_backend_name()


def autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """A context that turns autocast off for ``device_type``, or does nothing where autocast has no such device."""
    if is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def grad_scaler(device_type: str, *, enabled: bool) -> "torch.amp.GradScaler":
    """A gradient scaler for mixed precision on ``device_type``."""
    if HAS_AMP_GRAD_SCALER:
        return torch.amp.GradScaler(device_type, enabled=enabled)
    if enabled and device_type != "cuda":  # torch.cuda.amp.GradScaler is CUDA's only
        raise needs_torch((2, 3), f"Mixed-precision training with gradient scaling on {device_type!r}")
    return torch.cuda.amp.GradScaler(enabled=enabled)
