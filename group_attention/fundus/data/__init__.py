"""Data for GANet: the IDRiD lesion segmentation set, a synthetic look-alike, folds and augmentation.

- :class:`SegmentationSource` is what the training engine asks for data; :class:`IDRiDSource`,
  :class:`SyntheticIDRiDSource` and :class:`PairedFolderSource` (your own images and masks) are the sources here.
- :class:`IDRiD` reads "A. Segmentation" as downloaded (:func:`discover_idrid` finds the files,
  :func:`read_lesion_mask` reads any mask encoding), crops the field of view, resizes and caches.
- :func:`make_synthetic_idrid` writes a look-alike tree in the same layout and formats.
- :func:`kfold_ids` gives the deterministic cross-validation folds (the paper: 3 folds over 81 images).
- :func:`random_flip_rotate` / :class:`RandomFlipRotate` are the paper's flips and rotation.
"""

from .folders import PairedFolderDataset, PairedFolderSource
from .folds import fold_of, kfold_ids
from .idrid import (
    LESIONS,
    SPLITS,
    IDRiD,
    IDRiDLayout,
    IDRiDSource,
    discover_idrid,
    read_fundus_image,
    read_lesion_mask,
)
from .preprocess import (
    ArrayCache,
    Box,
    PreprocessConfig,
    cache_key,
    default_cache_dir,
    find_fov_box,
    resize_image,
    resize_mask,
    training_crop,
)
from .preprocessed import PreprocessedDataset
from .source import PROTOCOLS, SOURCE_SPLITS, SegmentationSource
from .synthetic import SyntheticIDRiDSource, make_synthetic_idrid, render_fundus
from .transforms import (
    FlipRotateParams,
    RandomFlipRotate,
    apply_flip_rotate,
    random_flip_rotate,
    sample_flip_rotate,
)

__all__ = [
    "SegmentationSource",
    "IDRiDSource",
    "SyntheticIDRiDSource",
    "PairedFolderSource",
    "PairedFolderDataset",
    "PreprocessedDataset",
    "PROTOCOLS",
    "SOURCE_SPLITS",
    "IDRiD",
    "IDRiDLayout",
    "LESIONS",
    "SPLITS",
    "discover_idrid",
    "read_fundus_image",
    "read_lesion_mask",
    "ArrayCache",
    "Box",
    "PreprocessConfig",
    "cache_key",
    "default_cache_dir",
    "find_fov_box",
    "training_crop",
    "resize_image",
    "resize_mask",
    "make_synthetic_idrid",
    "render_fundus",
    "fold_of",
    "kfold_ids",
    "FlipRotateParams",
    "RandomFlipRotate",
    "apply_flip_rotate",
    "random_flip_rotate",
    "sample_flip_rotate",
]
