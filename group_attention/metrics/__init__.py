r"""Segmentation metrics of GANet (Ye et al., SPIE 2020, section 3.3, eqs 4-7) and the IDRiD AUPR.

One module per concern: :mod:`.threshold` (confusion counts and eqs 4-7 at a threshold), :mod:`.ranking` (AUPR
and ROC AUC, exact or from score histograms, with their error bounds) and :mod:`.streaming`
(:class:`SegmentationMetrics`, which accumulates both over an evaluation loop). Import them from here.

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

from .ranking import (
    aupr,
    aupr_error_bound,
    aupr_from_histogram,
    roc_auc,
    roc_auc_error_bound,
    roc_auc_from_histogram,
    score_histogram,
)
from .streaming import SegmentationMetrics
from .threshold import ConfusionCounts, accuracy, confusion_counts, dice, sensitivity, specificity

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
