"""The fundus application: diabetic-retinopathy lesion segmentation of fundus photographs with the core's models.

Built on the core (layers, models, losses, metrics, generic inference) and never imported by it, as MONAI keeps
``monai/apps/``:

- :mod:`~group_attention.fundus.data`: IDRiD, its synthetic look-alike and your own folders as segmentation
  sources; decoding, the field-of-view crop, the cache, folds and the paper's augmentation.
- :mod:`~group_attention.fundus.engine`: the experiment behind ``examples/idrid_ganet.py`` (training, 3-fold
  cross-validation, results tables, pictures).
- Prediction of photographs at full resolution: :func:`load_model` (a checkpoint with its
  :class:`InferenceSpec`), :func:`predict_probability`, :func:`predict` and the ``group-attention`` command line.
"""

from .checkpoint import InferenceSpec, experiment_metadata, inference_metadata, load_model, read_spec
from .components import count_components
from .predict import (
    IMAGE_SUFFIXES,
    PredictionReport,
    find_images,
    predict,
    predict_probabilities,
    predict_probability,
    read_image,
)
from .tiles import sliding_window_probabilities

__all__ = [
    "InferenceSpec",
    "inference_metadata",
    "experiment_metadata",
    "read_spec",
    "load_model",
    "count_components",
    "IMAGE_SUFFIXES",
    "PredictionReport",
    "find_images",
    "predict",
    "predict_probability",
    "predict_probabilities",
    "read_image",
    "sliding_window_probabilities",
]
