"""Evaluation: lesion probabilities from a two-class model and the paper's metrics over a set of images."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..inference.forward import lesion_probabilities
from ..metrics import SegmentationMetrics
from .arrays import LesionArrays


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA, bf16 on CPU; a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def lesion_probability(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` background/lesion logits -> ``(B, 1, H, W)`` lesion probability in float32."""
    return torch.softmax(logits.float(), dim=1)[:, 1:2]


def predict_batches(model: nn.Module, arrays: LesionArrays, indices: torch.Tensor, batch_size: int,
                    device: torch.device, amp: bool
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, images (B, 3, H, W), probabilities (B, 1, H, W), masks (B, 1, H, W))`` in eval mode
    without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                images, masks = arrays.batch(chunk)
                images = images.to(device, non_blocking=True)
                # the forward pass of group-attention predict: one inference path for evaluation and prediction
                yield chunk, images, lesion_probabilities(model, images, amp=amp), masks.to(device)
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, arrays: LesionArrays, indices: torch.Tensor, batch_size: int, device: torch.device,
             amp: bool = False, threshold: float = 0.5) -> dict[str, float]:
    """Dice, accuracy, sensitivity, specificity (pooled over all pixels), mean per-image Dice, AUPR and ROC AUC."""
    metrics = SegmentationMetrics(threshold=threshold, device=device)
    for _, _, probabilities, masks in predict_batches(model, arrays, indices, batch_size, device, amp):
        metrics.update(probabilities, masks)
    return metrics.compute()
