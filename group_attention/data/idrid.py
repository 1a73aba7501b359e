"""IDRiD lesion segmentation data ("A. Segmentation", CC BY 4.0) read exactly as downloaded.

IDRiD: Porwal P. et al., "Indian Diabetic Retinopathy Image Dataset (IDRiD)", Data 3(3):25, 2018.
GANet (Ye et al., SPIE Medical Imaging 2020) segments hard exudates (EX) and haemorrhages (HE) on its
81 images with 3-fold cross-validation. The official layout::

    A. Segmentation/
      1. Original Images/a. Training Set/IDRiD_01.jpg .. IDRiD_54.jpg   (4288 x 2848 JPEG)
      1. Original Images/b. Testing Set/IDRiD_55.jpg .. IDRiD_81.jpg
      2. All Segmentation Groundtruths/{a. Training Set, b. Testing Set}/
         1. Microaneurysms/IDRiD_NN_MA.tif   2. Haemorrhages/IDRiD_NN_HE.tif
         3. Hard Exudates/IDRiD_NN_EX.tif    4. Soft Exudates/IDRiD_NN_SE.tif
         5. Optic Disc/IDRiD_NN_OD.tif

:func:`discover_idrid` finds the files (root = the folder holding ``A. Segmentation``, that folder
itself, or a download nested once more as ``A. Segmentation/A. Segmentation``); :func:`read_lesion_mask`
reads a mask in any encoding; :class:`IDRiD` is the torch Dataset, with the preprocessing of
:mod:`group_attention.data.preprocess` cached on disk.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .preprocess import ArrayCache, Box, PreprocessConfig, cache_key, default_cache_dir, find_fov_box
from .preprocess import resize_image, resize_mask

__all__ = [
    "LESIONS",
    "SPLITS",
    "IDRiD",
    "IDRiDLayout",
    "discover_idrid",
    "read_lesion_mask",
    "read_fundus_image",
]

logger = logging.getLogger(__name__)

#: Lesion code -> ground-truth folder name, in the official order.
LESIONS: dict[str, str] = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}
SPLITS = ("train", "test", "all")

TOP_FOLDER = "A. Segmentation"
IMAGES_FOLDER = "1. Original Images"
MASKS_FOLDER = "2. All Segmentation Groundtruths"
SET_FOLDERS = {"train": "a. Training Set", "test": "b. Testing Set"}

_IMAGE_NAME = re.compile(r"^(IDRiD_\d+)\.jpe?g$", re.IGNORECASE)
_MASK_NAME = re.compile(r"^(IDRiD_\d+)_([A-Z]{2})\.tiff?$", re.IGNORECASE)
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
# Names are compared without their "1. " / "a. " prefix and case, so "hemorrhages" matches too.
_NAME_ALIASES = {"hemorrhages": "haemorrhages", "ground truths": "groundtruths"}


def _normalized(name: str) -> str:
    plain = re.sub(r"^[0-9a-z]\.\s*", "", name.strip().lower())
    for alias, canonical in _NAME_ALIASES.items():
        plain = plain.replace(alias, canonical)
    return plain


def _child(folder: Path, expected: str) -> Path | None:
    """The sub-folder of ``folder`` whose normalized name is that of ``expected``, if any."""
    if not folder.is_dir():
        return None
    wanted = _normalized(expected)
    matches = sorted(p for p in folder.iterdir() if p.is_dir() and _normalized(p.name) == wanted)
    return matches[0] if matches else None


def _id_order(image_id: str) -> tuple[int, str]:
    return (int(image_id.split("_")[1]), image_id)


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def read_fundus_image(path: str | os.PathLike) -> Image.Image:
    """Decode a fundus photograph to a loaded RGB Pillow image.

    Raises:
        OSError: naming the file when it is missing, not an image, or truncated.
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened if opened.mode == "RGB" else opened.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise OSError(f"cannot read image file {str(path)!r}: {err}") from err


