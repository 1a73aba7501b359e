"""Your own images: a folder of images with binary masks, as a data source for the engine.

:class:`PairedFolderSource` pairs each image of one folder with its masks, one per class, found either in one
sub-folder per class (``masks/EX/img01.png``) or in one folder with a suffix per class (``masks/img01_EX.png``).
The images go through IDRiD's preprocessing (field-of-view crop, which can be turned off, resize, on-disk cache)
and masks through :func:`~group_attention.fundus.data.decode.read_binary_mask`. The matching rules are written in
the class docstring and in :doc:`/data` ("Your own images").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._checks import check_choice
from .decode import header_size, read_binary_mask, read_fundus_image, read_lesion_mask
from .preprocess import PreprocessConfig
from .preprocessed import PreprocessedDataset, size_mismatch
from .source import SegmentationSource
from .suffixes import IMAGE_SUFFIXES, has_image_suffix

__all__ = ["MISSING_MASK", "PairedFolderDataset", "PairedFolderSource"]

#: What an image without a mask file for a class means: ``"error"`` (refuse) or ``"empty"`` (no lesion).
MISSING_MASK = ("error", "empty")
_SPLIT_NAMES = ("train", "test")


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    """``{stem: path}`` of the image files directly in ``folder``; ``ValueError`` naming both files of a stem
    found twice (``a.png`` and ``a.jpg``), or the folder when it holds none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not has_image_suffix(path):
            continue
        if path.stem in found:
            raise ValueError(
                f"duplicate file stem {path.stem!r} in the {what} folder: {str(found[path.stem])!r} and "
                f"{str(path)!r}; keep one of them"
            )
        found[path.stem] = path
    if not found:
        raise ValueError(
            f"{what} folder {str(folder)!r} holds no image file (extensions {', '.join(IMAGE_SUFFIXES)}, any case)"
        )
    return found


