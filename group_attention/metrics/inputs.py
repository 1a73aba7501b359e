"""Checks of the metrics' arguments (shape and value conventions: :mod:`group_attention.metrics`); errors name the
argument, the value received and what would be valid."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def check_pred_and_target(pred: Tensor, target: Tensor, pred_name: str = "pred") -> None:
    """Check ``pred`` (mask or probabilities) and ``target`` (mask) of one shape (B, *) with B * ... > 0."""
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


def check_threshold(threshold: float) -> None:
    """A real number in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number in [0, 1], got {type(threshold).__name__} {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")


def check_num_bins(num_bins: int) -> None:
    """An integer >= 1."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral):
        raise TypeError(f"num_bins must be an integer >= 1, got {type(num_bins).__name__} {num_bins!r}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")


def checked_histogram(histogram: Tensor) -> Tensor:
    """``histogram`` if it is a (2, K) integer tensor of counts as :func:`score_histogram` returns."""
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
