"""Per image and lesion numbers of a prediction run, and ``summary.csv`` / ``summary.json``.

Without ground truth: the lesion area in pixels, its share of the field of view (the crop box the model saw) and the
number of connected lesions (8-connected). With ground truth: the paper's metrics (Dice, sensitivity, specificity,
accuracy; eqs 4-7) and the AUPR of the IDRiD challenge, over every pixel of the original image, per image and
pooled over the run (counts and score histograms summed, then divided once).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_text
from ..metrics import aupr_error_bound, aupr_from_histogram, confusion_counts, score_histogram
from .components import count_components
from .data.preprocess import Box

__all__ = ["SUMMARY_FIELDS", "lesion_statistics", "truth_metrics", "pooled_metrics", "write_summary"]

SUMMARY_FIELDS = (
    "image",
    "lesion",
    "width",
    "height",
    "fov_pixels",
    "lesion_pixels",
    "fov_share",
    "components",
    "dice",
    "sensitivity",
    "specificity",
    "accuracy",
    "aupr",
)
METRIC_FIELDS = ("dice", "sensitivity", "specificity", "accuracy", "aupr")


def lesion_statistics(mask: np.ndarray, box: Box) -> dict[str, Any]:
    """Area, share of the field-of-view box and number of connected lesions of one ``(H, W)`` mask."""
    lesion_pixels = int(np.count_nonzero(mask))
    fov_pixels = box.height * box.width
    return {
        "fov_pixels": fov_pixels,
        "lesion_pixels": lesion_pixels,
        "fov_share": lesion_pixels / fov_pixels,
        "components": count_components(mask),
    }


def _rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Eqs 4-7 from counts, with :mod:`group_attention.metrics`' values for empty denominators (1: nothing missed,
    nothing wrongly found)."""

    def ratio(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else 1.0

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
    }


def truth_metrics(
    probability: np.ndarray, truth: np.ndarray, threshold: float
) -> tuple[dict[str, float], list[int], np.ndarray]:
    """The metrics of one image, and its counts ``[tp, fp, fn, tn]`` and score histogram for pooling.

    Args:
        probability: ``(H, W)`` float32 in [0, 1] at the original size.
        truth: ``(H, W)`` boolean ground truth.
        threshold: positive where ``probability >= threshold``.
    """
    scores = torch.from_numpy(np.ascontiguousarray(probability, dtype=np.float32))[None]
    target = torch.from_numpy(np.ascontiguousarray(truth, dtype=bool))[None]
    counts = [int(c) for c in confusion_counts(scores, target, threshold, per_image=False)]
    histogram = score_histogram(scores, target)
    metrics = _rates(*counts)
    metrics["aupr"] = float(aupr_from_histogram(histogram))
    metrics["aupr_error_bound"] = float(aupr_error_bound(histogram))
    return metrics, counts, histogram.numpy()


def pooled_metrics(counts: list[int], histogram: np.ndarray, images: int) -> dict[str, float]:
    """Metrics of a set of images from their summed counts and histograms."""
    histogram_tensor = torch.from_numpy(np.asarray(histogram, dtype=np.int64))
    metrics: dict[str, Any] = _rates(*counts)
    metrics["aupr"] = float(aupr_from_histogram(histogram_tensor))
    metrics["aupr_error_bound"] = float(aupr_error_bound(histogram_tensor))
    metrics["num_images"] = images
    return metrics


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def summary_rows(records: list[dict]) -> list[dict[str, Any]]:
    """One row per image and lesion, in :data:`SUMMARY_FIELDS`."""
    rows = []
    for record in records:
        for lesion, entry in record["lesions"].items():
            metrics = entry.get("metrics") or {}
            row = {"image": record["stem"], "lesion": lesion, "width": record["width"], "height": record["height"]}
            row.update({name: entry[name] for name in ("fov_pixels", "lesion_pixels", "fov_share", "components")})
            row.update({name: metrics.get(name) for name in METRIC_FIELDS})
            rows.append(row)
    return rows


def write_summary(
    out_dir: "str | os.PathLike",
    records: list[dict],
    failures: list[dict],
    settings: dict[str, Any],
    pooled: dict[str, dict],
) -> tuple[Path, Path]:
    """Write ``summary.csv`` (one row per image and lesion) and ``summary.json`` (settings, rows, pooled metrics
    per lesion, failed files) atomically; returns both paths."""
    out_dir = Path(out_dir)
    rows = summary_rows(records)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _format(value) for key, value in row.items()} for row in rows)
    csv_path = atomic_write_text(out_dir / "summary.csv", buffer.getvalue())
    document = {"settings": settings, "images": records, "rows": rows, "metrics": pooled, "failed": failures}
    json_path = atomic_write_text(out_dir / "summary.json", json.dumps(document, indent=2) + "\n")
    return csv_path, json_path
