"""The reusable training and evaluation engine behind ``examples/idrid_ganet.py``: it trains and tests Table 1's
variants on any :class:`~group_attention.fundus.data.SegmentationSource` (images, masks, ids and folds)."""

from ..devices import resolve_device
from .arrays import LesionArrays, load_class_arrays
from .config import PROTOCOLS, ExperimentConfig, quick_synthetic_config
from .evaluate import evaluate, lesion_probability
from .experiment import check_resumable, run_experiment
from .results import summarize, write_results
from .train import RunSpec, Trainer
from .visualize import attention_panels, overlay

__all__ = [
    "ExperimentConfig",
    "PROTOCOLS",
    "quick_synthetic_config",
    "run_experiment",
    "check_resumable",
    "resolve_device",
    "Trainer",
    "RunSpec",
    "LesionArrays",
    "load_class_arrays",
    "evaluate",
    "lesion_probability",
    "summarize",
    "write_results",
    "overlay",
    "attention_panels",
]
