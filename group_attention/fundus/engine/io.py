"""The experiment's files (JSON, checkpoints), each written atomically through :mod:`group_attention.atomic`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ...atomic import atomic_write, atomic_write_text
from ...inference.checkpoint import safe_torch_load


def write_text(path: "str | os.PathLike", text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_text(path, text)


def write_json(path: "str | os.PathLike", data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: "str | os.PathLike") -> Any:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: "str | os.PathLike", state: dict) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically."""
    return atomic_write(path, lambda stream: torch.save(state, stream))


def load_checkpoint(path: "str | os.PathLike", map_location: "str | torch.device" = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (tensors and plain data: no code
    from the file runs); a file that needs more raises
    :class:`~group_attention.inference.checkpoint.UnsafeCheckpointError` naming it."""
    return safe_torch_load(path, map_location=map_location)
