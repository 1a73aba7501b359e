"""Choosing the device to run on: one resolver for the experiment and the ``group-attention`` command line."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str, context_local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA (the local rank's GPU under torchrun) if available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r} ({error})") from error
    if device.type == "meta":
        raise ValueError(f"device {name!r} holds no data and cannot train; use --device cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", context_local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type != "cpu" and not _backend_available(device.type):
        raise ValueError(
            f"device {name!r} asked for, but {device.type} is not available on this machine; use --device cpu"
        )
    return device


def _backend_available(device_type: str) -> bool:
    """Whether torch reports the ``mps``, ``xpu``... backend usable here (False for one it does not know)."""
    backend = getattr(torch.backends, device_type, None) or getattr(torch, device_type, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available()) if callable(is_available) else False
