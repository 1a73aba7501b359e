"""Atomic file writes, the one implementation every module uses (checkpoints, results, the preprocessing cache,
benchmark tables): a temporary file in the target's folder, then ``os.replace``, so a reader sees either the old
file or the complete new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: "str | os.PathLike", write: Callable[[BinaryIO], None], *, durable: bool = True) -> Path:
    """Create ``path``'s folder, call ``write`` on a binary stream to a temporary file beside ``path``, then rename
    it over ``path``. With ``durable`` the data reach the disk (``fsync``) before the rename. The file gets the
    usual permissions (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: "str | os.PathLike", text: str, *, durable: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")), durable=durable)
