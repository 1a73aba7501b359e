r"""Segmentation metrics of GANet (Ye et al., SPIE 2020, section 3.3, eqs 4-7) and the IDRiD AUPR.

Ye et al., "GANet: Group attention network for diabetic retinopathy image segmentation", Proc. SPIE
11313, 1131307 (2020) report Dice (eq. 4), accuracy (5), sensitivity (6) and specificity (7) from the
pixel counts TP, TN, FP, FN; the IDRiD challenge (Porwal et al., Medical Image Analysis 59, 101561,
2020) ranks lesion segmentation by the area under the precision-recall curve (AUPR).

Shape convention:
    ``pred`` and ``target`` have the same shape :math:`(B, *)` with at least one dim after the batch
    dim. Dim 0 indexes images; every other dim (channels of size 1, height, width, depth) is pooled
    into that image. One tensor holds one lesion type: for several, pass ``pred[:, c]`` per class.
    A single image is ``image[None]``; a 2D tensor is read as B one-dimensional images.

    ``per_image=True`` (default) returns a float64 tensor of shape :math:`(B,)`, one value per image;
    ``per_image=False`` returns a scalar tensor computed from counts pooled over the whole batch
    (the "pooled over a dataset" value: sum the counts, then divide once).

Predictions:
    ``pred`` is a mask (bool, or integer with values 0/1; ``threshold`` is then unused) or float
    probabilities in [0, 1], counted positive where ``pred >= threshold``. ``>=`` matches the
    thresholds of scikit-learn's ``precision_recall_curve``, so for a threshold on a bin edge the
    thresholded counts lie on the binned precision-recall curve. Logits are rejected (values outside
    [0, 1]). ``target`` is a mask (bool, or 0/1 of any dtype).

Empty denominators:
    No NaN is ever returned: Dice, sensitivity and specificity with an empty denominator are 1, AUPR without a
    positive pixel is 0, ROC AUC with one class is 0.5. The reasons, and why pooled values are the ones to report,
    are in :doc:`/losses_and_metrics` ("Definitions (eqs 4-7) and empty denominators").

AUPR:
    The step-wise average precision of scikit-learn, :math:`\mathrm{AP} = \sum_n (R_n - R_{n-1}) P_n` over
    decreasing thresholds. :func:`aupr` computes it exactly (``num_bins=None``) or from a histogram;
    :class:`SegmentationMetrics` streams it from fixed-bin histograms, whose distance to the exact AP is at most
    :func:`aupr_error_bound` (the derivation: :doc:`/losses_and_metrics`, "Streaming: histograms and the error
    bound").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_bool

__all__ = [
    "ConfusionCounts",
    "confusion_counts",
    "dice",
    "accuracy",
    "sensitivity",
    "specificity",
    "aupr",
    "roc_auc",
    "score_histogram",
    "aupr_from_histogram",
    "roc_auc_from_histogram",
    "aupr_error_bound",
    "roc_auc_error_bound",
    "SegmentationMetrics",
]

DEFAULT_NUM_BINS = 10_000


class ConfusionCounts(NamedTuple):
    """Pixel counts, int64 tensors of shape (B,) per image or () pooled."""

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor


# --------------------------------------------------------------------------- thresholded metrics


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
    _check_threshold(threshold)
    check_bool("per_image", per_image)
    _check_pred_and_target(pred, target)
    counts = _counts_per_image(_binarize(pred, threshold), target.bool())
    return counts if per_image else _pooled(counts)


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
    return _dice_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


def accuracy(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Pixel accuracy, eq. 5 of the GANet paper.

    .. math::
        \mathrm{Acc} = \frac{TP + TN}{TP + TN + FP + FN}

    Arguments, shapes and return value as for :func:`dice`.

    Examples::

        >>> accuracy(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    return _accuracy_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


def sensitivity(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Sensitivity (recall), eq. 6 of the GANet paper; 1 when the ground truth has no positive pixel.

    .. math::
        \mathrm{Sensitivity} = \frac{TP}{TP + FN}

    Arguments, shapes and return value as for :func:`dice`.

    Examples::

        >>> sensitivity(torch.tensor([[1, 0, 0, 0]]), torch.tensor([[1, 1, 0, 0]]))
        tensor([0.5000], dtype=torch.float64)
    """
    return _sensitivity_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


