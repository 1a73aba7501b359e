"""Pictures like the paper's: Fig. 5 overlays (blue false negative, red false positive, yellow true positive) and
Fig. 4 SGAU attention panels (ground truth, low-level feature, attention map, their product), drawn with Pillow at
a readable size, with a legend, titles and colour bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ...layers import SGAU
from ..pictures import FALSE_NEGATIVE, FALSE_POSITIVE, TRUE_POSITIVE, save_png

LEGEND = ((TRUE_POSITIVE, "true positive"), (FALSE_POSITIVE, "false positive"), (FALSE_NEGATIVE, "false negative"))
PANEL_TITLES = ("ground truth", "low-level feature", "attention map", "attended feature")
MIN_FIGURE_WIDTH = 512
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _upscaled(picture: Image.Image, min_width: int) -> Image.Image:
    """Enlarged by a whole factor (nearest neighbour, so pixels stay crisp) to at least ``min_width``."""
    factor = max(1, -(-min_width // picture.width))
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)


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


def overlay_figure(
    image: torch.Tensor, prediction: torch.Tensor, truth: torch.Tensor, min_width: int = MIN_FIGURE_WIDTH
) -> Image.Image:
    """The Fig. 5 picture enlarged to at least ``min_width`` pixels, with a legend of its three colours below."""
    picture = _upscaled(overlay(image, prediction, truth), min_width)
    font, swatch, pad = _font(), 14, 8
    canvas = Image.new("RGB", (picture.width, picture.height + swatch + 2 * pad), BACKGROUND)
    canvas.paste(picture, (0, 0))
    draw, x, y = ImageDraw.Draw(canvas), pad, picture.height + pad
    for colour, label in LEGEND:
        draw.rectangle([x, y, x + swatch, y + swatch], fill=colour, outline=INK)
        draw.text((x + swatch + 5, y + swatch // 2), label, fill=INK, font=font, anchor="lm")
        x += swatch + 5 + int(draw.textlength(label, font=font)) + 3 * pad
    return canvas


def _colour(scaled: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB, dark blue -> green -> yellow (viridis-like)."""
    position = np.clip(scaled, 0, 1) * (len(_VIRIDIS) - 1)
    lower = np.floor(position).astype(int).clip(0, len(_VIRIDIS) - 2)
    fraction = (position - lower)[..., None]
    return ((1 - fraction) * _VIRIDIS[lower] + fraction * _VIRIDIS[lower + 1]).astype(np.uint8)


def _heatmap(values: torch.Tensor, low: "float | None" = None, high: "float | None" = None) -> np.ndarray:
    """Colour a ``(H, W)`` map on the scale ``low..high`` (default: its own min..max)."""
    values = values.detach().float().cpu()
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    return _colour(((values - low) / max(high - low, 1e-12)).numpy())


def _colour_bar(width: int, low: float, high: float, label: str, font: ImageFont.ImageFont) -> Image.Image:
    """A horizontal colour bar ``width`` wide with its two end values and what it measures."""
    bar_height, text_height = 12, 18
    bar = Image.new("RGB", (width, bar_height + 2 * text_height), BACKGROUND)
    ramp = np.repeat(_colour(np.linspace(0, 1, width))[None], bar_height, axis=0)
    bar.paste(Image.fromarray(ramp), (0, text_height))
    draw = ImageDraw.Draw(bar)
    draw.text((width // 2, text_height // 2), label, fill=INK, font=font, anchor="mm")
    draw.text((0, bar_height + text_height + 2), f"{low:.3g}", fill=INK, font=font, anchor="la")
    draw.text((width, bar_height + text_height + 2), f"{high:.3g}", fill=INK, font=font, anchor="ra")
    return bar


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
    gate = attention[group].float()
    attended = low * gate
    # The feature and the attended feature share one scale, so what the attention removes shows as darker.
    feature_low, feature_high = (
        float(torch.minimum(low.min(), attended.min())),
        float(torch.maximum(low.max(), attended.max())),
    )
    panels = [
        np.repeat(truth.detach().reshape(truth.shape[-2:]).cpu().numpy()[..., None] * 255, 3, axis=2).astype(np.uint8),
        _heatmap(low, feature_low, feature_high),
        _heatmap(gate, 0.0, 1.0),
        _heatmap(attended, feature_low, feature_high),
    ]
    return _panel_figure(panels, [(feature_low, feature_high, "feature value (b, d)"), (0.0, 1.0, "attention (c)")])


def _panel_figure(
    panels: "list[np.ndarray]", bars: "list[tuple[float, float, str]]", min_panel_width: int = 256
) -> Image.Image:
    """Panels side by side under their titles (a)-(d), each at least ``min_panel_width`` wide, colour bars below."""
    font, gap, title_height = _font(), 12, 24
    height = max(p.shape[0] for p in panels)
    pictures = [
        _upscaled(
            Image.fromarray(p).resize((p.shape[1] * height // p.shape[0], height), Image.NEAREST), min_panel_width
        )
        for p in panels
    ]
    width = sum(p.width for p in pictures) + gap * (len(pictures) + 1)
    bar_width = (width - gap * (len(bars) + 1)) // len(bars)
    bar_images = [_colour_bar(bar_width, *bar, font) for bar in bars]
    panel_height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (width, title_height + panel_height + gap + bar_images[0].height + gap), BACKGROUND)
    draw, x = ImageDraw.Draw(canvas), gap
    for letter, title, picture in zip("abcd", PANEL_TITLES, pictures):
        draw.text((x + picture.width // 2, title_height // 2), f"({letter}) {title}", fill=INK, font=font, anchor="mm")
        canvas.paste(picture, (x, title_height))
        x += picture.width + gap
    x = gap
    for bar in bar_images:
        canvas.paste(bar, (x, title_height + panel_height + gap))
        x += bar.width + gap
    return canvas


def save_overlays(
    folder: Path, ids: list[str], images: torch.Tensor, predictions: torch.Tensor, truths: torch.Tensor
) -> list[Path]:
    """Write ``<folder>/<id>.png`` overlays (:func:`overlay_figure`) for a batch; returns the paths."""
    return [
        save_png(folder / f"{image_id}.png", overlay_figure(image, prediction, truth))
        for image_id, image, prediction, truth in zip(ids, images, predictions, truths)
    ]
