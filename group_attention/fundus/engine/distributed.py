"""Optional data parallelism: under ``torchrun`` (``WORLD_SIZE > 1``) every process trains on a shard of each
epoch through DistributedDataParallel; process 0 evaluates and writes every file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


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
