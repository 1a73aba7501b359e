"""IDRiD lesion segmentation ("A. Segmentation") as a torch Dataset, and as a data source for the engine.

GANet (Ye et al., SPIE Medical Imaging 2020) segments hard exudates (EX) and haemorrhages (HE) on IDRiD's 81 images
with 3-fold cross-validation. :class:`IDRiD` gives items ``{"image": (3, H, W), "mask": (L, H, W), "id"}``: found
by :func:`~group_attention.fundus.data.idrid_layout.discover_idrid`, decoded by
:func:`~group_attention.fundus.data.decode.read_lesion_mask`, preprocessed by
:mod:`group_attention.fundus.data.preprocess` and cached on disk. :class:`IDRiDSource` is the same data behind the
engine's :class:`~group_attention.fundus.data.source.SegmentationSource` seam.

The layout names (:data:`LESIONS`, :data:`SPLITS`, :class:`IDRiDLayout`, :func:`discover_idrid`) and the readers
(:func:`read_fundus_image`, :func:`read_lesion_mask`) stay importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .decode import read_fundus_image, read_lesion_mask
from .idrid_layout import (  # the folder names are re-exported (``as``) for code that reads them from here
    IMAGES_FOLDER as IMAGES_FOLDER,
)
from .idrid_layout import (
    LESIONS,
    MASKS_FOLDER,
    SET_FOLDERS,
    SPLITS,
    IDRiDLayout,
    check_split,
    discover_idrid,
    id_order,
)
from .idrid_layout import (
    TOP_FOLDER as TOP_FOLDER,
)
from .preprocess import PreprocessConfig
from .preprocessed import PreprocessedDataset
from .source import SegmentationSource

__all__ = [
    "LESIONS",
    "SPLITS",
    "IDRiD",
    "IDRiDLayout",
    "IDRiDSource",
    "discover_idrid",
    "read_lesion_mask",
    "read_fundus_image",
]

logger = logging.getLogger(__name__)


def _check_lesions(lesion: str | Sequence[str]) -> tuple[str, ...]:
    """Upper-cased lesion codes, in the order given."""
    requested = (lesion,) if isinstance(lesion, str) else tuple(lesion) if isinstance(lesion, Sequence) else ()
    codes = tuple(str(code).upper() for code in requested)
    if not codes or any(code not in LESIONS for code in codes) or len(set(codes)) != len(codes):
        raise ValueError(f"lesion must be one or several distinct codes of {list(LESIONS)}; got {lesion!r}")
    return codes


class IDRiD(PreprocessedDataset):
    """IDRiD lesion segmentation as a torch Dataset, preprocessed as in GANet and cached on disk.

    The files of the download (:func:`discover_idrid`) as a
    :class:`~group_attention.fundus.data.preprocessed.PreprocessedDataset`: each image is cropped to its field of
    view, resized to ``size`` (image: antialiased bilinear; masks: area coverage >= 0.5 keeping every small lesion,
    see :func:`~group_attention.fundus.data.preprocess.resize_mask`), and cached as uint8 arrays. A missing mask
    file means no lesion: an all-zero mask.

    Args:
        root: folder containing ``A. Segmentation`` (or that folder, or a nested download).
        lesion: one code or a list of codes among ``MA, HE, EX, SE, OD``. Default ``"EX"``.
        split: ``"train"`` (official training set, default), ``"test"`` or ``"all"``.
        size: output ``(H, W)``. Default ``(384, 512)``, the paper's 512 x 384.
        ids: optional list of ``"IDRiD_NN"`` restricting the images (e.g. a cross-validation fold from
            :func:`~group_attention.fundus.data.kfold_ids`); each must belong to ``split``.
        transform: optional callable applied to each item dict (e.g.
            :class:`~group_attention.fundus.data.RandomFlipRotate`).
        cache_dir: ``"auto"`` (default: ``$GA_CACHE_DIR`` or ``~/.cache/group-attention/idrid``), a
            folder, or None for no cache. Nothing is ever written next to the data.
        crop_fov: crop the black background first. Default ``True``.
        mask_resize: ``"area"`` (default) or ``"nearest"``.

    Items:
        ``{"image": float32 (3, H, W) in [0, 1], "mask": float32 (L, H, W) 0/1 in the order of
        lesion, "id": "IDRiD_NN"}``.

    Raises:
        ValueError: bad ``lesion``, ``split``, ``size`` or ``ids``; ``root`` not an IDRiD tree; a
            requested lesion without any ground-truth folder for the split; a mask whose size differs
            from its image's.
        FileNotFoundError: ``root`` does not exist.
        OSError: an image or mask file that cannot be read (named in the message).

    Examples:
        >>> ds = IDRiD("/data/idrid", lesion=["EX", "HE"], split="train")  # doctest: +SKIP
        >>> item = ds[0]; item["image"].shape, item["mask"].shape, item["id"]  # doctest: +SKIP
        (torch.Size([3, 384, 512]), torch.Size([2, 384, 512]), 'IDRiD_01')
    """

    def __init__(
        self,
        root: str | os.PathLike,
        lesion: str | Sequence[str] = "EX",
        split: str = "train",
        size: tuple[int, int] = (384, 512),
        ids: Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
        cache_dir: str | os.PathLike | None = "auto",
        crop_fov: bool = True,
        mask_resize: str = "area",
    ) -> None:
        lesions = _check_lesions(lesion)
        check_split(split)
        self.split = split
        config = PreprocessConfig(size=size, crop_fov=crop_fov, mask_resize=mask_resize)
        self.layout = discover_idrid(root)
        selected = self._select_ids(ids)
        self._check_lesion_folders(lesions, selected)
        super().__init__(
            self.layout.images, self.layout.masks, lesions, selected, config, cache_dir, transform=transform
        )
        logger.info("%s", self.summary())
        without_any_mask = [code for code in self.lesions if self.mask_counts()[code] == 0]
        if without_any_mask:
            logger.warning("IDRiD: none of the %d selected images has a %s mask", len(self.ids), without_any_mask)

    @property
    def lesions(self) -> tuple[str, ...]:
        """The lesion codes of the mask channels, in order."""
        return self.classes

    def _select_ids(self, ids: Sequence[str] | None) -> list[str]:
        available = self.layout.ids(self.split)
        if not available:
            raise ValueError(
                f"split {self.split!r} has no image under {str(self.layout.base)!r}; "
                f"found: {self.layout.counts('train')['images']} training and "
                f"{self.layout.counts('test')['images']} testing images"
            )
        if ids is None:
            return available
        if isinstance(ids, str):
            raise ValueError(f"ids must be a list of image ids like ['IDRiD_01']; got the string {ids!r}")
        requested = list(dict.fromkeys(ids))
        in_split = set(available)
        unknown = [i for i in requested if i not in in_split]
        if unknown or not requested:
            raise ValueError(
                f"ids must be a non-empty list of image ids in split {self.split!r} "
                f"({available[0]} .. {available[-1]}, {len(available)} images); not found: {unknown or requested}"
            )
        return sorted(requested, key=id_order)

    def _check_lesion_folders(self, lesions: tuple[str, ...], ids: list[str]) -> None:
        splits = {self.layout.split_of[i] for i in ids}
        for code in lesions:
            absent = sorted(splits - self.layout.lesion_folders[code])
            if absent:
                present = [c for c in LESIONS if splits <= self.layout.lesion_folders[c]]
                raise ValueError(
                    f"lesion {code!r}: no ground-truth folder '{MASKS_FOLDER}/<set>/{LESIONS[code]}' for the "
                    f"{' and '.join(SET_FOLDERS[s] for s in absent)} under {str(self.layout.base)!r}; "
                    f"lesions with masks there: {present}"
                )

    def summary(self) -> str:
        """E.g. ``"IDRiD train: 54 images; masks EX 54/54, HE 53/54 (missing = no lesion)"``."""
        counts = self.mask_counts()
        per_lesion = ", ".join(f"{code} {counts[code]}/{counts['images']}" for code in self.lesions)
        return f"IDRiD {self.split}: {counts['images']} images; masks {per_lesion} (missing = no lesion)"

    def __repr__(self) -> str:
        counts = self.mask_counts()
        masks = {code: counts[code] for code in self.lesions}
        return (
            f"IDRiD(root={str(self.layout.root)!r}, lesion={list(self.lesions)}, split={self.split!r}, "
            f"size={self.size}, images={len(self.ids)}, masks={masks}, cache={self.cache!r})"
        )


class IDRiDSource(SegmentationSource):
    """An IDRiD "A. Segmentation" download as a :class:`~group_attention.fundus.data.source.SegmentationSource`.

    Classes are the lesion codes of :data:`LESIONS`; ``"train"`` and ``"test"`` are the official sets. The folder
    is searched when the source is built, so a wrong root fails at once.

    Args:
        root: folder containing ``A. Segmentation`` (or that folder, or a nested download).
        crop_fov: crop the black background around the field of view. Default ``True`` (the paper's).
        mask_resize: ``"area"`` (default) or ``"nearest"``, see :class:`IDRiD`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not an IDRiD tree.

    Example:
        >>> source = IDRiDSource("/data/idrid")  # doctest: +SKIP
        >>> source.dataset(["EX"], source.ids("test"), size=(384, 512))[0]["mask"].shape  # doctest: +SKIP
        torch.Size([1, 384, 512])
    """

    classes = tuple(LESIONS)

    def __init__(self, root: str | os.PathLike, crop_fov: bool = True, mask_resize: str = "area") -> None:
        self.root = Path(root)
        self.crop_fov, self.mask_resize = crop_fov, mask_resize
        self._layout: IDRiDLayout | None = None
        if not self.synthetic:  # a download exists already: a wrong root fails here (a synthetic one is prepared)
            self._layout = discover_idrid(self.root)

    @property
    def layout(self) -> IDRiDLayout:
        """The files found under the root (searched on first use)."""
        if self._layout is None:
            self._layout = discover_idrid(self.root)
        return self._layout

    def ids(self, split: str = "all") -> list[str]:
        return self.layout.ids(split)

    def mask_location(self, name: str, split: str) -> str:
        sets = list(SET_FOLDERS.values()) if split == "all" else [SET_FOLDERS[split]]
        folders = " and ".join(repr(str(self.layout.base / MASKS_FOLDER / folder / LESIONS[name])) for folder in sets)
        return f"the ground-truth folder {folders}"

    def check_masks(self, names: Sequence[str]) -> None:
        layout = self.layout
        for name in names:
            for split in ("train", "test"):
                ids = layout.ids(split)
                if ids and split in layout.lesion_folders[name] and not any(i in layout.masks[name] for i in ids):
                    raise ValueError(
                        f"lesion {name!r}: {self.mask_location(name, split)} holds no mask for the "
                        f"{len(ids)} {split} images; put the masks there, or choose other lesions with "
                        "--lesion"
                    )

    def dataset(
        self,
        classes: Sequence[str],
        ids: Sequence[str],
        size: tuple[int, int],
        cache_dir: str | os.PathLike | None = "auto",
    ) -> IDRiD:
        return IDRiD(
            self.root,
            lesion=list(classes),
            split="all",
            size=size,
            ids=list(ids),
            cache_dir=cache_dir,
            crop_fov=self.crop_fov,
            mask_resize=self.mask_resize,
        )

    def summary(self) -> str:
        return self.layout.summary()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, crop_fov={self.crop_fov})"
