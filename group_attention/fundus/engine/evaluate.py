"""Evaluation: lesion probabilities from a two-class model and the paper's metrics over a set of images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

# autocast and lesion_probability are re-exported: train.py and the engine's API import them from here.
from ...inference.forward import autocast, lesion_probabilities, lesion_probability  # noqa: F401
from ...metrics import SegmentationMetrics, aupr
from .arrays import LesionArrays


def predict_batches(
    model: nn.Module,
    arrays: LesionArrays,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool,
    lesion_channels: "Sequence[int] | None" = None,
    activation: "str | None" = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, images (B, 3, H, W), probabilities (B, L, H, W), masks (B, L, H, W))`` in eval mode
    without gradients; ``lesion_channels`` (default: channel 1 of a softmax, or the one sigmoid logit) and
    ``activation`` as for :func:`~group_attention.inference.lesion_probabilities`."""
    was_training = model.training
    model.eval()
    channel = 1 if lesion_channels is None else list(lesion_channels)
    try:
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                images, masks = arrays.batch(chunk)
                images = images.to(device, non_blocking=True)
                # the forward pass of group-attention predict: one inference path for evaluation and prediction
                probabilities = lesion_probabilities(
                    model, images, amp=amp, lesion_channel=channel, activation=activation
                )
                yield chunk, images, probabilities, masks.to(device)
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
    """Dice, accuracy, sensitivity, specificity (pooled over all pixels), mean per-image Dice, AUPR and ROC AUC of
    a one-lesion model (masks ``(N, 1, H, W)``).

    AUPR comes from score histograms, within ``aupr_error_bound`` of the exact value. With ``exact_aupr``, a bound
    above :data:`AUPR_TOLERANCE` (scores crowded into few bins, as from an undertrained model) triggers a second
    pass that sorts every pixel's score: the reported AUPR is then exact and its bound 0.
    """
    return evaluate_lesions(model, arrays, indices, batch_size, device, amp, threshold, exact_aupr)[0]


def evaluate_lesions(
    model: nn.Module,
    arrays: LesionArrays,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    threshold: float = 0.5,
    exact_aupr: bool = False,
    lesion_channels: "Sequence[int] | None" = None,
    activation: "str | None" = None,
) -> list[dict[str, float]]:
    """:func:`evaluate` of every lesion of a model (one per mask channel of ``arrays``, in order): a joint model's
    lesions with ``lesion_channels`` and ``activation="sigmoid"``."""
    lesions = arrays.masks.shape[1]
    metrics = [SegmentationMetrics(threshold=threshold, device=device) for _ in range(lesions)]
    batches = predict_batches(model, arrays, indices, batch_size, device, amp, lesion_channels, activation)
    for _, _, probabilities, masks in batches:
        for k in range(lesions):
            metrics[k].update(probabilities[:, k : k + 1], masks[:, k : k + 1])
    results = [m.compute() for m in metrics]
    for k, result in enumerate(results):
        if exact_aupr and result["aupr_error_bound"] > AUPR_TOLERANCE:
            result["aupr"] = exact_pooled_aupr(
                model, arrays, indices, batch_size, device, amp, k, lesion_channels, activation
            )
            result["aupr_error_bound"] = 0.0
    return results


def exact_pooled_aupr(
    model: nn.Module,
    arrays: LesionArrays,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    lesion: int = 0,
    lesion_channels: "Sequence[int] | None" = None,
    activation: "str | None" = None,
) -> float:
    """AUPR of lesion ``lesion`` (a mask channel) over all pixels of ``indices`` by sorting their scores (4 bytes a
    pixel held at once: 21 MB for an IDRiD test fold of 27 images at 384 x 512)."""
    scores, truth = [], []
    batches = predict_batches(model, arrays, indices, batch_size, device, amp, lesion_channels, activation)
    for _, _, probabilities, masks in batches:
        scores.append(probabilities[:, lesion].flatten())
        truth.append(masks[:, lesion].flatten().bool())
    return float(aupr(torch.cat(scores)[None], torch.cat(truth)[None], per_image=False))
