"""IDRiD's folder layout ("A. Segmentation", CC BY 4.0): where the images and masks of each set and lesion are.

IDRiD: Porwal P. et al., "Indian Diabetic Retinopathy Image Dataset (IDRiD)", Data 3(3):25, 2018. The layout::

    A. Segmentation/
      1. Original Images/a. Training Set/IDRiD_01.jpg .. IDRiD_54.jpg   (4288 x 2848 JPEG)
      1. Original Images/b. Testing Set/IDRiD_55.jpg .. IDRiD_81.jpg
      2. All Segmentation Groundtruths/{a. Training Set, b. Testing Set}/
         1. Microaneurysms/IDRiD_NN_MA.tif   2. Haemorrhages/IDRiD_NN_HE.tif
         3. Hard Exudates/IDRiD_NN_EX.tif    4. Soft Exudates/IDRiD_NN_SE.tif
         5. Optic Disc/IDRiD_NN_OD.tif

:func:`discover_idrid` finds the files without reading pixels; how names are matched (case, number prefixes,
nested downloads) is in :doc:`/data` ("The layout").
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .suffixes import has_image_suffix

__all__ = ["LESIONS", "SPLITS", "IDRiDLayout", "discover_idrid"]

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


def id_order(image_id: str) -> tuple[int, str]:
    """Sort key of ``"IDRiD_NN"`` ids: numerically, so ``IDRiD_9`` comes before ``IDRiD_10``."""
    return (int(image_id.split("_")[1]), image_id)


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
        check_split(split)
        return sorted((i for i, s in self.split_of.items() if split in ("all", s)), key=id_order)

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


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of :data:`SPLITS`."""
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
    skipped_images = [p for p in layout.ignored if has_image_suffix(p)]
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
