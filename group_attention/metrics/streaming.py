"""Streaming metrics: :class:`SegmentationMetrics` accumulates confusion counts and score histograms over an
evaluation loop in O(bins) memory. Conventions: :mod:`group_attention.metrics`."""

from __future__ import annotations

import torch
from torch import Tensor

from .inputs import check_num_bins, check_pred_and_target, check_threshold
from .ranking import (
    DEFAULT_NUM_BINS,
    aupr_error_bound,
    aupr_from_histogram,
    flat_histogram,
    roc_auc_error_bound,
    roc_auc_from_histogram,
)
from .threshold import (
    ConfusionCounts,
    accuracy_from_counts,
    binarize,
    counts_per_image,
    dice_from_counts,
    pooled_counts,
    sensitivity_from_counts,
    specificity_from_counts,
)

__all__ = ["SegmentationMetrics"]


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
        check_threshold(threshold)
        check_num_bins(num_bins)
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
        check_pred_and_target(prob, target, pred_name="prob")
        if self._counts is None:
            self._allocate(self.device if self.device is not None else prob.device)
        prob, target = prob.to(self._counts.device), target.to(self._counts.device).bool()
        counts = counts_per_image(binarize(prob, self.threshold), target)
        self._counts += torch.stack(pooled_counts(counts))
        self._dice_sum += dice_from_counts(counts).sum()
        self._num_images += prob.shape[0]
        self._histogram += flat_histogram(prob.flatten(), target.flatten(), self.num_bins)

    def compute(self) -> dict[str, float]:
        """Metrics over every batch since the last ``reset``; raises ``RuntimeError`` before any ``update``."""
        if self._counts is None:
            raise RuntimeError("SegmentationMetrics.compute() needs at least one update() since the last reset()")
        pooled = ConfusionCounts(*self._counts)
        results = {
            "dice": dice_from_counts(pooled),
            "accuracy": accuracy_from_counts(pooled),
            "sensitivity": sensitivity_from_counts(pooled),
            "specificity": specificity_from_counts(pooled),
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
