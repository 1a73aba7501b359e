"""Checks the fundus application makes before it works on files from elsewhere: the output folder (writable, and
one run at a time, :func:`lock_output_folder`), the inputs (never inside the folder the run writes), and numbers
given on a command line (finite).

The reliability notes of the docs ("Reliability" in :doc:`/predict` and :doc:`/data`) list what is refused and why.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "FolderLockedError",
    "check_finite",
    "check_inputs_outside",
    "check_writable_folder",
    "finite_float",
    "lock_output_folder",
]

#: The lock file a run keeps in its output folder while it writes there.
LOCK_NAME = ".group-attention.lock"


class FolderLockedError(ValueError):
    """Another live process holds the output folder's lock."""


def check_finite(name: str, value: float) -> float:
    """``value`` as a float when it is finite; else a ``ValueError`` naming ``name``."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def finite_float(text: str) -> float:
    """An ``argparse`` type: a float that is neither inf nor nan."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return number


def check_writable_folder(out_dir: "str | os.PathLike", option: str = "--out") -> None:
    """Raise ``ValueError`` if ``out_dir`` is a file or cannot be created or written (creates nothing)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {str(out_dir)!r} is a file; give a folder ({option})")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create output folder {str(out_dir)!r}: {str(existing)!r} is a file ({option})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write to output folder {str(out_dir)!r}: {str(existing)!r} is not writable ({option})"
        )


def check_inputs_outside(inputs: "list[Path]", out_dir: "str | os.PathLike") -> None:
    """Raise ``ValueError`` for an input inside a sub-folder of ``out_dir`` (where the run writes its outputs, so
    that an input there could be overwritten by its own output), by its path as given or as resolved."""
    out = Path(os.path.abspath(out_dir))
    resolved_out = out.resolve()
    for path in inputs:
        for folder, candidate in ((out, Path(os.path.abspath(path))), (resolved_out, Path(path).resolve())):
            if folder in candidate.parents and candidate.parent != folder:
                inside = candidate.relative_to(folder).parts[0]
                raise ValueError(
                    f"input {str(path)!r} is inside the output folder's {inside}/ ({str(out)!r}), where this run "
                    "writes and could overwrite it: move the image out of that folder, or give another --out"
                )


def _try_lock(descriptor: int) -> bool:
    """Take an exclusive lock on the open file without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _holder(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    if not lines or not lines[0].strip().isdigit():
        return "another process"
    where = f" on {lines[2]}" if len(lines) > 2 and lines[2] != socket.gethostname() else ""
    what = f" ({lines[1]})" if len(lines) > 1 and lines[1] else ""
    return f"process {lines[0].strip()}{where}{what}"


@contextlib.contextmanager
def lock_output_folder(out_dir: "str | os.PathLike", what: str = "") -> Iterator[Path]:
    """Hold an exclusive lock on the folder ``out_dir`` while the block runs: its file :data:`LOCK_NAME` holds this
    process's id and ``what`` (e.g. the command), and is removed on exit.

    The operating system releases the lock when its process dies, so a lock file left by a killed run is stale and
    is taken over; only a live holder refuses.

    Raises:
        FolderLockedError: (a ``ValueError``) naming the folder and the process that holds it.
    """
    out_dir = Path(out_dir)
    path = out_dir / LOCK_NAME
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(descriptor):
            os.close(descriptor)
            raise FolderLockedError(
                f"output folder {str(out_dir)!r} is in use by {_holder(path)}: one run at a time writes into a "
                f"folder; wait for it to end, or give another --out (lock file {path})"
            )
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)  # the holder removed this file as it ended: lock the one that exists now
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n{what or ' '.join(sys.argv)}\n{socket.gethostname()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before releasing: a process waiting on this file sees it gone and retries
        os.close(descriptor)
