"""One forward pass from images to lesion probabilities: the code every evaluation and prediction runs."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

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
    model: nn.Module,
    images: torch.Tensor,
    *,
    amp: bool = False,
    lesion_channel: "int | Sequence[int]" = 1,
    activation: "str | None" = None,
) -> torch.Tensor:
    """The lesion probability of every pixel, in float32.

    Softmax over the logit channels (or a sigmoid when the model has one), taken in float32 so AMP logits give no
    NaN or inf; the caller decides eval mode and ``torch.no_grad()``.

    Args:
        model: a segmentation model ``(B, C, H, W) -> (B, K, H, W)`` logits.
        images: float images on the model's device.
        amp: run the model under :func:`autocast`.
        lesion_channel: the logit channel of the lesion (default 1: background is channel 0), or a sequence of
            channels (one per lesion of a joint model).
        activation: ``"softmax"`` over the channels or an independent ``"sigmoid"`` per channel; None (default):
            softmax with two or more channels, sigmoid with one.

    Shape:
        ``(B, C, H, W) -> (B, 1, H, W)``, or ``(B, L, H, W)`` for ``L`` channels given as a sequence.
    """
    with autocast(images.device, amp):
        logits = model(images)
    return lesion_probability(logits, lesion_channel, activation)


def lesion_probability(
    logits: torch.Tensor, lesion_channel: "int | Sequence[int]" = 1, activation: "str | None" = None
) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` -> the lesion probability ``(B, 1, H, W)`` (or ``(B, L, H, W)`` for a sequence of
    channels) in float32: a softmax over the channels, or a sigmoid per channel (``activation``; default: sigmoid
    when there is one channel)."""
    logits = logits.float()
    channels = [lesion_channel] if isinstance(lesion_channel, int) else list(lesion_channel)
    if activation is None:
        activation = "sigmoid" if logits.shape[1] == 1 else "softmax"
    if activation == "sigmoid":
        if logits.shape[1] == 1 and channels == [1]:
            channels = [0]  # the default channel of a one-logit model
        return torch.sigmoid(logits[:, channels])
    if activation != "softmax":
        raise ValueError(f"activation must be one of ['softmax', 'sigmoid'] or None, got {activation!r}")
    return torch.softmax(logits, dim=1)[:, channels]