def specificity(pred: Tensor, target: Tensor, threshold: float = 0.5, *, per_image: bool = True) -> Tensor:
    r"""Specificity, eq. 7 of the GANet paper; 1 when the ground truth has no negative pixel.

    .. math::
        \mathrm{Specificity} = \frac{TN}{TN + FP}

    Arguments, shapes and return value as for :func:`dice`.

    Examples::

        >>> specificity(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))
        tensor([0.6667], dtype=torch.float64)
    """
    return _specificity_from_counts(confusion_counts(pred, target, threshold, per_image=per_image))


# --------------------------------------------------------------------------- ranking metrics


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
    _check_num_bins(num_bins)
    _check_pred_and_target(pred, target)
    return _histogram(pred.flatten(), target.flatten().bool(), num_bins)


def aupr_from_histogram(histogram: Tensor) -> Tensor:
    """Average precision of a :func:`score_histogram` (its bins taken as tied scores), a float64 scalar."""
    return _step_average_precision(*_cumulative_counts_from_histogram(_checked_histogram(histogram)))


def roc_auc_from_histogram(histogram: Tensor) -> Tensor:
    """ROC AUC of a :func:`score_histogram` (pairs in the same bin count 1/2), a float64 scalar."""
    return _trapezoid_roc_auc(*_cumulative_counts_from_histogram(_checked_histogram(histogram)))


def aupr_error_bound(histogram: Tensor) -> Tensor:
    r"""Largest possible :math:`|\mathrm{AP}_\text{exact} - \mathrm{AP}_\text{binned}|` given the histograms.

    Holds for every ordering of the scores inside each bin (see the module docstring for the
    derivation); 0 when no positive shares its bin with another pixel.

    Args:
        histogram: :math:`(2, K)` counts from :func:`score_histogram`.

    Returns:
        float64 scalar tensor in [0, 1].
    """
    negatives, positives = _checked_histogram(histogram).flip(-1).double()  # highest scores first
    positives_above = positives.cumsum(0) - positives
    negatives_above = negatives.cumsum(0) - negatives
    binned = (positives_above + positives) / (positives_above + positives + negatives_above + negatives).clamp_min(1)
    best = (positives_above + positives) / (positives_above + positives + negatives_above).clamp_min(1)
    worst = (positives_above + 1) / (positives_above + 1 + negatives_above + negatives)
    per_bin = positives * torch.maximum(best - binned, binned - worst)
    return per_bin.sum() / positives.sum().clamp_min(1)


def roc_auc_error_bound(histogram: Tensor) -> Tensor:
    r"""Largest possible ROC AUC error of binning: :math:`\sum_k p_k n_k / (2 n_+ n_-)`, a float64 scalar."""
    negatives, positives = _checked_histogram(histogram).double()
    pairs = positives.sum() * negatives.sum()
    return (positives * negatives).sum() / (2 * pairs.clamp_min(1))


# --------------------------------------------------------------------------- streaming accumulator


