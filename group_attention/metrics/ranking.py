"""Ranking metrics: AUPR (IDRiD's, scikit-learn's step-wise average precision) and ROC AUC, exact or from score
histograms, and the bounds of a histogram's error. Conventions: :mod:`group_attention.metrics`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_bool
from .inputs import check_num_bins, check_pred_and_target, checked_histogram

__all__ = [
    "aupr",
    "roc_auc",
    "score_histogram",
    "aupr_from_histogram",
    "roc_auc_from_histogram",
    "aupr_error_bound",
    "roc_auc_error_bound",
]

DEFAULT_NUM_BINS = 10_000


def aupr(pred: Tensor, target: Tensor, *, per_image: bool = True, num_bins: int | None = None) -> Tensor:
    r"""Area under the precision-recall curve as scikit-learn's step-wise average precision.

    .. math::
        \mathrm{AP} = \sum_n (R_n - R_{n-1})\, P_n

    over the distinct scores in decreasing order; 0 when the ground truth has no positive pixel.

    Args:
        pred: probabilities (or a mask, read as scores 0 and 1), shape :math:`(B, *)`.
        target: ground-truth mask, same shape.
        per_image: one value per image, shape :math:`(B,)`, or one value over all pixels of the
            batch, shape (). Default: ``True``.
        num_bins: ``None`` for the exact value (sorts the pixels), or the number of histogram bins
            :math:`K` for the binned value of :class:`SegmentationMetrics`, within
            :func:`aupr_error_bound` of the exact one. Default: ``None``.

    Returns:
        float64 tensor on the device of ``pred``.

    Examples::

        >>> aupr(torch.tensor([[0.9, 0.8, 0.7, 0.1]]), torch.tensor([[1, 0, 1, 0]]))
        tensor([0.8333], dtype=torch.float64)
    """
    return _ranking_metric(pred, target, per_image, num_bins, _step_average_precision)


def roc_auc(pred: Tensor, target: Tensor, *, per_image: bool = True, num_bins: int | None = None) -> Tensor:
    r"""Area under the ROC curve (trapezoidal, ties count 1/2); 0.5 when only one class is present.

    Arguments, shapes and return value as for :func:`aupr`; the binned value is within
    :func:`roc_auc_error_bound` of the exact one.

    Examples::

        >>> roc_auc(torch.tensor([[0.9, 0.8, 0.7, 0.1]]), torch.tensor([[1, 0, 1, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    return _ranking_metric(pred, target, per_image, num_bins, _trapezoid_roc_auc)


def score_histogram(pred: Tensor, target: Tensor, num_bins: int = DEFAULT_NUM_BINS) -> Tensor:
    r"""Histograms of the scores of negative and positive pixels, pooled over the batch.

    Bin :math:`k = \min(\lfloor K p \rfloor, K - 1)` (computed in float64) holds the scores in
    :math:`[k/K, (k+1)/K)`; a score of 1 joins the last bin.

    Args:
        pred: probabilities (or a mask), shape :math:`(B, *)`.
        target: ground-truth mask, same shape.
        num_bins: :math:`K \ge 1`. Default: 10000.

    Returns:
        int64 tensor of shape :math:`(2, K)` on the device of ``pred``: row 0 negatives, row 1 positives.
    """
    check_num_bins(num_bins)
    check_pred_and_target(pred, target)
    return flat_histogram(pred.flatten(), target.flatten().bool(), num_bins)


def aupr_from_histogram(histogram: Tensor) -> Tensor:
    """Average precision of a :func:`score_histogram` (its bins taken as tied scores), a float64 scalar."""
    return _step_average_precision(*_cumulative_counts_from_histogram(checked_histogram(histogram)))


def roc_auc_from_histogram(histogram: Tensor) -> Tensor:
    """ROC AUC of a :func:`score_histogram` (pairs in the same bin count 1/2), a float64 scalar."""
    return _trapezoid_roc_auc(*_cumulative_counts_from_histogram(checked_histogram(histogram)))


def aupr_error_bound(histogram: Tensor) -> Tensor:
    r"""Largest possible :math:`|\mathrm{AP}_\text{exact} - \mathrm{AP}_\text{binned}|` given the histograms.

    Holds for every ordering of the scores inside each bin (see the module docstring for the
    derivation); 0 when no positive shares its bin with another pixel.

    Args:
        histogram: :math:`(2, K)` counts from :func:`score_histogram`.

    Returns:
        float64 scalar tensor in [0, 1].
    """
    negatives, positives = checked_histogram(histogram).flip(-1).double()  # highest scores first
    positives_above = positives.cumsum(0) - positives
    negatives_above = negatives.cumsum(0) - negatives
    binned = (positives_above + positives) / (positives_above + positives + negatives_above + negatives).clamp_min(1)
    best = (positives_above + positives) / (positives_above + positives + negatives_above).clamp_min(1)
    worst = (positives_above + 1) / (positives_above + 1 + negatives_above + negatives)
    per_bin = positives * torch.maximum(best - binned, binned - worst)
    return per_bin.sum() / positives.sum().clamp_min(1)


def roc_auc_error_bound(histogram: Tensor) -> Tensor:
    r"""Largest possible ROC AUC error of binning: :math:`\sum_k p_k n_k / (2 n_+ n_-)`, a float64 scalar."""
    negatives, positives = checked_histogram(histogram).double()
    pairs = positives.sum() * negatives.sum()
    return (positives * negatives).sum() / (2 * pairs.clamp_min(1))


# --------------------------------------------------------------------------- curves


def _ranking_metric(
    pred: Tensor, target: Tensor, per_image: bool, num_bins: int | None, area: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    check_bool("per_image", per_image)
    check_pred_and_target(pred, target)
    if num_bins is not None:
        check_num_bins(num_bins)
    scores, truth = pred.flatten(1), target.flatten(1).bool()
    if not per_image:
        scores, truth = scores.reshape(1, -1), truth.reshape(1, -1)
    values = torch.stack([area(*_cumulative_counts(image, labels, num_bins)) for image, labels in zip(scores, truth)])
    return values if per_image else values[0]


def _cumulative_counts(scores: Tensor, truth: Tensor, num_bins: int | None) -> tuple[Tensor, Tensor]:
    if num_bins is None:
        return _cumulative_counts_at_distinct_scores(scores, truth)
    return _cumulative_counts_from_histogram(flat_histogram(scores, truth, num_bins))


def _cumulative_counts_at_distinct_scores(scores: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """TP and FP counts at every distinct score taken as threshold, highest first (1D inputs)."""
    scores = scores.double()
    order = torch.argsort(scores, descending=True)
    sorted_scores, sorted_truth = scores[order], truth[order]
    true_positives = sorted_truth.long().cumsum(0)
    false_positives = (~sorted_truth).long().cumsum(0)
    # tied scores are one threshold: keep the counts after the last pixel of each tie
    last_of_tie = torch.ones_like(sorted_truth)
    last_of_tie[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    return true_positives[last_of_tie], false_positives[last_of_tie]


def _cumulative_counts_from_histogram(histogram: Tensor) -> tuple[Tensor, Tensor]:
    negatives, positives = histogram.flip(-1)  # highest bin first
    return positives.cumsum(0), negatives.cumsum(0)


def _step_average_precision(true_positives: Tensor, false_positives: Tensor) -> Tensor:
    true_positives, false_positives = true_positives.double(), false_positives.double()
    # empty leading bins have TP = FP = 0 but add no recall, so their precision is irrelevant
    precision = true_positives / (true_positives + false_positives).clamp_min(1)
    new_positives = torch.diff(true_positives, prepend=true_positives.new_zeros(1))
    # integer recall steps, one division at the end: a perfect ranking gives exactly 1.0
    return (new_positives * precision).sum() / true_positives[-1].clamp_min(1)


def _trapezoid_roc_auc(true_positives: Tensor, false_positives: Tensor) -> Tensor:
    origin = true_positives.new_zeros(1)
    true_positives = torch.cat([origin, true_positives]).double()
    false_positives = torch.cat([origin, false_positives]).double()
    positives, negatives = true_positives[-1], false_positives[-1]
    # trapezoids in count units, normalised once
    doubled_area = (torch.diff(false_positives) * (true_positives[1:] + true_positives[:-1])).sum()
    area = doubled_area / (2 * positives * negatives).clamp_min(1)
    return torch.where((positives > 0) & (negatives > 0), area, torch.full_like(area, 0.5))


def flat_histogram(scores: Tensor, truth: Tensor, num_bins: int) -> Tensor:
    """:func:`score_histogram` of 1-D ``scores`` and boolean ``truth``, unchecked: (2, num_bins) int64."""
    bins = (scores.double() * num_bins).floor().long().clamp_(0, num_bins - 1)
    # one bincount for both classes: positives are offset by num_bins
    combined = torch.bincount(bins + num_bins * truth.long(), minlength=2 * num_bins)
    return combined.view(2, num_bins)
