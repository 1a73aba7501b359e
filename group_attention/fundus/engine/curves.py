"""Training you can watch: each run's learning curves as a picture beside ``log.csv`` (training loss, validation
Dice and AUPR per epoch, the best epoch marked), and optionally the same scalars and a few overlays for TensorBoard.

The picture is drawn with Pillow (no plotting library) and rewritten atomically after every epoch. TensorBoard's
writer (:class:`torch.utils.tensorboard.SummaryWriter`) is imported only when asked for: the ``tensorboard`` package
is an optional extra, ``pip install "group-attention[tensorboard]"``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..pictures import save_png
from .visualize import _font

__all__ = ["curves_picture", "TrainingMonitor", "tensorboard_writer"]

#: The panels of the picture: (log column, title, colour).
PANELS = (
    ("train_loss", "training loss", (31, 119, 180)),
    ("val_dice", "validation Dice", (44, 160, 44)),
    ("val_aupr", "validation AUPR", (214, 39, 40)),
)
PANEL_SIZE = (360, 240)
MARGIN = (56, 28, 16, 36)  # left, top, right, bottom
BEST_COLOUR = (150, 150, 150)


def _values(history: list[dict], column: str) -> list[tuple[int, float]]:
    points = []
    for row in history:
        value = row.get(column, "")
        if value not in ("", None) and math.isfinite(float(value)):
            points.append((int(row["epoch"]), float(value)))
    return points


def _panel(history: list[dict], column: str, title: str, colour: tuple, best_epoch: "int | None") -> Image.Image:
    width, height = PANEL_SIZE
    left, top, right, bottom = MARGIN
    panel = Image.new("RGB", PANEL_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    font = _font(12)
    draw.text((left, 6), title, fill=(0, 0, 0), font=font)
    x0, y0, x1, y1 = left, top, width - right, height - bottom
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
    points = _values(history, column)
    epochs = [int(row["epoch"]) for row in history] or [1]
    first, last = min(epochs), max(max(epochs), min(epochs) + 1)
    if not points:
        draw.text((x0 + 8, (y0 + y1) // 2), "no values (no validation image)", fill=(0, 0, 0), font=font)
        return panel
    values = np.array([v for _, v in points])
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        low, high = low - 0.5 * max(abs(low), 1e-3), high + 0.5 * max(abs(high), 1e-3)

    def to_xy(epoch: float, value: float) -> tuple[float, float]:
        x = x0 + (epoch - first) / (last - first) * (x1 - x0)
        y = y1 - (value - low) / (high - low) * (y1 - y0)
        return x, y

    if best_epoch is not None and first <= best_epoch <= last:
        bx = to_xy(best_epoch, low)[0]
        draw.line((bx, y0, bx, y1), fill=BEST_COLOUR, width=1)
        draw.text((min(bx + 3, x1 - 60), y0 + 2), f"best {best_epoch}", fill=BEST_COLOUR, font=font)
    xy = [to_xy(epoch, value) for epoch, value in points]
    if len(xy) > 1:
        draw.line(xy, fill=colour, width=2)
    for x, y in xy:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    for value, y in ((high, y0), (low, y1)):
        draw.text((4, y - 6), f"{value:.3g}", fill=(0, 0, 0), font=font)
    draw.text((x0, y1 + 4), str(first), fill=(0, 0, 0), font=font)
    draw.text((x1 - 24, y1 + 4), str(last), fill=(0, 0, 0), font=font)
    draw.text(((x0 + x1) // 2 - 16, y1 + 16), "epoch", fill=(0, 0, 0), font=font)
    return panel


def curves_picture(history: list[dict], best_epoch: "int | None" = None) -> Image.Image:
    """The learning curves of a run's ``log.csv`` rows side by side, ``best_epoch`` marked by a grey line."""
    panels = [_panel(history, column, title, colour, best_epoch) for column, title, colour in PANELS]
    picture = Image.new("RGB", (PANEL_SIZE[0] * len(panels), PANEL_SIZE[1]), (255, 255, 255))
    for k, panel in enumerate(panels):
        picture.paste(panel, (k * PANEL_SIZE[0], 0))
    return picture


def tensorboard_writer(log_dir: "str | Path") -> Any:
    """A :class:`torch.utils.tensorboard.SummaryWriter` writing to ``log_dir``.

    Raises:
        ImportError: naming the extra to install when the ``tensorboard`` package is missing.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch raises ImportError when the tensorboard package is missing
        raise ImportError(
            f'tensorboard logging needs the tensorboard package: pip install "group-attention[tensorboard]" ({error})'
        ) from error
    return SummaryWriter(log_dir=str(log_dir))


class TrainingMonitor:
    """Writes ``curves.png`` in ``run_dir`` after every epoch and, with ``tensorboard``, the same scalars (and
    overlays given to :meth:`add_pictures`) under ``run_dir/tensorboard``."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.writer = tensorboard_writer(self.run_dir / "tensorboard") if tensorboard else None
        self.logged_epochs: set[int] = set()

    def epoch_done(self, history: list[dict], best_epoch: "int | None") -> None:
        save_png(self.run_dir / "curves.png", curves_picture(history, best_epoch), durable=False)
        if self.writer is None:
            return
        for row in history:
            epoch = int(row["epoch"])
            if epoch in self.logged_epochs:
                continue
            for column, _, _ in PANELS:
                if row.get(column, "") not in ("", None):
                    self.writer.add_scalar(column, float(row[column]), epoch)
            self.logged_epochs.add(epoch)
        self.writer.flush()

    def add_pictures(self, tag: str, pictures: list[Image.Image], step: int) -> None:
        """Log ``pictures`` (e.g. test overlays) as images, if TensorBoard is on."""
        if self.writer is None:
            return
        for k, picture in enumerate(pictures):
            self.writer.add_image(f"{tag}/{k}", np.asarray(picture.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
