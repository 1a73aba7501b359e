"""Helpers of the IDRiD data tests: small synthetic trees and references computed on the source files.

References are independent of the loader: lesion pixels are counted on the source files with Pillow and NumPy, as
the idrid-mini README prescribes (grey value > 0). The trees themselves are fixtures in ``conftest.py``.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from group_attention.fundus.data import (
    make_synthetic_idrid,
)

SIZE = (96, 144)  # synthetic JPEG size (H, W)


LESION_FOLDERS = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}


SET_FOLDERS = {"train": "a. Training Set", "test": "b. Testing Set"}


REAL_ROOT = os.environ.get("GA_IDRID_ROOT")


needs_real_idrid = pytest.mark.skipif(
    not REAL_ROOT, reason="set GA_IDRID_ROOT to the folder containing 'A. Segmentation' (e.g. idrid-mini)"
)


def _base(root: Path) -> Path:
    """The folder holding '1. Original Images' (independent of the loader's discovery)."""
    for candidate in (root, root / "A. Segmentation", root / "A. Segmentation" / "A. Segmentation"):
        if (candidate / "1. Original Images").is_dir():
            return candidate
    raise AssertionError(f"no IDRiD tree under {root}")


def _source_files(root: Path, code: str) -> dict[str, Path]:
    """Image id -> mask path of one lesion, by globbing the official folders."""
    found = {}
    for set_name in SET_FOLDERS.values():
        folder = _base(root) / "2. All Segmentation Groundtruths" / set_name / LESION_FOLDERS[code]
        found.update({p.name[: -len(f"_{code}.tif")]: p for p in folder.glob(f"IDRiD_*_{code}.tif")})
    return found


def _reference_mask(path: Path) -> np.ndarray:
    """Lesion pixels of a source mask: any non-black pixel (idrid-mini README)."""
    with Image.open(path) as mask:
        return np.asarray(mask.convert("L")) > 0


def _small_tree(root: Path, **kwargs) -> Path:
    """A tiny synthetic tree (2 training + 1 testing image) that a test may damage."""
    return make_synthetic_idrid(root, n_train=2, n_test=1, size=(48, 72), **kwargs)


def _all_items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def _assert_same_items(first, second):
    for a, b in zip(first, second, strict=True):
        assert a["id"] == b["id"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
