"""Pictures like the paper's: Fig. 5 overlays (blue false negative, red false positive, yellow true positive) and
Fig. 4 SGAU attention panels (ground truth, low-level feature, attention map, their product)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..layers import SGAU
from .io import save_png

TRUE_POSITIVE = (255, 255, 0)  # yellow
FALSE_POSITIVE = (255, 0, 0)  # red
FALSE_NEGATIVE = (0, 0, 255)  # blue


def overlay(image: torch.Tensor, prediction: torch.Tensor, truth: torch.Tensor) -> Image.Image:
    """The Fig. 5 picture of one image.

    Args:
        image: ``(3, H, W)`` float in [0, 1] or uint8.
        prediction, truth: ``(H, W)`` or ``(1, H, W)`` binary masks.
    """
    pixels = image.detach().cpu()
    pixels = (pixels.float() * 255 if pixels.is_floating_point() else pixels.float()).clamp(0, 255)
    canvas = pixels.permute(1, 2, 0).numpy().astype(np.uint8).copy()
    predicted = prediction.detach().cpu().bool().reshape(canvas.shape[:2]).numpy()
    actual = truth.detach().cpu().bool().reshape(canvas.shape[:2]).numpy()
    canvas[predicted & actual] = TRUE_POSITIVE
    canvas[predicted & ~actual] = FALSE_POSITIVE
    canvas[~predicted & actual] = FALSE_NEGATIVE
    return Image.fromarray(canvas)


def _heatmap(values: torch.Tensor) -> np.ndarray:
    """Min-max scale a ``(H, W)`` map to uint8 and colour it dark blue -> green -> yellow (viridis-like)."""
    values = values.detach().float().cpu()
    span = (values.max() - values.min()).clamp_min(1e-12)
    scaled = ((values - values.min()) / span).numpy()
    anchors = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
    position = scaled * (len(anchors) - 1)
    lower = np.floor(position).astype(int).clip(0, len(anchors) - 2)
    fraction = (position - lower)[..., None]
    return ((1 - fraction) * anchors[lower] + fraction * anchors[lower + 1]).astype(np.uint8)


def attention_panels(model: torch.nn.Module, image: torch.Tensor, truth: torch.Tensor) -> "Image.Image | None":
    """Fig. 4 for the finest SGAU of ``model`` on one image: (a) ground truth, (b) the low-level feature map of the
    group whose attention varies most, (c) its attention map, (d) their product. None if there is no SGAU.

    Args:
        image: ``(3, H, W)`` float input already on the model's device.
        truth: ``(1, H, W)`` mask.
    """
    sgau = [m for m in model.modules() if isinstance(m, SGAU)]
    if not sgau:
        return None
    finest = sgau[-1]
    captured: dict[str, torch.Tensor] = {}

    def keep_low_input(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        captured["low"] = inputs[0]

    hook = finest.register_forward_hook(keep_low_input)
    was_recording, previous_attention = finest.record_attention, finest.last_attention
    finest.record_attention = True
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        hook.remove()
        finest.record_attention = was_recording
        model.train(was_training)
    attention = finest.last_attention[0]  # (groups, h, w)
    finest.last_attention = previous_attention  # the user's recording, if any, is left as it was
    group = int(attention.flatten(1).var(1).argmax())
    low = captured["low"][0].unflatten(0, (finest.groups, -1))[group].float().mean(0)
    panels = [
        np.repeat(truth.detach().reshape(truth.shape[-2:]).cpu().numpy()[..., None] * 255, 3, axis=2)
        .astype(np.uint8),
        _heatmap(low),
        _heatmap(attention[group]),
        _heatmap(low * attention[group]),
    ]
    height = max(p.shape[0] for p in panels)
    panels = [np.asarray(Image.fromarray(p).resize((p.shape[1] * height // p.shape[0], height))) for p in panels]
    gap = np.full((height, 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
    return Image.fromarray(row)


def save_overlays(folder: Path, ids: list[str], images: torch.Tensor, predictions: torch.Tensor,
                  truths: torch.Tensor) -> list[Path]:
    """Write ``<folder>/<id>.png`` overlays for a batch; returns the paths."""
    return [save_png(folder / f"{image_id}.png", overlay(image, prediction, truth))
            for image_id, image, prediction, truth in zip(ids, images, predictions, truths)]
