"""Evaluation: lesion probabilities from a two-class model and the paper's metrics over a set of images."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

# autocast and lesion_probability are re-exported: train.py and the engine's API import them from here.
from ...inference.forward import autocast, lesion_probabilities, lesion_probability  # noqa: F401
from ...metrics import SegmentationMetrics, aupr
from .arrays import LesionArrays


def predict_batches(
    model: nn.Module, arrays: LesionArrays, indices: torch.Tensor, batch_size: int, device: torch.device, amp: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, images (B, 3, H, W), probabilities (B, 1, H, W), masks (B, 1, H, W))`` in eval mode
    without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                images, masks = arrays.batch(chunk)
                images = images.to(device, non_blocking=True)
                # the forward pass of group-attention predict: one inference path for evaluation and prediction
                yield chunk, images, lesion_probabilities(model, images, amp=amp), masks.to(device)
    finally:
        model.train(was_training)


# results.md prints AUPR in percent with 2 decimals: a binning error below half its last digit cannot show.
AUPR_TOLERANCE = 0.5e-4


def evaluate(
    model: nn.Module,
    arrays: LesionArrays,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    threshold: float = 0.5,
    exact_aupr: bool = False,
) -> dict[str, float]:
    """Dice, accuracy, sensitivity, specificity (pooled over all pixels), mean per-image Dice, AUPR and ROC AUC.

    AUPR comes from score histograms, within ``aupr_error_bound`` of the exact value. With ``exact_aupr``, a bound
    above :data:`AUPR_TOLERANCE` (scores crowded into few bins, as from an undertrained model) triggers a second
    pass that sorts every pixel's score: the reported AUPR is then exact and its bound 0.
    """
    metrics = SegmentationMetrics(threshold=threshold, device=device)
    for _, _, probabilities, masks in predict_batches(model, arrays, indices, batch_size, device, amp):
        metrics.update(probabilities, masks)
    result = metrics.compute()
    if exact_aupr and result["aupr_error_bound"] > AUPR_TOLERANCE:
        result["aupr"] = exact_pooled_aupr(model, arrays, indices, batch_size, device, amp)
        result["aupr_error_bound"] = 0.0
    return result


def exact_pooled_aupr(
    model: nn.Module,
    arrays: LesionArrays,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
) -> float:
    """AUPR over all pixels of ``indices`` by sorting their scores (4 bytes a pixel held at once: 21 MB for an
    IDRiD test fold of 27 images at 384 x 512)."""
    scores, truth = [], []
    for _, _, probabilities, masks in predict_batches(model, arrays, indices, batch_size, device, amp):
        scores.append(probabilities.flatten())
        truth.append(masks.flatten().bool())
    return float(aupr(torch.cat(scores)[None], torch.cat(truth)[None], per_image=False))
