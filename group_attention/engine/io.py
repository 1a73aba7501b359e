"""Atomic writes: a temporary file in the same folder, then ``os.replace``, so no reader ever sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def _atomic_write(path: "str | os.PathLike", write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text(path: "str | os.PathLike", text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _atomic_write(path, lambda stream: stream.write(text.encode()), "wb")


def write_json(path: "str | os.PathLike", data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: "str | os.PathLike") -> Any:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: "str | os.PathLike", state: dict) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically."""
    return _atomic_write(path, lambda stream: torch.save(state, stream), "wb")


def load_checkpoint(path: "str | os.PathLike", map_location: "str | torch.device" = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (our own files: full unpickling is allowed)."""
    return torch.load(path, map_location=map_location, weights_only=False)


def save_png(path: "str | os.PathLike", image: Any) -> Path:
    """Save a Pillow image as PNG atomically."""
    return _atomic_write(path, lambda stream: image.save(stream, format="PNG"), "wb")
