"""Applying trained models to fundus photographs end to end, at the original resolution.

For each image: the field-of-view crop of training (:func:`~group_attention.fundus.data.training_crop`), then either the
model at its training scale (the crop resized to the training size exactly as in training, the probabilities
resized back to the crop with bilinear interpolation, the inverse mapping of pixel centres) or sliding-window
inference on the crop at full resolution (:func:`sliding_window_probabilities`). A model trained on patches at a
share of the native resolution (``spec.scale``) is always applied as it was tested: the sliding window over the crop
resized by that share, tiles of its patch size, probabilities resized back to the crop
(:func:`~group_attention.fundus.tiles.crop_probabilities`). A joint model gives every lesion it segments. Either way
the probabilities are placed back at the crop box in a map of the original size, zero outside the field of view, so
the mask is aligned pixel for pixel with the photograph.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_write, atomic_write_text
from ..inference.forward import lesion_probabilities, model_device
from .checkpoint import InferenceSpec
from .data.idrid import read_fundus_image
from .data.preprocess import Box, resize_image, scaled_size, training_crop
from .data.suffixes import IMAGE_SUFFIXES, has_image_suffix
from .ground_truth import GroundTruth
from .outputs import write_mask, write_overlay, write_probability, write_truth_overlay
from .safety import check_inputs_outside
from .summary import lesion_statistics, pooled_metrics, truth_metrics, write_summary
from .tiles import WINDOW_OVERLAP, crop_probabilities, sliding_window_probabilities

__all__ = [
    "IMAGE_SUFFIXES",
    "MIN_IMAGE_SIDE",
    "read_image",
    "predict_probability",
    "predict_probabilities",
    "find_images",
    "predict",
    "PredictionReport",
]

#: Smaller images are refused: no field of view can be found in them, nor a lesion seen.
MIN_IMAGE_SIDE = 32


def read_image(path: "str | os.PathLike") -> Image.Image:
    """Decode a photograph (JPEG, PNG, TIFF; RGB, greyscale or with alpha) to RGB, as training read it.

    Raises:
        OSError: naming the file when it is missing, empty, not an image, or truncated.
        ValueError: naming the file when it is smaller than :data:`MIN_IMAGE_SIDE` on a side.
    """
    image = read_fundus_image(path)
    if min(image.size) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"image file {str(path)!r} is {image.size[0]}x{image.size[1]} pixels; a fundus photograph "
            f"must be at least {MIN_IMAGE_SIDE} pixels on each side"
        )
    return image


def fov_box(image: Image.Image, spec: InferenceSpec) -> Box:
    """The crop box training would cut out of ``image``: its field of view, or the whole image without crop."""
    return training_crop(image, spec.crop_fov)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: Image.Image,
    *,
    spec: "InferenceSpec | None" = None,
    tile: bool = False,
    tile_size: "tuple[int, int] | None" = None,
    overlap: float = WINDOW_OVERLAP,
    batch_size: int = 4,
    amp: bool = False,
) -> tuple[np.ndarray, Box]:
    """The probability of every lesion of the model (``spec.lesions``) at every pixel of ``image``, at its original
    size.

    Args:
        model: a model from :func:`~group_attention.load_model` (or any model, with ``spec``).
        image: an RGB Pillow image (:func:`read_image`).
        spec: how the model was trained; default ``model.inference_spec``.
        tile: sliding-window inference on the crop at full resolution instead of the training scale (a model
            trained on patches always runs the sliding window at its own scale).
        tile_size: ``(h, w)`` of a tile; default the training size (a patch model's: its patch).
        overlap, batch_size: of the sliding window (tiles per forward pass).
        amp: autocast (bf16 on CPU, fp16 on CUDA).

    Returns:
        ``(probabilities, box)``: ``(L, H, W)`` float32 in [0, 1], 0 outside ``box``, the field-of-view crop box.
    """
    spec = spec if spec is not None else getattr(model, "inference_spec", None)
    if spec is None:
        raise ValueError(
            "predict_probability needs spec= for a model that has no inference_spec "
            "(models from group_attention.load_model carry theirs)"
        )
    width, height = image.size
    box = fov_box(image, spec)
    device = model_device(model)
    channels = list(spec.lesion_channels)
    was_training = model.training
    model.eval()
    try:
        if spec.scale is not None:
            scaled = torch.from_numpy(resize_image(image, box, scaled_size(box, spec.scale))).permute(2, 0, 1)
            cropped = crop_probabilities(
                model,
                scaled,
                (box.height, box.width),
                tile_size or spec.patch,
                lesion_channels=channels,
                activation=spec.activation,
                overlap=overlap,
                batch_size=batch_size,
                amp=amp,
            )
        elif tile:
            crop = np.asarray(image)[box.top : box.bottom, box.left : box.right]
            pixels = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)  # uint8 (3, h, w), on the CPU
            cropped = sliding_window_probabilities(
                model,
                pixels,
                tile_size or spec.size,
                overlap=overlap,
                batch_size=batch_size,
                amp=amp,
                lesion_channel=channels,
                activation=spec.activation,
            )
        else:
            resized = torch.from_numpy(resize_image(image, box, spec.size)).permute(2, 0, 1)[None]
            probability = lesion_probabilities(
                model,
                resized.to(device).float().div_(255),
                amp=amp,
                lesion_channel=channels,
                activation=spec.activation,
            )
            # align_corners=False maps pixel centres as Pillow's crop-and-resize did: the inverse transform.
            cropped = F.interpolate(probability, size=(box.height, box.width), mode="bilinear", align_corners=False)[0]
    finally:
        model.train(was_training)
    full = np.zeros((len(channels), height, width), dtype=np.float32)
    full[:, box.top : box.bottom, box.left : box.right] = cropped.clamp_(0, 1).cpu().numpy()
    return full, box


def predict_probability(
    model: nn.Module,
    image: Image.Image,
    *,
    spec: "InferenceSpec | None" = None,
    lesion: "str | None" = None,
    **options: Any,
) -> tuple[np.ndarray, Box]:
    """The lesion probability of every pixel of ``image``, at its original size: :func:`predict_probabilities` of
    one lesion (``lesion``: default the model's only one; a joint model's lesion must be named).

    Returns:
        ``(probability, box)``: ``(H, W)`` float32 in [0, 1], 0 outside ``box``, the field-of-view crop box.
    """
    spec = spec if spec is not None else getattr(model, "inference_spec", None)
    probabilities, box = predict_probabilities(model, image, spec=spec, **options)
    assert spec is not None  # predict_probabilities raised otherwise
    if lesion is None:
        if spec.joint:
            raise ValueError(f"lesion must name one of the joint model's lesions {list(spec.lesions)}, got None")
        return probabilities[0], box
    if lesion not in spec.lesions:
        raise ValueError(f"lesion must be one of the model's lesions {list(spec.lesions)}, got {lesion!r}")
    return probabilities[spec.lesions.index(lesion)], box


def find_images(inputs: Sequence["str | os.PathLike"]) -> tuple[list[Path], list[dict[str, str]]]:
    """The image files named by ``inputs`` (files as given; folders: their files with an image suffix, sorted), and
    a failure entry for each input that does not exist.

    Raises:
        ValueError: two images share a file stem (their outputs would overwrite each other).
    """
    images: list[Path] = []
    missing: list[dict[str, str]] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            images += sorted(p for p in entry.iterdir() if p.is_file() and has_image_suffix(p))
        elif entry.exists():
            images.append(entry)
        else:
            missing.append({"image": str(entry), "error": f"input {str(entry)!r} does not exist"})
    # The names given (a symlink keeps its own, the name the user chose); one file under one name counts once.
    unique = list({(p.resolve(), p.name): Path(os.path.abspath(p)) for p in images}.values())
    by_stem: dict[str, Path] = {}
    for path in unique:
        if path.stem in by_stem:
            raise ValueError(
                f"two inputs share the name {path.stem!r}: {by_stem[path.stem]} and {path}; their "
                "outputs would overwrite each other: predict them into separate --out folders"
            )
        by_stem[path.stem] = path
    return unique, missing


@dataclass
class PredictionReport:
    """What :func:`predict` did: the records of every image of the run, the failures, and the summary files."""

    out_dir: Path
    records: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    predicted: int = 0
    skipped: int = 0
    summary_csv: "Path | None" = None
    summary_json: "Path | None" = None

    @property
    def ok(self) -> bool:
        return not self.failures


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: The folder of each kind of output under ``out_dir``.
OUTPUT_FOLDERS = {
    "mask": "masks",
    "probability": "probabilities",
    "overlay": "overlays",
    "truth_overlay": "truth_overlays",
}


def output_name(kind: str, stem: str, lesion: "str | None" = None) -> str:
    """Where an output of ``kind`` (a key of :data:`OUTPUT_FOLDERS`) lives, relative to ``out_dir``:
    ``<folder>/<stem>.png``, or ``<folder>/<stem>_<lesion>.png`` for one lesion's."""
    return f"{OUTPUT_FOLDERS[kind]}/{stem}.png" if lesion is None else f"{OUTPUT_FOLDERS[kind]}/{stem}_{lesion}.png"


def _outputs(stem: str, lesions: list[str], with_truth: set[str]) -> dict[str, str]:
    names = {"overlay": output_name("overlay", stem)}
    for lesion in lesions:
        names[f"mask_{lesion}"] = output_name("mask", stem, lesion)
        names[f"probability_{lesion}"] = output_name("probability", stem, lesion)
        if lesion in with_truth:
            names[f"truth_overlay_{lesion}"] = output_name("truth_overlay", stem, lesion)
    return names


def _finished_record(out_dir: Path, stem: str, key: str) -> "dict | None":
    """The record of an earlier run of ``stem`` with the same settings whose outputs all exist, else None."""
    path = out_dir / "records" / f"{stem}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("settings_key") != key:
        return None
    if not all((out_dir / name).is_file() for name in record.get("outputs", {}).values()):
        return None
    if (
        any(entry.get("metrics") for entry in record["lesions"].values())
        and not (out_dir / "records" / f"{stem}.npz").is_file()
    ):
        return None
    return record


def _predict_one(
    path: Path,
    models: Sequence[nn.Module],
    out_dir: Path,
    key: str,
    truth: "GroundTruth | None",
    options: dict[str, Any],
) -> dict:
    image = read_image(path)
    width, height = image.size
    stem = path.stem
    lesions = [lesion for model in models for lesion in model.inference_spec.lesions]
    record: dict[str, Any] = {
        "image": str(path),
        "stem": stem,
        "width": width,
        "height": height,
        "decoded": image.info.get("decoded"),  # the file's mode and the EXIF orientation applied (1: none)
        "settings_key": key,
        "lesions": {},
    }
    histograms: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    truths: dict[str, np.ndarray] = {}
    for model in models:
        spec: InferenceSpec = model.inference_spec
        probabilities, box = predict_probabilities(model, image, **options)
        for lesion, probability in zip(spec.lesions, probabilities):
            mask = probability >= spec.threshold
            masks[lesion] = mask
            entry: dict[str, Any] = {"box": list(box), **lesion_statistics(mask, box), "metrics": None, "counts": None}
            truth_mask = truth.mask(stem, lesion, image.size) if truth is not None else None
            if truth_mask is not None:
                metrics, counts, histogram = truth_metrics(probability, truth_mask, spec.threshold)
                entry.update(metrics=metrics, counts=counts)
                histograms[lesion] = histogram
                truths[lesion] = truth_mask
            write_mask(out_dir / output_name("mask", stem, lesion), mask)
            write_probability(out_dir / output_name("probability", stem, lesion), probability)
            record["lesions"][lesion] = entry
    write_overlay(out_dir / output_name("overlay", stem), image, masks)
    for lesion, truth_mask in truths.items():
        write_truth_overlay(out_dir / output_name("truth_overlay", stem, lesion), image, masks[lesion], truth_mask)
    record["outputs"] = _outputs(stem, lesions, set(truths))
    if histograms:
        atomic_write(out_dir / "records" / f"{stem}.npz", lambda stream: np.savez(stream, **histograms))
    # Written last: its presence (with the same settings) marks the image done for a rerun.
    atomic_write_text(out_dir / "records" / f"{stem}.json", json.dumps(record, indent=1) + "\n")
    return record


def _pooled(out_dir: Path, records: list[dict]) -> dict[str, dict]:
    counts: dict[str, list[int]] = {}
    histograms: dict[str, np.ndarray] = {}
    images: dict[str, int] = {}
    for record in records:
        scored = [lesion for lesion, entry in record["lesions"].items() if entry.get("counts")]
        if not scored:
            continue
        with np.load(out_dir / "records" / f"{record['stem']}.npz") as stored:
            for lesion in scored:
                entry = record["lesions"][lesion]
                counts[lesion] = [a + b for a, b in zip(counts.get(lesion, [0, 0, 0, 0]), entry["counts"])]
                histograms[lesion] = histograms.get(lesion, 0) + stored[lesion]
                images[lesion] = images.get(lesion, 0) + 1
    return {lesion: pooled_metrics(counts[lesion], histograms[lesion], images[lesion]) for lesion in counts}


def predict(
    models: Sequence[nn.Module],
    inputs: Sequence["str | os.PathLike"],
    out_dir: "str | os.PathLike",
    *,
    tile: bool = False,
    tile_size: "tuple[int, int] | None" = None,
    overlap: float = WINDOW_OVERLAP,
    batch_size: int = 4,
    amp: bool = False,
    masks: "str | os.PathLike | None" = None,
    progress: bool = True,
    settings: "dict[str, Any] | None" = None,
) -> PredictionReport:
    """Predict every image of ``inputs`` with every model (one per lesion) into ``out_dir``.

    Writes, per image ``<stem>`` and lesion ``<L>``: ``masks/<stem>_<L>.png`` (0/255, original size),
    ``probabilities/<stem>_<L>.png`` (16-bit, ``round(p * 65535)``), ``overlays/<stem>.png`` (one colour per
    lesion); with ground truth ``truth_overlays/<stem>_<L>.png`` (Fig. 5 colours); ``records/<stem>.json``; and
    for the run ``summary.csv`` and ``summary.json``. Every file is written atomically. An image whose record shows
    the same settings and whose outputs exist is skipped; a file that cannot be read (or is too small, or has a
    mask of another size) is reported in ``failures`` and the others go on.

    Args:
        models: models from :func:`~group_attention.load_model`, each for different lesions (a joint model covers
            several; no lesion may come from two models).
        inputs: image files and folders (their JPEG, PNG and TIFF files).
        out_dir: the output folder.
        tile, tile_size, overlap, batch_size, amp: as for :func:`predict_probability`.
        masks: ground truth: an IDRiD root or a folder of ``<stem>_<L>.<ext>`` masks (see
            :class:`~group_attention.fundus.ground_truth.GroundTruth`).
        progress: show a progress bar.
        settings: what identifies the models (e.g. checkpoint paths and sizes), recorded and part of the key that
            decides whether a rerun may skip an image.
    """
    out_dir = Path(out_dir)
    if not models:
        raise ValueError("predict needs at least one model")
    for model in models:
        if not isinstance(getattr(model, "inference_spec", None), InferenceSpec):
            raise TypeError("every model must carry an inference_spec (load it with group_attention.load_model)")
    lesions = [lesion for model in models for lesion in model.inference_spec.lesions]
    if len(set(lesions)) != len(lesions):
        raise ValueError(f"the models must be for different lesions, got lesions {lesions}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if tile_size is not None and not (len(tile_size) == 2 and all(int(s) >= MIN_IMAGE_SIDE for s in tile_size)):
        raise ValueError(f"tile_size must be two ints (H, W) of at least {MIN_IMAGE_SIDE}, got {tile_size!r}")
    truth = GroundTruth(masks, lesions) if masks is not None else None
    options = {
        "tile": tile,
        "tile_size": None if tile_size is None else tuple(map(int, tile_size)),
        "overlap": overlap,
        "batch_size": batch_size,
        "amp": amp,
    }
    run_settings = {
        **(settings or {}),
        **options,
        "masks": None if masks is None else str(Path(masks).resolve()),
        "specs": [model.inference_spec.to_dict() for model in models],
    }
    key = _settings_key(run_settings)
    images, failures = find_images(inputs)
    check_inputs_outside(images, out_dir)
    report = PredictionReport(out_dir, failures=failures)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(images, desc="predict", unit="image", disable=not progress or None)
    for path in bar:
        record = _finished_record(out_dir, path.stem, key)
        if record is not None:
            report.skipped += 1
        else:
            try:
                record = _predict_one(path, models, out_dir, key, truth, options)
                report.predicted += 1
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                report.failures.append({"image": str(path), "error": str(err)})
                tqdm.write(f"skipped {path}: {err}")
                continue
        report.records.append(record)
    pooled = _pooled(out_dir, report.records)
    run_settings["settings_key"] = key
    report.summary_csv, report.summary_json = write_summary(
        out_dir, report.records, report.failures, run_settings, pooled
    )
    return report