def read_lesion_mask(path: str | os.PathLike) -> np.ndarray:
    """Read an IDRiD ground-truth mask as a boolean array, whatever its encoding.

    IDRiD masks draw lesions in red, stored as palette or RGB TIFFs. Converting red to grey gives 76,
    so a grey threshold at 127 would silently return empty masks. Instead the rule looks at each pixel's
    strongest channel (after palette lookup):

    - a two-valued mask (0 and one other value: 0/1 or 0/255 labels, red on black, a grey copy holding
      0/76) is lesion wherever it is not 0;
    - otherwise (a lossy copy) a pixel is lesion when it reaches half the encoding's full scale (1, 255,
      or the peak of wider types), or, when no pixel does but the peak is at least 1/8 of it (a lossy
      grey copy), half the peak; fainter values alone are noise on an empty mask.

    Args:
        path: a ``.tif`` mask (any Pillow-readable format works).

    Shape:
        Returns ``(H, W)`` bool, H x W being the file's size.

    Raises:
        OSError: naming the file when it is missing or cannot be decoded.

    Examples:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> red = np.zeros((4, 4, 3), np.uint8); red[1, 2] = (255, 0, 0)
        >>> path = tempfile.mkdtemp() + "/IDRiD_01_EX.tif"
        >>> Image.fromarray(red).save(path)
        >>> read_lesion_mask(path).sum()
        np.int64(1)
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            strongest = _strongest_channel(opened)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise OSError(f"cannot read mask file {str(path)!r}: {err}") from err
    return _lesion_pixels(strongest)


def _lesion_pixels(strongest: np.ndarray) -> np.ndarray:
    """The rule of :func:`read_lesion_mask` on the strongest channel."""
    if strongest.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(strongest.ravel(), minlength=256))
    else:
        values = np.unique(strongest)
    values = values[values != 0]
    if len(values) <= 1:  # empty, or two-valued
        return strongest != 0
    peak = float(values.max())
    full_scale = 1.0 if peak <= 1 else 255.0 if peak <= 255 else peak
    cut = full_scale / 2
    if peak < cut:
        cut = peak / 2 if peak >= full_scale / 8 else math.inf
    return strongest >= cut


def _strongest_channel(image: Image.Image) -> np.ndarray:
    """Per pixel, the largest colour value (palette resolved, alpha ignored)."""
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "P":
        # Look the palette up per index instead of converting 12 Mpx to RGB.
        palette = np.asarray(image.getpalette() or [0] * 768, dtype=np.uint8).reshape(-1, 3)
        lookup = np.zeros(256, dtype=np.uint8)
        lookup[: len(palette)] = palette.max(axis=1)
        return lookup[np.asarray(image, dtype=np.uint8)]
    if image.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image)
    if image.mode not in ("RGB", "RGBA", "LA"):
        image = image.convert("RGB")
    values = np.asarray(image)
    if image.mode == "LA":
        return values[..., 0]
    return values[..., :3].max(axis=-1)


def _header_size(path: Path, kind: str) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as opened:
            return opened.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise OSError(f"cannot read {kind} file {str(path)!r}: {err}") from err


# --------------------------------------------------------------------------------------------------
# Layout discovery
# --------------------------------------------------------------------------------------------------


@dataclass
class IDRiDLayout:
    """What :func:`discover_idrid` found under an IDRiD root.

    Attributes:
        root: the folder given.
        base: the resolved ``A. Segmentation`` folder (holding ``1. Original Images``).
        images: image id -> JPEG path.
        split_of: image id -> ``"train"`` or ``"test"``.
        masks: lesion code -> {image id -> mask path}, for every lesion code (empty when absent).
        lesion_folders: lesion code -> the set names (``"train"``/``"test"``) whose ground-truth
            folder for that lesion exists.
        orphan_masks: mask files whose image id has no image.
        ignored: files in the image/mask folders whose names do not follow the IDRiD pattern.
    """

    root: Path
    base: Path
    images: dict[str, Path] = field(default_factory=dict)
    split_of: dict[str, str] = field(default_factory=dict)
    masks: dict[str, dict[str, Path]] = field(default_factory=lambda: {code: {} for code in LESIONS})
    lesion_folders: dict[str, set[str]] = field(default_factory=lambda: {code: set() for code in LESIONS})
    orphan_masks: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def ids(self, split: str = "all") -> list[str]:
        """Sorted image ids of ``split`` (``"train"``, ``"test"`` or ``"all"``)."""
        _check_split(split)
        return sorted(
            (i for i, s in self.split_of.items() if split in ("all", s)), key=_id_order
        )

    def counts(self, split: str = "all") -> dict[str, int]:
        """Number of images (``"images"``) and of masks per lesion code among the images of ``split``."""
        ids = self.ids(split)
        counts = {"images": len(ids)}
        for code in LESIONS:
            counts[code] = sum(i in self.masks[code] for i in ids)
        return counts

    def summary(self) -> str:
        """One line per official set: images and masks per lesion found, plus anything ignored."""
        lines = [f"IDRiD at {str(self.base)!r}:"]
        for split in ("train", "test"):
            counts = self.counts(split)
            per_lesion = ", ".join(f"{code} {counts[code]}" for code in LESIONS)
            lines.append(f"  {SET_FOLDERS[split]}: {counts['images']} images; masks {per_lesion}")
        if self.orphan_masks:
            lines.append(f"  {len(self.orphan_masks)} masks without an image (ignored)")
        if self.ignored:
            lines.append(f"  {len(self.ignored)} files not named like IDRiD files (ignored)")
        return "\n".join(lines)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")


def _listing(folder: Path, limit: int = 12) -> str:
    if not folder.is_dir():
        return "(does not exist)" if not folder.exists() else "(not a folder)"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "(empty)"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _resolve_base(root: Path) -> Path:
    """The ``A. Segmentation`` folder: ``root`` itself or up to two ``A. Segmentation`` levels below."""
    candidate = root
    for _ in range(3):
        if _child(candidate, IMAGES_FOLDER) is not None:
            return candidate
        nested = _child(candidate, TOP_FOLDER)
        if nested is None:
            break
        candidate = nested
    raise ValueError(
        f"root {str(root)!r} is not an IDRiD segmentation tree. Expected "
        f"'{TOP_FOLDER}/{IMAGES_FOLDER}/{{{', '.join(SET_FOLDERS.values())}}}/IDRiD_NN.jpg' and "
        f"'{TOP_FOLDER}/{MASKS_FOLDER}/<set>/<lesion folder>/IDRiD_NN_XX.tif' under root "
        f"(root may also be the '{TOP_FOLDER}' folder itself, or a download nested as "
        f"'{TOP_FOLDER}/{TOP_FOLDER}'); found in {str(candidate)!r}: {_listing(candidate)}"
    )


def discover_idrid(root: str | os.PathLike) -> IDRiDLayout:
    """Find the images and masks of an IDRiD "A. Segmentation" download, without reading pixels.

    Args:
        root: the folder that contains ``A. Segmentation`` (or that folder itself; a download nested
            as ``A. Segmentation/A. Segmentation`` works too).

    Returns:
        :class:`IDRiDLayout`; ``print(layout.summary())`` tells what was found.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not an IDRiD tree (the message lists the expected folders and what was
            found), it holds no image, or an image id appears in both sets.

    Examples:
        >>> layout = discover_idrid("/data/idrid")  # doctest: +SKIP
        >>> layout.counts("train")  # doctest: +SKIP
        {'images': 54, 'MA': 54, 'HE': 53, 'EX': 54, 'SE': 26, 'OD': 54}
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"IDRiD root {str(root)!r} does not exist")
    base = _resolve_base(root)
    layout = IDRiDLayout(root=root, base=base)
    _collect_images(layout)
    _collect_masks(layout)
    _warn_about_leftovers(layout)
    return layout


