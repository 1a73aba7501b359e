"""Finding the ground-truth mask of a predicted image: in an IDRiD tree, or in a folder matched by file stem."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .data.idrid import IDRiDLayout, discover_idrid, read_lesion_mask
from .data.suffixes import MASK_SUFFIXES

__all__ = ["GroundTruth"]


class GroundTruth:
    """Ground-truth masks under ``root``: an IDRiD root (``A. Segmentation``; a missing mask of an image whose
    lesion folder exists means no lesion, as in :class:`~group_attention.fundus.data.IDRiD`) or a plain folder holding
    ``<stem>_<LESION>.<ext>``, ``<LESION>/<stem>.<ext>`` or, for a run with one lesion, ``<stem>.<ext>``."""

    def __init__(self, root: "str | os.PathLike", lesions: list[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"masks folder {self.root} does not exist or is not a folder")
        self.lesions = lesions
        self.layout: "IDRiDLayout | None" = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # leftovers in the tree do not concern prediction
                self.layout = discover_idrid(self.root)
        except ValueError:
            self.layout = None

    @property
    def kind(self) -> str:
        return "idrid" if self.layout is not None else "folder"

    def path(self, stem: str, lesion: str) -> "Path | None | bool":
        """The mask file of ``stem``'s ``lesion``; False when the image has no lesion (IDRiD, no file); None when
        no ground truth is known for it."""
        if self.layout is not None:
            found = self.layout.masks[lesion].get(stem)
            if found is not None:
                return found
            split = self.layout.split_of.get(stem)
            return False if split is not None and split in self.layout.lesion_folders[lesion] else None
        candidates = [f"{stem}_{lesion}", f"{lesion}/{stem}"] + ([stem] if len(self.lesions) == 1 else [])
        for candidate in candidates:
            for suffix in MASK_SUFFIXES:
                for spelled in (suffix, suffix.upper()):
                    path = self.root / f"{candidate}{spelled}"
                    if path.is_file():
                        return path
        return None

    def mask(self, stem: str, lesion: str, size: tuple[int, int]) -> "np.ndarray | None":
        """The ``(H, W)`` boolean mask for an image of ``size`` ``(W, H)``, or None without ground truth.

        Raises:
            OSError: the file cannot be read. ValueError: its size differs from the image's.
        """
        path = self.path(stem, lesion)
        if path is None:
            return None
        if path is False:
            return np.zeros(size[::-1], dtype=bool)
        truth = read_lesion_mask(path)
        if truth.shape != size[::-1]:
            raise ValueError(
                f"ground-truth mask {path} is {truth.shape[1]}x{truth.shape[0]} (W x H) but the image "
                f"is {size[0]}x{size[1]}; a mask must have its image's size"
            )
        return truth
