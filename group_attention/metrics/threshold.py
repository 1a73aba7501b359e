"""Metrics at a threshold: the confusion counts TP, FP, FN, TN and Dice, accuracy, sensitivity and specificity
(eqs 4-7 of Ye et al. 2020) from them. Conventions: :mod:`group_attention.metrics`."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_bool
from .inputs import check_pred_and_target, check_threshold

__all__ = ["ConfusionCounts", "confusion_counts", "dice", "accuracy", "sensitivity", "specificity"]


class ConfusionCounts(NamedTuple):
    """Pixel counts, int64 tensors of shape (B,) per image or () pooled."""

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor


def confusion_counts(
    pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True
) -> ConfusionCounts:
    """TP, FP, FN and TN pixel counts of each image (or pooled over the batch).

    Args:
        pred: mask or probabilities, shape :math:`(B, *)`; positive where ``pred >= threshold``.
        target: ground-truth mask, same shape.
        threshold: in [0, 1], used for float ``pred`` only. Default: 0.5.
        per_image: counts of each image, shape :math:`(B,)`, or summed over the batch, shape ().
            Default: ``True``.

    Examples::

        >>> pred = torch.tensor([[0.9, 0.2, 0.6, 0.1]])
        >>> target = torch.tensor([[1, 1, 0, 0]])
        >>> confusion_counts(pred, target)
        ConfusionCounts(tp=tensor([1]), fp=tensor([1]), fn=tensor([1]), tn=tensor([1]))
    """
    check_threshold(threshold)
    check_bool("per_image", per_image)
    check_pred_and_target(pred, target)
    counts = counts_per_image(binarize(pred, threshold), target.bool())
    return counts if per_image else pooled_counts(counts)


def dice(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Dice similarity coefficient, eq. 4 of the GANet paper; 1 when ground truth and prediction are empty.

    .. math::
        \mathrm{Dice} = \frac{2|G \cap P|}{|G| + |P|} = \frac{2\,TP}{2\,TP + FP + FN}

    Args:
        pred: mask or probabilities, shape :math:`(B, *)`; positive where ``pred >= threshold``.
        target: ground-truth mask, same shape.
        threshold: in [0, 1], used for float ``pred`` only. Default: 0.5.
        per_image: one value per image, shape :math:`(B,)`, or one value from the counts pooled over
            the batch, shape (). Default: ``True``.

    Returns:
        float64 tensor on the device of ``pred``.

    Examples::

        >>> dice(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))
        tensor([0.6667], dtype=torch.float64)
    """
    return dice_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


def accuracy(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Pixel accuracy, eq. 5 of the GANet paper.

    .. math::
        \mathrm{Acc} = \frac{TP + TN}{TP + TN + FP + FN}

    Arguments, shapes and return value as for :func:`dice`.

    Examples::

        >>> accuracy(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    return accuracy_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


def sensitivity(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Sensitivity (recall), eq. 6 of the GANet paper; 1 when the ground truth has no positive pixel.

    .. math::
        \mathrm{Sensitivity} = \frac{TP}{TP + FN}

    Arguments, shapes and return value as for :func:`dice`.

    Examples::

        >>> sensitivity(torch.tensor([[1, 0, 0, 0]]), torch.tensor([[1, 1, 0, 0]]))
        tensor([0.5000], dtype=torch.float64)
    """
    return sensitivity_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


def specificity(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Specificity, eq. 7 of the GANet paper; 1 when the ground truth has no negative pixel.

    .. math::
        \mathrm{Specificity} = \frac{TN}{TN + FP}

    Arguments, shapes and return value as for :func:`dice`.

    Examples::

        >>> specificity(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))
        tensor([0.6667], dtype=torch.float64)
    """
    return specificity_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


# --------------------------------------------------------------------------- from counts


def _ratio(numerator: Tensor, denominator: Tensor, value_if_empty: float) -> Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    empty = torch.full_like(numerator, value_if_empty)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), empty)


def dice_from_counts(counts: ConfusionCounts) -> Tensor:
    """Eq. 4 from counts of shape (B,) or (): ``2 TP / (2 TP + FP + FN)``, 1 where nothing is positive."""
    return _ratio(2 * counts.tp, 2 * counts.tp + counts.fp + counts.fn, value_if_empty=1.0)


def accuracy_from_counts(counts: ConfusionCounts) -> Tensor:
    """Eq. 5 from counts: ``(TP + TN) / (TP + TN + FP + FN)``."""
    return _ratio(counts.tp + counts.tn, counts.tp + counts.tn + counts.fp + counts.fn, value_if_empty=1.0)


def sensitivity_from_counts(counts: ConfusionCounts) -> Tensor:
    """Eq. 6 from counts: ``TP / (TP + FN)``, 1 without a positive pixel."""
    return _ratio(counts.tp, counts.tp + counts.fn, value_if_empty=1.0)


def specificity_from_counts(counts: ConfusionCounts) -> Tensor:
    """Eq. 7 from counts: ``TN / (TN + FP)``, 1 without a negative pixel."""
    return _ratio(counts.tn, counts.tn + counts.fp, value_if_empty=1.0)


def counts_per_image(positive: Tensor, truth: Tensor) -> ConfusionCounts:
    """The confusion counts of each image of boolean ``positive`` and ``truth`` of shape (B, *): (B,) each."""
    positive, truth = positive.flatten(1), truth.flatten(1)
    return ConfusionCounts(
        tp=(positive & truth).sum(1),
        fp=(positive & ~truth).sum(1),
        fn=(~positive & truth).sum(1),
        tn=(~positive & ~truth).sum(1),
    )


def pooled_counts(counts: ConfusionCounts) -> ConfusionCounts:
    """Per-image counts (B,) summed over the batch: () each."""
    return ConfusionCounts(*(count.sum() for count in counts))


def binarize(pred: Tensor, threshold: float) -> Tensor:
    """``pred >= threshold`` decided exactly for the stored values: PyTorch would first round the threshold to
    ``pred``'s dtype (0.501 becomes 0.5 in bfloat16), so compare with the smallest value of that dtype that is at
    least ``threshold`` instead."""
    if not pred.is_floating_point():
        return pred.bool()
    cut = torch.tensor(threshold, dtype=pred.dtype)
    if cut.item() < threshold:
        cut = torch.nextafter(cut, torch.tensor(math.inf, dtype=pred.dtype))
    return pred >= cut.item()  # exactly representable in pred's dtype: no rounding left
