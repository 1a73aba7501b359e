"""Applying trained models to new fundus photographs: self-describing checkpoints and :func:`load_model`,
full-resolution prediction (training scale or sliding window) and the outputs of ``group-attention predict``."""

from .checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    InferenceSpec,
    experiment_metadata,
    inference_metadata,
    load_model,
    read_spec,
    save_model,
)
from .components import count_components
from .forward import autocast, lesion_probabilities
from .predict import IMAGE_SUFFIXES, PredictionReport, find_images, predict, predict_probability, read_image
from .sliding_window import gaussian_weight, sliding_window_probabilities, window_starts

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "InferenceSpec",
    "inference_metadata",
    "experiment_metadata",
    "read_spec",
    "load_model",
    "save_model",
    "count_components",
    "autocast",
    "lesion_probabilities",
    "IMAGE_SUFFIXES",
    "PredictionReport",
    "find_images",
    "predict",
    "predict_probability",
    "read_image",
    "gaussian_weight",
    "sliding_window_probabilities",
    "window_starts",
]