def _collect_images(layout: IDRiDLayout) -> None:
    images_folder = _child(layout.base, IMAGES_FOLDER)
    for split, set_name in SET_FOLDERS.items():
        set_folder = _child(images_folder, set_name)
        if set_folder is None:
            continue
        for path in sorted(set_folder.iterdir()):
            match = _IMAGE_NAME.match(path.name)
            if not match or not path.is_file():
                layout.ignored.append(path)
                continue
            image_id = match.group(1)
            if image_id in layout.images:
                raise ValueError(
                    f"image id {image_id!r} appears twice: {str(layout.images[image_id])!r} and {str(path)!r}"
                )
            layout.images[image_id] = path
            layout.split_of[image_id] = split
    if not layout.images:
        raise ValueError(
            f"no IDRiD_NN.jpg image under {str(images_folder)!r}: expected sub-folders "
            f"{list(SET_FOLDERS.values())}; found {_listing(images_folder)}"
        )


def _collect_masks(layout: IDRiDLayout) -> None:
    masks_folder = _child(layout.base, MASKS_FOLDER)
    for split, set_name in SET_FOLDERS.items():
        set_folder = _child(masks_folder, set_name) if masks_folder else None
        for code, lesion_name in LESIONS.items():
            lesion_folder = _child(set_folder, lesion_name) if set_folder else None
            if lesion_folder is None:
                continue
            layout.lesion_folders[code].add(split)
            for path in sorted(lesion_folder.iterdir()):
                match = _MASK_NAME.match(path.name)
                if not match or match.group(2).upper() != code or not path.is_file():
                    layout.ignored.append(path)
                elif match.group(1) not in layout.images:
                    layout.orphan_masks.append(path)
                elif match.group(1) in layout.masks[code]:
                    raise ValueError(
                        f"{code} mask of image {match.group(1)!r} appears twice: "
                        f"{str(layout.masks[code][match.group(1)])!r} and {str(path)!r}"
                    )
                else:
                    layout.masks[code][match.group(1)] = path


