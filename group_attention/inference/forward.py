"""One forward pass from images to lesion probabilities: the code every evaluation and prediction runs."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["autocast", "model_device", "lesion_probabilities", "lesion_probability"]


def autocast(device: "torch.device | str", enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA, bf16 on the CPU; a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def model_device(model: nn.Module, default: "torch.device | str" = "cpu") -> torch.device:
    """The device of ``model``'s parameters, or ``default`` for a model without any."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device(default)


def lesion_probabilities(
    model: nn.Module, images: torch.Tensor, *, amp: bool = False, lesion_channel: int = 1
) -> torch.Tensor:
    """The lesion probability of every pixel, in float32.

    Softmax over the logit channels (or a sigmoid when the model has one), taken in float32 so AMP logits give no
    NaN or inf; the caller decides eval mode and ``torch.no_grad()``.

    Args:
        model: a segmentation model ``(B, C, H, W) -> (B, K, H, W)`` logits.
        images: float images on the model's device.
        amp: run the model under :func:`autocast`.
        lesion_channel: the logit channel of the lesion (default 1: background is channel 0).

    Shape:
        ``(B, C, H, W) -> (B, 1, H, W)``.
    """
    with autocast(images.device, amp):
        logits = model(images)
    return lesion_probability(logits, lesion_channel)


def lesion_probability(logits: torch.Tensor, lesion_channel: int = 1) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` -> the lesion probability ``(B, 1, H, W)`` in float32: a softmax over the channels,
    or a sigmoid when there is one channel."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, lesion_channel : lesion_channel + 1]
