"""Generic inference: self-describing checkpoints that rebuild a model, one forward pass to class probabilities,
and an N-d sliding window over any predictor (like MONAI's ``sliding_window_inference``)."""

from .checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    UnsafeCheckpointError,
    build_model,
    check_metadata,
    checkpoint_metadata,
    checkpoint_weights,
    load_checkpoint,
    model_metadata,
    read_checkpoint,
    safe_torch_load,
    save_model,
)
from .forward import autocast, lesion_probabilities, lesion_probability, model_device
from .sliding_window import WINDOW_MODES, gaussian_weight, sliding_window_inference, window_starts

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "UnsafeCheckpointError",
    "safe_torch_load",
    "model_metadata",
    "checkpoint_metadata",
    "read_checkpoint",
    "checkpoint_weights",
    "check_metadata",
    "build_model",
    "load_checkpoint",
    "save_model",
    "autocast",
    "model_device",
    "lesion_probabilities",
    "lesion_probability",
    "sliding_window_inference",
    "gaussian_weight",
    "window_starts",
    "WINDOW_MODES",
]
