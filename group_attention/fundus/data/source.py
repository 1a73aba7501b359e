"""The seam between data and the training engine: what a segmentation data source provides.

The engine (:mod:`group_attention.fundus.engine`) never reads a folder itself: it asks a :class:`SegmentationSource` for
the class names, the image ids of each split, the folds of a protocol, and a Dataset of preprocessed images and
masks. :class:`~group_attention.fundus.data.IDRiDSource` (the download's layout) and
:class:`~group_attention.fundus.data.SyntheticIDRiDSource` (the generated look-alike) are two such sources; the contract
below is what a new one (e.g. a folder of images with a folder of masks per class) must keep. :doc:`/data`
("Data sources") says the same with an example.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch.utils.data import Dataset

from ..._checks import check_choice
from .folds import kfold_ids

__all__ = ["PROTOCOLS", "SOURCE_SPLITS", "SegmentationSource"]

#: The splits every source names: its training set, its testing set, and every image.
SOURCE_SPLITS = ("train", "test", "all")
#: ``"cv"``: k-fold cross-validation over every image; ``"official"``: train on ``"train"``, test on ``"test"``.
PROTOCOLS = ("cv", "official")


class SegmentationSource(ABC):
    """A set of images with one binary mask per class, as the engine uses it.

    The contract:

    - :attr:`classes`: the names of the masks a source holds, e.g. IDRiD's lesion codes ``("MA", "HE", "EX", "SE",
      "OD")``. The engine trains one model per class it is asked for; :meth:`check_classes` refuses other names.
    - :meth:`ids`: the image ids of ``"train"``, ``"test"`` or ``"all"``, sorted, unique, stable across calls.
      ``"all"`` is every image; a source without an official split raises ``ValueError`` for ``"train"`` and
      ``"test"`` (only cross-validation then works).
    - :meth:`dataset`: a map-style Dataset over the given ids (in any order, each item names its id) whose items are
      ``{"image": float32 (3, H, W) in [0, 1], "mask": float32 (L, H, W) 0/1 (one channel per requested class, in
      the order requested), "id": str}`` at ``size = (H, W)``. Preprocessing (e.g. a field-of-view crop, which a
      source may make optional) and the on-disk cache are the source's business; a Dataset must be picklable so
      that DataLoader workers can load it.
    - :meth:`folds`: ``[(train_ids, test_ids), ...]`` for a protocol of :data:`PROTOCOLS`, test folds disjoint.
      The default is :func:`~group_attention.fundus.data.kfold_ids` over ``ids("all")`` for ``"cv"`` and
      ``[(ids("train"), ids("test"))]`` for ``"official"``.
    - :meth:`prepare`: makes the files exist (the synthetic source writes its tree). The engine calls it once, on
      process 0 only, before any other method; other processes wait. The default does nothing.
    - :meth:`check_masks`: raises ``ValueError`` naming the folder when a class has no mask file for a split it
      would read; :meth:`mask_location`: where a class's masks of a split live, for error messages. The defaults
      check nothing and name the class.
    - :attr:`synthetic`: True when the images are generated, not real (results then say so).
    - :meth:`summary`: what the source holds, for a person (counts per split and class).

    Example:
        >>> from group_attention.fundus.data import SyntheticIDRiDSource
        >>> import tempfile
        >>> source = SyntheticIDRiDSource(tempfile.mkdtemp(), n_train=4, n_test=2, size=(64, 96))
        >>> source.prepare()
        >>> source.ids("test"), [len(test) for _, test in source.folds("cv", n_folds=2, seed=0)]
        (['IDRiD_05', 'IDRiD_06'], [3, 3])
        >>> item = source.dataset(["EX"], ["IDRiD_01"], size=(32, 48), cache_dir=None)[0]
        >>> item["image"].shape, item["mask"].shape, item["id"]
        (torch.Size([3, 32, 48]), torch.Size([1, 32, 48]), 'IDRiD_01')
    """

    #: True when the images are generated rather than real.
    synthetic: bool = False

    @property
    @abstractmethod
    def classes(self) -> tuple[str, ...]:
        """The names of the masks this source holds."""

    @abstractmethod
    def ids(self, split: str = "all") -> list[str]:
        """Sorted image ids of ``split`` (one of :data:`SOURCE_SPLITS`)."""

    @abstractmethod
    def dataset(
        self,
        classes: Sequence[str],
        ids: Sequence[str],
        size: tuple[int, int],
        cache_dir: str | os.PathLike | None = "auto",
    ) -> Dataset:
        """A Dataset over ``ids`` with one mask channel per name of ``classes``, images and masks at ``size``.

        Args:
            classes: names among :attr:`classes`.
            ids: image ids among ``ids("all")``, each given once.
            size: ``(H, W)`` of every item.
            cache_dir: ``"auto"``, a folder for preprocessed arrays, or None for no cache.
        """

    def summary(self) -> str:
        """What the source holds, for a person."""
        return f"{type(self).__name__}: {len(self.ids('all'))} images; classes {list(self.classes)}"

    def prepare(self) -> None:  # noqa: B027 - optional hook: most sources have nothing to write
        """Make the files exist; called once, on process 0 only, before any other method."""

    def check_masks(self, names: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` naming the folder if a class of ``names`` has no mask file for a split's images."""

    def mask_location(self, name: str, split: str) -> str:
        """Where the masks of class ``name`` for ``split`` live, as a phrase for error messages."""
        return f"the {split!r} masks of class {name!r}"

    def check_classes(self, names: Sequence[str]) -> tuple[str, ...]:
        """Return ``names`` as a tuple if each is one of :attr:`classes`; ``ValueError`` naming the first that is
        not (``"lesion must be one of [...]"``)."""
        for name in names:
            check_choice("lesion", name, list(self.classes))
        return tuple(names)

    def folds(self, protocol: str, n_folds: int = 3, seed: int = 0) -> list[tuple[list[str], list[str]]]:
        """``[(train_ids, test_ids), ...]`` of ``protocol``: ``"cv"`` (``n_folds`` folds over every image, seeded)
        or ``"official"`` (one pair: the training and the testing set; ``n_folds`` and ``seed`` are unused)."""
        check_choice("protocol", protocol, PROTOCOLS)
        if protocol == "cv":
            return kfold_ids(self.ids("all"), n_folds=n_folds, seed=seed)
        return [(self.ids("train"), self.ids("test"))]
