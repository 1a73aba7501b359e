"""Evaluation of a model trained on patches: the sliding window over each whole field-of-view crop at the training
scale (the code of ``group-attention predict`` for such a checkpoint), with metrics per lesion pooled over every
pixel of a set of images (as the IDRiD challenge scores) beside the paper's per-image means.

Validation runs on the scaled grid (the cached crop and its masks: no file is read); the test puts the
probabilities back at the original resolution (resized to the crop box, zero outside the field of view) and scores
them against the masks as read, over every pixel of the original photograph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from ...metrics import SegmentationMetrics, aupr_from_histogram, score_histogram
from ..tiles import crop_probabilities
from .evaluate import autocast
from .patches import PatchSampler, ScaledArrays

__all__ = ["window_probabilities", "evaluate_windows", "calibrate_batch_norm"]


@torch.no_grad()
def window_probabilities(
    model: nn.Module,
    arrays: ScaledArrays,
    indices: torch.Tensor,
    patch: tuple[int, int],
    lesion_channels: Sequence[int],
    activation: "str | None",
    *,
    original: bool = False,
    batch_size: int = 4,
    amp: bool = False,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(index, probabilities (L, h, w), masks (L, h, w))`` per image on the scaled grid, or with
    ``original`` at the source's resolution ``(L, H, W)`` (zero outside the crop box), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for index in [int(i) for i in indices]:
            crop, box = arrays.images[index], arrays.boxes[index]
            size = (box.height, box.width) if original else tuple(crop.shape[1:])  # probabilities at this size
            probability = crop_probabilities(
                model,
                crop,
                size,
                patch,
                lesion_channels=lesion_channels,
                activation=activation,
                batch_size=batch_size,
                amp=amp,
            )
            if not original:
                yield index, probability, arrays.masks[index].to(probability.device)
                continue
            truth = torch.from_numpy(arrays.original_masks(index))
            full = torch.zeros((len(lesion_channels), *truth.shape[1:]), dtype=torch.float32, device=probability.device)
            full[:, box.top : box.bottom, box.left : box.right] = probability
            yield index, full, truth.to(full.device)
    finally:
        model.train(was_training)


def evaluate_windows(
    model: nn.Module,
    arrays: ScaledArrays,
    indices: torch.Tensor,
    patch: tuple[int, int],
    lesion_channels: Sequence[int],
    activation: "str | None",
    *,
    original: bool = False,
    batch_size: int = 4,
    amp: bool = False,
    threshold: float = 0.5,
) -> list[dict[str, float]]:
    """Per lesion: Dice, accuracy, sensitivity, specificity and AUPR pooled over every pixel of ``indices`` (the
    IDRiD challenge's), the paper's mean per-image Dice and the mean per-image AUPR (``aupr_per_image_mean``).

    Args:
        original: score at the source's resolution (the test) instead of the scaled grid (validation).
    """
    metrics = [SegmentationMetrics(threshold=threshold) for _ in lesion_channels]
    per_image_aupr: list[list[float]] = [[] for _ in lesion_channels]
    for _, probability, truth in window_probabilities(
        model,
        arrays,
        indices,
        patch,
        lesion_channels,
        activation,
        original=original,
        batch_size=batch_size,
        amp=amp,
    ):
        for k in range(len(lesion_channels)):
            metrics[k].update(probability[k][None, None], truth[k][None, None])
            histogram = score_histogram(probability[k][None], truth[k][None].bool())
            per_image_aupr[k].append(float(aupr_from_histogram(histogram)))
    results = []
    for k, metric in enumerate(metrics):
        result = metric.compute()
        result["aupr_per_image_mean"] = float(np.mean(per_image_aupr[k]))
        results.append(result)
    return results


def calibrate_batch_norm(
    model: nn.Module,
    sampler: PatchSampler,
    windows: Sequence[tuple[int, int, int, bool]],
    *,
    batch_size: int,
    device: "torch.device | str" = "cpu",
    amp: bool = False,
) -> None:
    """Estimate every batch norm's running mean and variance again from ``windows`` (:meth:`PatchSampler.windows`:
    the tiles the sliding window cuts from the training crops), in batches of ``batch_size`` to
    ``2 * batch_size - 1`` windows: the average of the batches' statistics (:func:`torch.optim.swa_utils.update_bn`,
    the idea of PreciseBN), under autocast with ``amp`` as in training. Training's running averages follow its
    patches, a share of them centred on a lesion; the model is evaluated on windows over whole crops. The weights
    and the model's mode are unchanged; nothing happens without ``windows``."""
    if not windows:
        return
    # At least batch_size windows a batch (the remainder shared out): a batch of one small window can leave batch
    # norm one value per channel at the bottleneck, which it refuses in training mode.
    groups = torch.tensor_split(torch.arange(len(windows)), max(1, len(windows) // batch_size))
    batches = (sampler.batch([windows[int(i)] for i in group])[0] for group in groups)
    with autocast(torch.device(device), amp):
        update_bn(batches, model, torch.device(device))