def _warn_about_leftovers(layout: IDRiDLayout) -> None:
    # Images must never be dropped silently: anything image-like that we skip is announced.
    skipped_images = [p for p in layout.ignored if p.suffix.lower() in _IMAGE_SUFFIXES]
    if skipped_images:
        warnings.warn(
            f"IDRiD: ignoring {len(skipped_images)} files not named IDRiD_NN.jpg / IDRiD_NN_XX.tif "
            f"in their folder: {[str(p) for p in skipped_images[:5]]}",
            stacklevel=3,
        )
    if layout.orphan_masks:
        warnings.warn(
            f"IDRiD: ignoring {len(layout.orphan_masks)} masks without an image: "
            f"{[str(p) for p in layout.orphan_masks[:5]]}",
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


def _check_lesions(lesion: str | Sequence[str]) -> tuple[str, ...]:
    """Upper-cased lesion codes, in the order given."""
    requested = (lesion,) if isinstance(lesion, str) else tuple(lesion) if isinstance(lesion, Sequence) else ()
    codes = tuple(str(code).upper() for code in requested)
    if not codes or any(code not in LESIONS for code in codes) or len(set(codes)) != len(codes):
        raise ValueError(
            f"lesion must be one or several distinct codes of {list(LESIONS)}; got {lesion!r}"
        )
    return codes


class IDRiD(Dataset):
    """IDRiD lesion segmentation as a torch Dataset, preprocessed as in GANet and cached on disk.

    Each image is cropped to its field of view, resized to ``size`` (image: antialiased bilinear;
    masks: area coverage >= 0.5 keeping every small lesion, see
    :func:`~group_attention.data.preprocess.resize_mask`), and cached as uint8 arrays. A missing mask
    file means no lesion: an all-zero mask.

    Args:
        root: folder containing ``A. Segmentation`` (or that folder, or a nested download).
        lesion: one code or a list of codes among ``MA, HE, EX, SE, OD``. Default ``"EX"``.
        split: ``"train"`` (official training set, default), ``"test"`` or ``"all"``.
        size: output ``(H, W)``. Default ``(384, 512)``, the paper's 512 x 384.
        ids: optional list of ``"IDRiD_NN"`` restricting the images (e.g. a cross-validation fold from
            :func:`~group_attention.data.kfold_ids`); each must belong to ``split``.
        transform: optional callable applied to each item dict (e.g.
            :class:`~group_attention.data.RandomFlipRotate`).
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
        self.lesions = _check_lesions(lesion)
        _check_split(split)
        self.split = split
        self.config = PreprocessConfig(size=size, crop_fov=crop_fov, mask_resize=mask_resize)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a callable taking and returning an item dict, got {transform!r}")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be 'auto', a folder path or None, got {cache_dir!r}")
        self.transform = transform
        self.layout = discover_idrid(root)
        self.ids = self._select_ids(ids)
        self._check_lesion_folders()
        self._check_mask_sizes()
        if cache_dir == "auto":
            cache_dir = default_cache_dir()
        self.cache = ArrayCache(cache_dir) if cache_dir is not None else None
        logger.info("%s", self.summary())
        without_any_mask = [code for code in self.lesions if self.mask_counts()[code] == 0]
        if without_any_mask:
            logger.warning("IDRiD: none of the %d selected images has a %s mask", len(self.ids), without_any_mask)

    @property
    def size(self) -> tuple[int, int]:
        return self.config.size

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
        return sorted(requested, key=_id_order)

    def _check_lesion_folders(self) -> None:
        splits = {self.layout.split_of[i] for i in self.ids}
        for code in self.lesions:
            absent = sorted(splits - self.layout.lesion_folders[code])
            if absent:
                present = [c for c in LESIONS if splits <= self.layout.lesion_folders[c]]
                raise ValueError(
                    f"lesion {code!r}: no ground-truth folder '{MASKS_FOLDER}/<set>/{LESIONS[code]}' for the "
                    f"{' and '.join(SET_FOLDERS[s] for s in absent)} under {str(self.layout.base)!r}; "
                    f"lesions with masks there: {present}"
                )

    def _check_mask_sizes(self) -> None:
        for image_id in self.ids:
            image_path = self.layout.images[image_id]
            image_size = _header_size(image_path, "image")
            for code in self.lesions:
                mask_path = self.layout.masks[code].get(image_id)
                if mask_path is None:
                    continue
                mask_size = _header_size(mask_path, "mask")
                if mask_size != image_size:
                    raise ValueError(_size_mismatch(image_path, image_size, mask_path, mask_size))

    def mask_counts(self) -> dict[str, int]:
        """Number of images (``"images"``) and of mask files per requested lesion among :attr:`ids`."""
        counts = {"images": len(self.ids)}
        for code in self.lesions:
            counts[code] = sum(i in self.layout.masks[code] for i in self.ids)
        return counts

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

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        image, masks = self.load_arrays(image_id)
        item = {
            # The arrays are fresh (read from the cache or just computed), so they can be shared.
            "image": rearrange(torch.from_numpy(image), "h w c -> c h w").float().div_(255.0),
            "mask": torch.from_numpy(masks).float(),
            "id": image_id,
        }
        return self.transform(item) if self.transform is not None else item

    def load_arrays(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed uint8 arrays of one image, from the cache when possible.

        Shape:
            Returns image ``(H, W, 3)`` and masks ``(L, H, W)`` with values 0/1.
        """
        entry = self._image_entry(image_id)
        box = Box(*entry["box"].tolist())
        source_size = tuple(entry["source_size"].tolist())
        masks = [self._mask_entry(image_id, code, box, source_size) for code in self.lesions]
        return entry["image"], np.stack(masks)

    def crop_box(self, image_id: str) -> Box:
        """The field-of-view box cropped out of the source image (source pixels), e.g. to map
        predictions back to the original 4288 x 2848 resolution."""
        return Box(*self._image_entry(image_id)["box"].tolist())

    def prepare(self, num_threads: int = 1) -> "IDRiD":
        """Preprocess every image into the cache now (decoding releases the GIL, so threads help)."""
        if num_threads <= 1:
            for image_id in self.ids:
                self.load_arrays(image_id)
        else:
            with ThreadPoolExecutor(num_threads) as pool:
                list(pool.map(self.load_arrays, self.ids))
        return self

    def _cached(self, name: str, kind: str, sources: list[Path], settings: dict, compute) -> dict[str, np.ndarray]:
        """``compute()``'s arrays, read from the cache when an entry with the same key exists."""
        if self.cache is None:
            return compute()
        key = cache_key(kind, sources, settings)
        stored = self.cache.load(name, key)
        if stored is None:
            stored = compute()
            self.cache.save(name, key, stored)
        return stored

    def _image_entry(self, image_id: str) -> dict[str, np.ndarray]:
        image_path = self.layout.images[image_id]

        def compute() -> dict[str, np.ndarray]:
            image = read_fundus_image(image_path)
            width, height = image.size
            box = find_fov_box(image) if self.config.crop_fov else Box(0, 0, height, width)
            return {
                "image": resize_image(image, box, self.config.size),
                "box": np.asarray(box, dtype=np.int64),
                "source_size": np.asarray([width, height], dtype=np.int64),
            }

        settings = {"size": self.config.size, "crop_fov": self.config.crop_fov}
        return self._cached(f"{image_id}-image", "image", [image_path], settings, compute)

    def _mask_entry(self, image_id: str, code: str, box: Box, source_size: tuple[int, int]) -> np.ndarray:
        mask_path = self.layout.masks[code].get(image_id)
        if mask_path is None:
            return np.zeros(self.config.size, dtype=np.uint8)
        image_path = self.layout.images[image_id]

        def compute() -> dict[str, np.ndarray]:
            lesion = read_lesion_mask(mask_path)
            mask_size = (lesion.shape[1], lesion.shape[0])
            if mask_size != source_size:
                raise ValueError(_size_mismatch(image_path, source_size, mask_path, mask_size))
            return {"mask": resize_mask(lesion, box, self.config.size, self.config.mask_resize)}

        # The crop box comes from the image, so the image file is part of the mask's key too.
        sources = [image_path, mask_path]
        return self._cached(f"{image_id}-{code}", "mask", sources, asdict(self.config), compute)["mask"]


def _size_mismatch(image_path: Path, image_size, mask_path: Path, mask_size) -> str:
    return (
        f"mask {str(mask_path)!r} is {mask_size[0]}x{mask_size[1]} (W x H) but its image "
        f"{str(image_path)!r} is {image_size[0]}x{image_size[1]}; a mask must have its image's size"
    )
