"""Which files are images: the one list of suffixes every part of the application looks for.

Data sources, folder discovery, prediction and ground-truth lookup all use these lists (compared
case-insensitively), so a ``.bmp`` photograph is found by every one of them or by none.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "has_image_suffix"]

#: Photographs and masks: lossless formats first (the order in which a mask is looked for by name).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".bmp", ".jpg", ".jpeg")
#: Masks may also be GIFs (as some public sets ship them).
MASK_SUFFIXES = (*IMAGE_SUFFIXES, ".gif")


def has_image_suffix(path: "str | Path", suffixes: "tuple[str, ...]" = IMAGE_SUFFIXES) -> bool:
    """Whether ``path`` ends in one of ``suffixes``, in any case."""
    return Path(path).suffix.lower() in suffixes