def _read_split_file(path: Path, known: set[str]) -> list[str]:
    """The ids listed in a split file (one per line; blank lines and ``#`` comments skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise OSError(f"cannot read split file {str(path)!r}: {err}") from err
    ids = [line.split("#", 1)[0].strip() for line in lines]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise ValueError(f"split file {str(path)!r} lists no image id (one per line)")
    unknown = [i for i in ids if i not in known]
    if unknown:
        shown = unknown[:10] + (["..."] if len(unknown) > 10 else [])
        raise ValueError(f"split file {str(path)!r} lists {len(unknown)} ids that match no image (file stem): {shown}")
    return sorted(ids)


@dataclass
class _FolderFiles:
    """What :class:`PairedFolderSource` found: the image and mask paths by id (the layout a Dataset reads)."""

    images: dict[str, Path]
    masks: dict[str, dict[str, Path]]
    orphan_masks: list[Path] = field(default_factory=list)


class PairedFolderDataset(PreprocessedDataset):
    """The images and masks of a :class:`PairedFolderSource` as a Dataset: the same preprocessing and cache as IDRiD.

    Items are ``{"image": float32 (3, H, W) in [0, 1], "mask": float32 (L, H, W) 0/1, "id": str}``, a missing
    mask file giving an all-zero channel (the source refuses missing masks unless told they are empty). Built by
    :meth:`PairedFolderSource.dataset`.
    """

    def __init__(
        self,
        files: _FolderFiles,
        classes: Sequence[str],
        ids: Sequence[str],
        size: tuple[int, int],
        cache_dir: str | os.PathLike | None,
        crop_fov: bool,
        binary_masks: bool,
    ) -> None:
        self.binary_masks = binary_masks
        super().__init__(
            files.images,
            files.masks,
            classes,
            ids,
            PreprocessConfig(size=size, crop_fov=crop_fov),
            cache_dir,
            read_mask=read_binary_mask if binary_masks else read_lesion_mask,
            # A mask read leniently (e.g. by IDRiD from the same file) must not be served to a strict reader.
            mask_settings={"binary_masks": binary_masks},
        )

    def summary(self) -> str:
        counts = self.mask_counts()
        per_class = ", ".join(f"{name} {counts[name]}/{counts['images']}" for name in self.classes)
        return f"paired folders: {counts['images']} images; masks {per_class}"

    def __repr__(self) -> str:
        return f"PairedFolderDataset(classes={list(self.classes)}, size={self.size}, images={len(self.ids)})"


class PairedFolderSource(SegmentationSource):
    """A folder of images with binary masks per class, as a
    :class:`~group_attention.fundus.data.source.SegmentationSource`.

    Layouts (``images`` and ``masks`` are the two folders given)::

        images/img01.jpg             masks/EX/img01.png        (one sub-folder per class; default)
        images/img02.png             masks/HE/img01.png
                                     -- or --
                                     masks/img01_EX.png        (one folder, a suffix per class: mask_suffixes)

    Matching rules:

    - Files are read directly in each folder (not in sub-folders); files whose extension is not one of
      :data:`IMAGE_SUFFIXES` (compared case-insensitively) and hidden files are ignored.
    - An image's id is its file stem (name without the extension), compared exactly (case-sensitive). A mask
      belongs to the image whose stem it equals (per-class folders) or equals followed by the class suffix (suffix
      layout), whatever the extension of either. Two files of one folder with the same stem (``a.png`` and
      ``a.jpg``) are an error naming both.
    - Classes: ``classes`` if given, else every sub-folder of ``masks`` (sorted) in the per-class layout; the suffix
      layout needs ``classes`` or a mapping of suffixes.
    - An image without a mask file for a class is an error listing them, unless ``missing_mask="empty"``: then it
      has no lesion of that class. Mask files that match no image are reported by :meth:`summary`.

    Images may be RGB or greyscale (converted to 3 channels), JPEG, PNG or TIFF. Masks must be binary (at most two
    values of their strongest channel: 0/255, 0/1, a two-colour palette, red on black), of their image's size.

    Args:
        images: the image folder.
        masks: the mask folder (per-class sub-folders, or files with suffixes).
        classes: class names to use (default: the sub-folders of ``masks``).
        mask_suffixes: None (default) for per-class sub-folders; True for ``<stem>_<CLASS>.*`` in ``masks``; or a
            mapping ``{class: suffix}``, e.g. ``{"EX": "_ex"}``.
        crop_fov: crop the black background around a fundus field of view (default True); False for images that
            are not fundus photographs.
        missing_mask: ``"error"`` (default) or ``"empty"``.
        splits: optional ``{"train": path, "test": path}``: text files with one image id per line, giving
            ``ids("train")``/``ids("test")`` and the ``"official"`` protocol. Without them only ``"all"`` exists
            (cross-validation).
        binary_masks: refuse masks with more than two values (default True); False thresholds them as IDRiD's
            (:func:`~group_attention.fundus.data.read_lesion_mask`).

    Raises:
        FileNotFoundError: a folder that does not exist.
        ValueError: an empty folder, duplicate stems, unknown classes, images without masks, a split file naming
            ids that match no image (each naming the files).

    Example:
        >>> source = PairedFolderSource("data/images", "data/masks", classes=["EX"])  # doctest: +SKIP
        >>> print(source.summary())  # doctest: +SKIP
        >>> item = source.dataset(["EX"], source.ids("all")[:1], size=(384, 512))[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        images: str | os.PathLike,
        masks: str | os.PathLike,
        *,
        classes: Sequence[str] | None = None,
        mask_suffixes: bool | Mapping[str, str] | None = None,
        crop_fov: bool = True,
        missing_mask: str = "error",
        splits: Mapping[str, str | os.PathLike] | None = None,
        binary_masks: bool = True,
    ) -> None:
        check_choice("missing_mask", missing_mask, MISSING_MASK)
        if not isinstance(crop_fov, bool):
            raise TypeError(f"crop_fov must be True or False; got {crop_fov!r}")
        if isinstance(classes, str):
            raise TypeError(f"classes must be a list of class names, got the string {classes!r}")
        self.images_folder, self.masks_folder = Path(images), Path(masks)
        self.crop_fov, self.missing_mask, self.binary_masks = crop_fov, missing_mask, binary_masks
        images_by_id = _image_files(self.images_folder, "image")
        if not self.masks_folder.is_dir():
            raise FileNotFoundError(f"mask folder {str(self.masks_folder)!r} does not exist or is not a folder")
        if mask_suffixes is None or mask_suffixes is False:
            self.suffixes = None
            masks_by_class, orphans = self._per_class_masks(classes, set(images_by_id))
        else:
            self.suffixes = self._suffixes(classes, mask_suffixes)
            masks_by_class, orphans = self._suffixed_masks(set(images_by_id))
        self._classes = tuple(masks_by_class)
        self.files = _FolderFiles(images_by_id, masks_by_class, orphans)
        self._splits = self._read_splits(splits)
        self._scan: dict | None = None
        if missing_mask == "error":
            self._check_complete(self._classes, self.ids("all"))

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def _per_class_masks(self, classes, image_ids: set[str]) -> tuple[dict[str, dict[str, Path]], list[Path]]:
        present = sorted(p.name for p in self.masks_folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        names = list(dict.fromkeys(classes)) if classes is not None else present
        if not names:
            raise ValueError(
                f"mask folder {str(self.masks_folder)!r} has no sub-folder per class (masks/<CLASS>/<stem>.png); "
                "for one folder of <stem>_<CLASS> files give the classes with suffixes (--mask-suffix)"
            )
        absent = [name for name in names if name not in present]
        if absent:
            raise ValueError(
                f"classes {absent} have no sub-folder in mask folder {str(self.masks_folder)!r}; "
                f"sub-folders there: {present}"
            )
        masks, orphans = {}, []
        for name in names:
            files = _image_files(self.masks_folder / name, f"{name!r} mask")
            masks[name] = {stem: path for stem, path in files.items() if stem in image_ids}
            orphans += [path for stem, path in files.items() if stem not in image_ids]
        return masks, orphans

    @staticmethod
    def _suffixes(classes, mask_suffixes) -> dict[str, str]:
        if isinstance(mask_suffixes, Mapping):
            suffixes = {str(name): str(suffix) for name, suffix in mask_suffixes.items()}
            if classes is not None:
                unknown = [name for name in classes if name not in suffixes]
                if unknown:
                    raise ValueError(f"classes {unknown} have no entry in mask_suffixes {suffixes}")
                suffixes = {name: suffixes[name] for name in dict.fromkeys(classes)}
        elif mask_suffixes is True:
            if not classes:
                raise ValueError("mask_suffixes=True (files <stem>_<CLASS>.*) needs the class names: give classes")
            suffixes = {name: f"_{name}" for name in dict.fromkeys(classes)}
        else:
            raise TypeError(f"mask_suffixes must be None, True or a mapping {{class: suffix}}; got {mask_suffixes!r}")
        if not suffixes or any(not suffix for suffix in suffixes.values()):
            raise ValueError(f"mask_suffixes must give each class a non-empty suffix; got {suffixes}")
        return suffixes

    def _suffixed_masks(self, image_ids: set[str]) -> tuple[dict[str, dict[str, Path]], list[Path]]:
        files = _image_files(self.masks_folder, "mask")
        masks: dict[str, dict[str, Path]] = {name: {} for name in self.suffixes}
        orphans = []
        for stem, path in files.items():
            owners = [
                (name, stem[: -len(suffix)])
                for name, suffix in self.suffixes.items()
                if stem.endswith(suffix) and stem[: -len(suffix)] in image_ids
            ]
            if not owners:
                orphans.append(path)
            for name, image_id in owners:
                masks[name][image_id] = path
        return masks, orphans

    def _read_splits(self, splits) -> dict[str, list[str]]:
        if splits is None:
            return {}
        if not isinstance(splits, Mapping):
            raise TypeError(f"splits must be a mapping like {{'train': path, 'test': path}}; got {splits!r}")
        for name in splits:
            check_choice("split", name, _SPLIT_NAMES)
        missing = [name for name in _SPLIT_NAMES if name not in splits]
        if missing:
            raise ValueError(f"splits must give both a 'train' and a 'test' file; missing {missing}")
        known = set(self.files.images)
        read = {name: _read_split_file(Path(splits[name]), known) for name in _SPLIT_NAMES}
        both = sorted(set(read["train"]) & set(read["test"]))
        if both:
            raise ValueError(
                f"split files {str(splits['train'])!r} and {str(splits['test'])!r} both list {both[:10]}; "
                "an image is either for training or for testing"
            )
        return read

    def _check_complete(self, names: Sequence[str], ids: Sequence[str]) -> None:
        for name in names:
            without = [i for i in ids if i not in self.files.masks[name]]
            if without:
                shown = [str(self.files.images[i]) for i in without[:10]] + (["..."] if len(without) > 10 else [])
                raise ValueError(
                    f"{len(without)} images have no mask in {self.mask_location(name, 'all')}: {shown}; add the "
                    "masks, or pass missing_mask='empty' (--missing-mask empty) if they have no lesion"
                )

    def ids(self, split: str = "all") -> list[str]:
        check_choice("split", split, ("train", "test", "all"))
        if split == "all":
            return sorted(self.files.images)
        if not self._splits:
            raise ValueError(
                f"split {split!r} needs split files (splits={{'train': path, 'test': path}}, --split-file); "
                "without them only cross-validation over 'all' works"
            )
        return list(self._splits[split])

    def mask_location(self, name: str, split: str) -> str:
        if self.suffixes is None:
            return f"the mask folder {str(self.masks_folder / name)!r}"
        return f"the mask folder {str(self.masks_folder)!r} (files <stem>{self.suffixes[name]}.*)"

    def check_masks(self, names: Sequence[str]) -> None:
        names = self.check_classes(names)
        for name in names:
            if not self.files.masks[name]:
                raise ValueError(f"class {name!r}: {self.mask_location(name, 'all')} holds no mask of any image")

    def dataset(
        self,
        classes: Sequence[str],
        ids: Sequence[str],
        size: tuple[int, int],
        cache_dir: str | os.PathLike | None = "auto",
    ) -> PairedFolderDataset:
        classes = self.check_classes(classes)
        if isinstance(ids, str):
            raise ValueError(f"ids must be a list of image ids; got the string {ids!r}")
        unknown = [i for i in ids if i not in self.files.images]
        if unknown or not ids:
            raise ValueError(f"ids must be a non-empty list of image ids (file stems); not found: {unknown}")
        return PairedFolderDataset(self.files, classes, ids, size, cache_dir, self.crop_fov, self.binary_masks)

    def check_data(self) -> dict:
        """Decode every image and mask (named errors for unreadable files, masks of another size than their image,
        non-binary masks) and return what :meth:`summary` shows. Read once, then remembered."""
        if self._scan is not None:
            return self._scan
        sizes, lesion_pixels, total_pixels = [], dict.fromkeys(self.classes, 0), 0
        read_mask = read_binary_mask if self.binary_masks else read_lesion_mask
        for image_id in self.ids("all"):
            image_path = self.files.images[image_id]
            size = read_fundus_image(image_path).size
            sizes.append(size)
            total_pixels += size[0] * size[1]
            for name in self.classes:
                mask_path = self.files.masks[name].get(image_id)
                if mask_path is None:
                    continue
                mask = read_mask(mask_path)
                if (mask.shape[1], mask.shape[0]) != size:
                    raise ValueError(size_mismatch(image_path, size, mask_path, (mask.shape[1], mask.shape[0])))
                lesion_pixels[name] += int(mask.sum())
        areas = np.asarray([w * h for w, h in sizes])
        self._scan = {
            "images": len(sizes),
            "smallest": sizes[int(areas.argmin())],
            "largest": sizes[int(areas.argmax())],
            "lesion_share": {name: lesion_pixels[name] / total_pixels for name in self.classes},
            "without_mask": {
                name: [i for i in self.ids("all") if i not in self.files.masks[name]] for name in self.classes
            },
        }
        return self._scan

    def check_headers(self) -> None:
        """Check every image and mask from the file headers only (fast): readable, masks of their image's size."""
        for image_id, image_path in self.files.images.items():
            size = header_size(image_path, "image")
            for name in self.classes:
                mask_path = self.files.masks[name].get(image_id)
                if mask_path is not None and header_size(mask_path, "mask") != size:
                    raise ValueError(size_mismatch(image_path, size, mask_path, header_size(mask_path, "mask")))

    def summary(self) -> str:
        """Counts, image sizes, lesion pixel share per class, ids without masks, masks without images: every file is
        decoded on the first call (see :meth:`check_data`)."""
        scan = self.check_data()
        lines = [
            f"PairedFolderSource: {scan['images']} images in {str(self.images_folder)!r}, masks in "
            f"{str(self.masks_folder)!r} ({'suffixes ' + str(self.suffixes) if self.suffixes else 'a folder per class'}"
            f"); field-of-view crop {'on' if self.crop_fov else 'off'}",
            f"  image sizes (W x H): smallest {scan['smallest'][0]}x{scan['smallest'][1]}, "
            f"largest {scan['largest'][0]}x{scan['largest'][1]}",
        ]
        if self._splits:
            lines.append(f"  splits: train {len(self._splits['train'])}, test {len(self._splits['test'])} images")
        for name in self.classes:
            without = scan["without_mask"][name]
            missing = f"; without mask ({self.missing_mask}): {without[:10]}" if without else ""
            lines.append(
                f"  {name}: masks {scan['images'] - len(without)}/{scan['images']}, lesion pixels "
                f"{100 * scan['lesion_share'][name]:.3f}%{missing}"
            )
        orphans = self.files.orphan_masks
        lines.append(
            f"  mask files matching no image: {len(orphans)}"
            + (f" {[str(p) for p in orphans[:5]]}" if orphans else "")
            + "; duplicate stems: none (they are refused)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(images={str(self.images_folder)!r}, masks={str(self.masks_folder)!r}, "
            f"classes={list(self.classes)}, crop_fov={self.crop_fov}, missing_mask={self.missing_mask!r})"
        )