class SegmentationMetrics:
    r"""Streaming Dice, accuracy, sensitivity, specificity, AUPR and ROC AUC over an evaluation loop.

    Keeps only counts: the four confusion counts pooled over all pixels (int64), the sum of per-image
    Dice (float64) and two :math:`K`-bin score histograms (int64), so memory is :math:`O(K)` however
    large the data set. The state lives on ``device``, or on the device of the first batch; later
    batches are moved there. Any number of spatial dims (shape convention in the module docstring).

    Args:
        threshold: probabilities ``>= threshold`` count as positive. Default: 0.5.
        num_bins: histogram bins :math:`K` for AUPR and ROC AUC; ``compute()`` reports how far the
            binned values can be from the exact ones. Default: 10000.
        device: where to keep the state; ``None`` follows the first batch. Default: ``None``.

    ``compute()`` returns floats:

    * ``"dice"``, ``"accuracy"``, ``"sensitivity"``, ``"specificity"``: eqs 4-7 from the pooled counts;
    * ``"dice_per_image_mean"``: mean over images of the per-image Dice (empty-empty images count 1);
    * ``"aupr"``, ``"aupr_error_bound"``, ``"roc_auc"``, ``"roc_auc_error_bound"``: binned values and
      their guaranteed distance to the exact values on all pixels seen;
    * ``"num_images"``, ``"num_pixels"``.

    Examples::

        >>> metrics = SegmentationMetrics(threshold=0.5)
        >>> for _ in range(3):
        ...     prob = torch.rand(2, 1, 16, 16)
        ...     metrics.update(prob, prob > 0.7)
        >>> results = metrics.compute()
        >>> results["sensitivity"], results["aupr"]
        (1.0, 1.0)
        >>> metrics.reset()
    """

    def __init__(
        self,
        threshold: float = 0.5,
        num_bins: int = DEFAULT_NUM_BINS,
        device: torch.device | str | None = None,
    ) -> None:
        _check_threshold(threshold)
        _check_num_bins(num_bins)
        self.threshold = threshold
        self.num_bins = num_bins
        self.device = None if device is None else torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen; the state is allocated again on the next ``update``."""
        self._counts: Tensor | None = None  # tp, fp, fn, tn pooled over all pixels
        self._dice_sum: Tensor | None = None
        self._num_images: Tensor | None = None
        self._histogram: Tensor | None = None

    @torch.no_grad()
    def update(self, prob: Tensor, target: Tensor) -> None:
        """Add a batch: ``prob`` probabilities or mask and ``target`` mask, both of shape :math:`(B, *)`."""
        _check_pred_and_target(prob, target, pred_name="prob")
        if self._counts is None:
            self._allocate(self.device if self.device is not None else prob.device)
        prob, target = prob.to(self._counts.device), target.to(self._counts.device).bool()
        counts = _counts_per_image(_binarize(prob, self.threshold), target)
        self._counts += torch.stack(_pooled(counts))
        self._dice_sum += _dice_from_counts(counts).sum()
        self._num_images += prob.shape[0]
        self._histogram += _histogram(prob.flatten(), target.flatten(), self.num_bins)

    def compute(self) -> dict[str, float]:
        """Metrics over every batch since the last ``reset``; raises ``RuntimeError`` before any ``update``."""
        if self._counts is None:
            raise RuntimeError("SegmentationMetrics.compute() needs at least one update() since the last reset()")
        pooled = ConfusionCounts(*self._counts)
        results = {
            "dice": _dice_from_counts(pooled),
            "accuracy": _accuracy_from_counts(pooled),
            "sensitivity": _sensitivity_from_counts(pooled),
            "specificity": _specificity_from_counts(pooled),
            "dice_per_image_mean": self._dice_sum / self._num_images,
            "aupr": aupr_from_histogram(self._histogram),
            "aupr_error_bound": aupr_error_bound(self._histogram),
            "roc_auc": roc_auc_from_histogram(self._histogram),
            "roc_auc_error_bound": roc_auc_error_bound(self._histogram),
            "num_images": self._num_images,
            "num_pixels": self._counts.sum(),
        }
        values = torch.stack([value.double() for value in results.values()]).tolist()  # one device sync
        return dict(zip(results, values))

    def _allocate(self, device: torch.device) -> None:
        self._counts = torch.zeros(4, dtype=torch.int64, device=device)
        self._dice_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._num_images = torch.zeros((), dtype=torch.int64, device=device)
        self._histogram = torch.zeros(2, self.num_bins, dtype=torch.int64, device=device)

    def __repr__(self) -> str:
        seen = 0 if self._num_images is None else int(self._num_images)
        return (
            f"{type(self).__name__}(threshold={self.threshold}, num_bins={self.num_bins}, "
            f"device={self.device}, images_seen={seen})"
        )


# --------------------------------------------------------------------------- from counts


def _ratio(numerator: Tensor, denominator: Tensor, value_if_empty: float) -> Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    empty = torch.full_like(numerator, value_if_empty)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), empty)


def _dice_from_counts(counts: ConfusionCounts) -> Tensor:
    return _ratio(2 * counts.tp, 2 * counts.tp + counts.fp + counts.fn, value_if_empty=1.0)


def _accuracy_from_counts(counts: ConfusionCounts) -> Tensor:
    return _ratio(counts.tp + counts.tn, counts.tp + counts.tn + counts.fp + counts.fn, value_if_empty=1.0)


def _sensitivity_from_counts(counts: ConfusionCounts) -> Tensor:
    return _ratio(counts.tp, counts.tp + counts.fn, value_if_empty=1.0)


def _specificity_from_counts(counts: ConfusionCounts) -> Tensor:
    return _ratio(counts.tn, counts.tn + counts.fp, value_if_empty=1.0)


def _counts_per_image(positive: Tensor, truth: Tensor) -> ConfusionCounts:
    positive, truth = positive.flatten(1), truth.flatten(1)
    return ConfusionCounts(
        tp=(positive & truth).sum(1),
        fp=(positive & ~truth).sum(1),
        fn=(~positive & truth).sum(1),
        tn=(~positive & ~truth).sum(1),
    )


def _pooled(counts: ConfusionCounts) -> ConfusionCounts:
    return ConfusionCounts(*(count.sum() for count in counts))


def _binarize(pred: Tensor, threshold: float) -> Tensor:
    """``pred >= threshold`` decided exactly for the stored values: PyTorch would first round the threshold to
    ``pred``'s dtype (0.501 becomes 0.5 in bfloat16), so compare with the smallest value of that dtype that is at
    least ``threshold`` instead."""
    if not pred.is_floating_point():
        return pred.bool()
    cut = torch.tensor(threshold, dtype=pred.dtype)
    if cut.item() < threshold:
        cut = torch.nextafter(cut, torch.tensor(math.inf, dtype=pred.dtype))
    return pred >= cut.item()  # exactly representable in pred's dtype: no rounding left


# --------------------------------------------------------------------------- curves


def _ranking_metric(
    pred: Tensor, target: Tensor, per_image: bool, num_bins: int | None, area: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    check_bool("per_image", per_image)
    _check_pred_and_target(pred, target)
    if num_bins is not None:
        _check_num_bins(num_bins)
    scores, truth = pred.flatten(1), target.flatten(1).bool()
    if not per_image:
        scores, truth = scores.reshape(1, -1), truth.reshape(1, -1)
    values = torch.stack([area(*_cumulative_counts(image, labels, num_bins)) for image, labels in zip(scores, truth)])
    return values if per_image else values[0]


def _cumulative_counts(scores: Tensor, truth: Tensor, num_bins: int | None) -> tuple[Tensor, Tensor]:
    if num_bins is None:
        return _cumulative_counts_at_distinct_scores(scores, truth)
    return _cumulative_counts_from_histogram(_histogram(scores, truth, num_bins))


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


def _histogram(scores: Tensor, truth: Tensor, num_bins: int) -> Tensor:
    bins = (scores.double() * num_bins).floor().long().clamp_(0, num_bins - 1)
    # one bincount for both classes: positives are offset by num_bins
    combined = torch.bincount(bins + num_bins * truth.long(), minlength=2 * num_bins)
    return combined.view(2, num_bins)


# --------------------------------------------------------------------------- argument checks


def _check_pred_and_target(pred: Tensor, target: Tensor, pred_name: str = "pred") -> None:
    for name, tensor in ((pred_name, pred), ("target", target)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.is_complex():
            raise TypeError(f"{name} must be a real (bool, integer or float) tensor, got dtype {tensor.dtype}")
    if pred.shape != target.shape:
        raise ValueError(
            f"{pred_name} and target must have the same shape (B, *spatial), got {pred_name} "
            f"{tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    if pred.dim() < 2:
        raise ValueError(
            f"{pred_name} must have shape (B, *spatial) with at least one dim after the batch dim, "
            f"got {tuple(pred.shape)}; for a single image pass {pred_name}[None]"
        )
    if pred.numel() == 0:
        raise ValueError(f"{pred_name} must not be empty, got shape {tuple(pred.shape)}")
    _check_binary("target", target)
    if pred.is_floating_point():
        _check_probabilities(pred_name, pred)
    else:
        _check_binary(pred_name, pred)


def _check_binary(name: str, tensor: Tensor) -> None:
    if tensor.dtype == torch.bool:
        return
    not_binary = (tensor != 0) & (tensor != 1)  # NaN is neither
    if not_binary.any():
        example = tensor[not_binary].flatten()[0].item()
        raise ValueError(f"{name} must be a binary mask (bool, or values 0 and 1), got the value {example}")


def _check_probabilities(name: str, tensor: Tensor) -> None:
    outside = ~((tensor >= 0) & (tensor <= 1))  # NaN is outside
    if outside.any():
        example = tensor[outside].flatten()[0].item()
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got the value {example}; "
            "apply torch.sigmoid or torch.softmax to logits first"
        )


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number in [0, 1], got {type(threshold).__name__} {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral):
        raise TypeError(f"num_bins must be an integer >= 1, got {type(num_bins).__name__} {num_bins!r}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")


def _checked_histogram(histogram: Tensor) -> Tensor:
    if not isinstance(histogram, Tensor) or histogram.dim() != 2 or histogram.shape[0] != 2:
        shape = tuple(histogram.shape) if isinstance(histogram, Tensor) else type(histogram).__name__
        raise ValueError(f"histogram must be a (2, num_bins) tensor from score_histogram, got {shape}")
    if histogram.shape[1] == 0:
        raise ValueError("histogram must have at least one bin, got shape (2, 0)")
    if histogram.is_floating_point() or histogram.is_complex() or histogram.dtype == torch.bool:
        raise TypeError(f"histogram must hold integer counts as score_histogram returns, got {histogram.dtype}")
    if (histogram < 0).any():
        raise ValueError(f"histogram must hold counts >= 0, got a minimum of {histogram.min().item()}")
    return histogram
