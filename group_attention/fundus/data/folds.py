"""Deterministic k-fold cross-validation over image ids (GANet: 3 folds over IDRiD's 81 images).

The order of the ids is decided by a hash of ``(seed, id)``, not by a random generator, so a fold
assignment never changes with the NumPy or PyTorch version, nor with the order in which the ids are
given. Sorted by that hash, the ids are dealt round-robin to the folds: fold sizes differ by at most one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["kfold_ids", "fold_of"]


def _shuffle_key(seed: int, image_id: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()
    return (digest, image_id)


def fold_of(ids: Sequence[str], n_folds: int = 3, seed: int = 0) -> dict[str, int]:
    """Test fold index (``0 .. n_folds - 1``) of every id.

    Raises:
        ValueError: ``n_folds`` not an int in ``[2, len(ids)]``, or duplicate / non-string ids.
    """
    if isinstance(ids, str):
        raise ValueError(f"ids must be a sequence of image ids like ['IDRiD_01', ...]; got the string {ids!r}")
    ids = list(ids)
    if not all(isinstance(i, str) for i in ids):
        raise ValueError(f"ids must be strings like 'IDRiD_01'; got {[i for i in ids if not isinstance(i, str)][:5]}")
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 image ids to split into folds; got {ids}")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"ids must be unique; duplicated: {duplicates}")
    if not isinstance(n_folds, int) or isinstance(n_folds, bool) or not 2 <= n_folds <= len(ids):
        raise ValueError(f"n_folds must be an int in [2, {len(ids)}] (the number of ids); got {n_folds!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int; got {seed!r}")
    shuffled = sorted(ids, key=lambda image_id: _shuffle_key(seed, image_id))
    return {image_id: position % n_folds for position, image_id in enumerate(shuffled)}


def kfold_ids(ids: Sequence[str], n_folds: int = 3, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Split ids into ``n_folds`` disjoint test folds that cover them all.

    Args:
        ids: unique image ids, e.g. ``discover_idrid(root).ids("all")``.
        n_folds: number of folds, 2 to ``len(ids)``. Default 3, as in the paper.
        seed: different seeds give different (but each reproducible) assignments. Default 0.

    Returns:
        ``[(train_ids, test_ids), ...]``, one pair per fold, each list sorted; the test lists are
        disjoint, cover ``ids`` and their sizes differ by at most one.

    Examples:
        >>> folds = kfold_ids([f"IDRiD_{i:02d}" for i in range(1, 82)], n_folds=3, seed=0)
        >>> [len(test) for _, test in folds]
        [27, 27, 27]
    """
    assignment = fold_of(ids, n_folds, seed)
    folds = []
    for fold in range(n_folds):
        test = sorted(i for i, f in assignment.items() if f == fold)
        train = sorted(i for i, f in assignment.items() if f != fold)
        folds.append((train, test))
    return folds
