"""Sliding-window inference over inputs of any size and any number of spatial dimensions.

Like MONAI's ``sliding_window_inference(inputs, roi_size, sw_batch_size, predictor, overlap, mode)``: windows start
every ``int(roi * (1 - overlap))`` voxels along each axis, the last one flush with the input's edge; windows of all
batch items go through ``predictor`` ``sw_batch_size`` at a time; each window's output is weighted (constant, or a
Gaussian centred on the window so that borders, where a network sees least context, count least) and summed into
two float32 canvases of the output's size, the weighted outputs and the weights. Memory is the output plus one batch
of windows, never a stack of all windows, whatever the input's size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

from .._checks import check_choice, check_positive_int

__all__ = ["sliding_window_inference", "window_starts", "gaussian_weight", "WINDOW_MODES"]

# The Gaussian's tails would give window corners weights near 1e-7; a floor keeps every voxel's total weight well
# away from 0 (MONAI floors at the smallest non-zero weight, at least 1e-3).
MIN_WEIGHT = 1e-3
#: The weightings of :func:`sliding_window_inference`.
WINDOW_MODES = ("constant", "gaussian")


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """First index of each window along one axis: every ``int(window * (1 - overlap))``, the last at
    ``length - window``; ``[0]`` when the window covers the axis.

    Example:
        >>> window_starts(10, 4, 0.25)
        [0, 3, 6]
    """
    if window >= length:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = math.ceil((length - window) / step) + 1
    return sorted({min(index * step, length - window) for index in range(count)})


def gaussian_weight(size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """A separable Gaussian over a window of ``size`` (any number of axes), 1 at the centre,
    ``sigma = sigma_scale * side`` along each axis, floored at :data:`MIN_WEIGHT`.

    Shape:
        Returns ``size`` float32.
    """
    weight = torch.ones((), dtype=torch.float64)
    for side in size:
        offsets = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
        sigma = sigma_scale * side
        weight = weight[..., None] * torch.exp(-(offsets**2) / (2 * sigma**2))
    return (weight / weight.max()).clamp_min(MIN_WEIGHT).float()


def _roi(roi_size: "int | Sequence[int]", spatial: Sequence[int]) -> tuple[int, ...]:
    sizes = (roi_size,) * len(spatial) if isinstance(roi_size, int) else tuple(roi_size)
    if len(sizes) != len(spatial):
        raise ValueError(
            f"roi_size must give one size per spatial dimension of inputs ({len(spatial)}), got {roi_size!r}"
        )
    for axis, size in enumerate(sizes):
        check_positive_int(f"roi_size[{axis}]", size)
    return tuple(min(int(size), length) for size, length in zip(sizes, spatial))


@torch.no_grad()
def sliding_window_inference(
    inputs: torch.Tensor,
    roi_size: "int | Sequence[int]",
    sw_batch_size: int,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: float = 0.25,
    mode: str = "constant",
    *,
    sigma_scale: float = 0.125,
    sw_device: "torch.device | str | None" = None,
    device: "torch.device | str | None" = None,
) -> torch.Tensor:
    """``predictor`` applied to overlapping windows of ``inputs``, blended into one output of the input's size.

    Args:
        inputs: ``(B, C, *spatial)`` with one or more spatial dimensions, any dtype (windows are cut from it as
            they are; the predictor converts what it needs).
        roi_size: the window's size, one int per spatial dimension or one for all; clipped to the input where the
            input is smaller (so one window covers a small input whole).
        sw_batch_size: windows per ``predictor`` call (windows of all batch items are batched together).
        predictor: ``(n, C, *roi) -> (n, K, *roi)``: keeps the window's spatial size (a segmentation network, or a
            function that calls one and takes probabilities).
        overlap: share of a window shared with the next along each axis, in [0, 1) (default 0.25).
        mode: ``"constant"`` (every voxel of a window weighs the same) or ``"gaussian"`` (:func:`gaussian_weight`).
        sigma_scale: the Gaussian's sigma as a share of the window's side (default 0.125).
        sw_device: where windows go for ``predictor`` (default: the device of ``inputs``).
        device: where the output is accumulated (default: the device of ``inputs``).

    Returns:
        ``(B, K, *spatial)`` float32 on ``device``: the weighted mean of the window outputs at each voxel.

    Example:
        >>> net = torch.nn.Conv3d(1, 2, 3, padding=1)
        >>> volume = torch.randn(1, 1, 40, 48, 56)
        >>> sliding_window_inference(volume, (32, 32, 32), 4, net).shape
        torch.Size([1, 2, 40, 48, 56])
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 3:
        raise ValueError(
            "inputs must be a (B, C, *spatial) tensor with at least one spatial dimension, got "
            f"{getattr(inputs, 'shape', type(inputs).__name__)}"
        )
    if not callable(predictor):
        raise TypeError(f"predictor must be callable (a module or a function), got {type(predictor).__name__}")
    check_positive_int("sw_batch_size", sw_batch_size)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    check_choice("mode", mode, WINDOW_MODES)
    batch, spatial = inputs.shape[0], tuple(inputs.shape[2:])
    if batch == 0 or 0 in spatial:
        raise ValueError(f"inputs must hold at least one item and one voxel, got shape {tuple(inputs.shape)}")
    roi = _roi(roi_size, spatial)
    sw_device = torch.device(sw_device) if sw_device is not None else inputs.device
    device = torch.device(device) if device is not None else inputs.device
    if mode == "gaussian":
        weight = gaussian_weight(roi, sigma_scale).to(device)
    else:
        weight = torch.ones(roi, dtype=torch.float32, device=device)
    starts = itertools.product(*(window_starts(length, size, overlap) for length, size in zip(spatial, roi)))
    windows = [
        (item, tuple(slice(start, start + size) for start, size in zip(corner, roi)))
        for corner in starts
        for item in range(batch)
    ]
    weighted_sum = None  # (B, K, *spatial) once the first output tells K
    weight_sum = torch.zeros(spatial, dtype=torch.float32, device=device)
    for first in range(0, len(windows), sw_batch_size):
        chunk = windows[first : first + sw_batch_size]
        window_batch = torch.stack([inputs[(item, slice(None), *region)] for item, region in chunk])
        outputs = predictor(window_batch.to(sw_device, non_blocking=True))
        if not isinstance(outputs, torch.Tensor) or outputs.shape[0] != len(chunk) or outputs.shape[2:] != roi:
            raise ValueError(
                f"predictor must map ({len(chunk)}, C, *{list(roi)}) windows to ({len(chunk)}, K, *{list(roi)}), "
                f"got {getattr(outputs, 'shape', type(outputs).__name__)}"
            )
        if weighted_sum is None:
            weighted_sum = torch.zeros((batch, outputs.shape[1], *spatial), dtype=torch.float32, device=device)
        outputs = outputs.to(device=device, dtype=torch.float32)
        for (item, region), output in zip(chunk, outputs):
            weighted_sum[(item, slice(None), *region)].addcmul_(output, weight)
            if item == 0:  # every batch item has the same windows: weigh each once
                weight_sum[region].add_(weight)
    return weighted_sum.div_(weight_sum)
