"""Self-describing checkpoints: what a trained model needs to be rebuilt and applied to a new photograph.

The experiment's checkpoints (``checkpoint_best.pt``, ``checkpoint_last.pt``) carry, under the key ``"inference"``,
the dict built by :func:`inference_metadata`: the Table 1 variant and every :class:`~group_attention.UNet` argument,
the input and output channels, the lesion, the training size and field-of-view crop, the decision threshold, the
library version and a format version. :func:`load_model` rebuilds the model from it; checkpoints written before
this format (no ``"inference"`` key) load when the missing settings are passed as arguments.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_choice
from ..atomic import atomic_write
from ..data.idrid import LESIONS
from ..data.preprocess import PREPROCESS_VERSION, check_size
from ..models import VARIANTS, UNet

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "InferenceSpec",
    "inference_metadata",
    "experiment_metadata",
    "read_spec",
    "load_model",
    "save_model",
    "CheckpointError",
]

#: The ``"format"`` of the metadata: a checkpoint holding another format is of another kind.
FORMAT = "group-attention/segmentation-model"
#: Bump when the metadata changes meaning; :func:`load_model` refuses versions above this one.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a group-attention model checkpoint, or one this version cannot apply."""


@dataclass(frozen=True)
class InferenceSpec:
    """How to rebuild and apply one trained model.

    Attributes:
        variant: Table 1 row the model was built as (``"ganet"``...), or None for a custom :class:`UNet`.
        unet_kwargs: every keyword argument of :class:`~group_attention.UNet` besides the channels.
        in_channels, num_classes: the model's input channels (3: RGB) and output logits (2: background, lesion).
        lesion: the lesion code (``"EX"``, ``"HE"``...).
        lesion_channel: the logit channel of the lesion (softmax over ``num_classes``; sigmoid when 1 class).
        size: ``(H, W)`` the field of view was resized to in training.
        crop_fov: whether the black background around the field of view was cropped first.
        threshold: lesion where the probability is ``>= threshold``.
        library_version, format_version: who wrote the checkpoint (None for checkpoints before the format).
    """

    variant: "str | None"
    unet_kwargs: dict = field(default_factory=dict)
    in_channels: int = 3
    num_classes: int = 2
    lesion: str = "EX"
    lesion_channel: int = 1
    size: tuple[int, int] = (384, 512)
    crop_fov: bool = True
    threshold: float = 0.5
    library_version: "str | None" = None
    format_version: "int | None" = None

    def build(self) -> UNet:
        """A freshly initialised model of this architecture."""
        return UNet(self.in_channels, self.num_classes, **self.unet_kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _library_version() -> str:
    from .. import __version__  # read at call time: the package imports this module before defining it

    return __version__


def inference_metadata(
    variant: "str | None",
    lesion: str,
    size: "tuple[int, int]",
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    unet_kwargs: "dict[str, Any] | None" = None,
    crop_fov: bool = True,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """The ``"inference"`` entry of a checkpoint (plain Python values, so ``torch.load(weights_only=True)`` reads it).

    Args:
        variant: a name of :data:`~group_attention.VARIANTS`, or None with ``unet_kwargs`` for a custom UNet.
        lesion: the class the model segments: an IDRiD lesion code (``MA, HE, EX, SE, OD``) or a data source's
            class name.
        size: ``(H, W)`` of the training images after the field-of-view crop.
        in_channels, num_classes: the model's channels (default 3 -> 2).
        unet_kwargs: :class:`UNet` keyword arguments; default: the variant's row of :data:`VARIANTS`.
        crop_fov: whether training cropped the field of view (default True, the paper's preprocessing).
        threshold: the decision threshold on the lesion probability (default 0.5).
    """
    if variant is not None:
        variant = check_choice("variant", variant.lower() if isinstance(variant, str) else variant, list(VARIANTS))
    if unet_kwargs is None:
        if variant is None:
            raise ValueError("inference_metadata needs a variant name or the unet_kwargs of a custom UNet")
        unet_kwargs = dict(VARIANTS[variant])
    if not isinstance(lesion, str) or not lesion:
        raise TypeError(f"lesion must be the name of the class the model segments (e.g. 'EX'), got {lesion!r}")
    height, width = check_size(size)
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "model": {
            "variant": variant,
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "unet_kwargs": dict(unet_kwargs),
        },
        "lesion": lesion,
        "lesion_channel": 1 if num_classes > 1 else 0,
        "preprocessing": {
            "size": [height, width],
            "crop_fov": bool(crop_fov),
            "fov_box": "find_fov_box",
            "image_resize": "pillow-bilinear-antialiased",
            "scale": "uint8 / 255",
            "preprocess_version": PREPROCESS_VERSION,
        },
        "threshold": float(threshold),
    }


def experiment_metadata(variant: str, lesion: str, config: Any) -> dict[str, Any]:
    """:func:`inference_metadata` of one run of the IDRiD experiment (``config``: an ``ExperimentConfig``): the
    variant's UNet with 3 -> 2 channels, trained on the field-of-view crop resized to ``config.size``."""
    return inference_metadata(variant, lesion, tuple(config.size))


def _spec_from_metadata(metadata: Any, path: Path) -> InferenceSpec:
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        kind = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise CheckpointError(
            f"{path} is a checkpoint of another kind (inference format {kind!r}); expected {FORMAT!r}"
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path} was written by group-attention {metadata.get('library_version')} in checkpoint format version "
            f"{version!r}; this group-attention ({_library_version()}) reads format versions 1 to {FORMAT_VERSION}: "
            "upgrade group-attention to apply it"
        )
    try:
        model, preprocessing = metadata["model"], metadata["preprocessing"]
        return InferenceSpec(
            variant=model["variant"],
            unet_kwargs=dict(model["unet_kwargs"]),
            in_channels=int(model["in_channels"]),
            num_classes=int(model["num_classes"]),
            lesion=metadata["lesion"],
            lesion_channel=int(metadata["lesion_channel"]),
            size=check_size(tuple(preprocessing["size"])),
            crop_fov=bool(preprocessing["crop_fov"]),
            threshold=float(metadata["threshold"]),
            library_version=metadata.get("library_version"),
            format_version=version,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the inference metadata is incomplete or malformed ({err!r})") from err


def _spec_from_arguments(
    state: dict,
    path: Path,
    variant: "str | None",
    lesion: "str | None",
    size: "tuple[int, int] | None",
    threshold: "float | None",
) -> InferenceSpec:
    recorded = state.get("spec") if isinstance(state.get("spec"), dict) else {}  # checkpoint_last.pt has the run
    variant = variant if variant is not None else recorded.get("variant")
    lesion = lesion if lesion is not None else recorded.get("lesion")
    missing = [name for name, value in (("variant", variant), ("lesion", lesion), ("size", size)) if value is None]
    if missing:
        raise CheckpointError(
            f"{path} has no inference metadata (written before group-attention's self-describing checkpoints); "
            f"pass {', '.join(f'{name}=' for name in missing)} to load_model (command line: "
            f"{', '.join('--' + name for name in missing)}): variant one of {list(VARIANTS)}, lesion one of "
            f"{list(LESIONS)}, size the (H, W) it was trained at (the experiment's default: 384 512)"
        )
    metadata = inference_metadata(variant, lesion, size, threshold=0.5 if threshold is None else threshold)
    spec = _spec_from_metadata(metadata, path)
    return InferenceSpec(**{**spec.to_dict(), "library_version": None, "format_version": None})


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file"
        )
    try:
        # Only tensors and plain containers: a checkpoint from elsewhere cannot run code while loading.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (EOFError, UnpicklingError, RuntimeError...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a group-attention model checkpoint: torch.load cannot read it "
            f"({type(err).__name__}: {reason[:200]})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a group-attention model checkpoint: it holds a {type(state).__name__}, not a dict"
        )
    return state


def _weights(state: dict, path: Path) -> dict:
    weights = state.get("model", state)  # the experiment's checkpoints, or a bare state_dict
    if not (isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise CheckpointError(
            f"{path} is not a group-attention model checkpoint: no model weights (expected a "
            f"'model' state_dict); top-level keys: {sorted(map(str, state))[:10]}"
        )
    return weights


def read_spec(
    path: "str | os.PathLike",
    *,
    variant: "str | None" = None,
    lesion: "str | None" = None,
    size: "tuple[int, int] | None" = None,
    threshold: "float | None" = None,
) -> InferenceSpec:
    """The :class:`InferenceSpec` of a checkpoint (arguments as for :func:`load_model`), without building it."""
    path = Path(path)
    state = _read(path)
    _weights(state, path)
    return _resolve_spec(state, path, variant, lesion, size, threshold)


def _resolve_spec(state: dict, path: Path, variant, lesion, size, threshold) -> InferenceSpec:
    if "inference" not in state:
        return _spec_from_arguments(state, path, variant, lesion, None if size is None else check_size(size), threshold)
    spec = _spec_from_metadata(state["inference"], path)
    given = {"variant": variant, "lesion": lesion, "size": None if size is None else check_size(size)}
    for name, value in given.items():
        if value is not None and value != getattr(spec, name):
            raise CheckpointError(
                f"{path} describes itself as {name}={getattr(spec, name)!r}, but {name}={value!r} "
                f"was passed; leave {name} out for a self-describing checkpoint"
            )
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        spec = InferenceSpec(**{**spec.to_dict(), "threshold": float(threshold)})
    return spec


def load_model(
    path: "str | os.PathLike",
    *,
    device: "str | torch.device" = "cpu",
    variant: "str | None" = None,
    lesion: "str | None" = None,
    size: "tuple[int, int] | None" = None,
    threshold: "float | None" = None,
) -> UNet:
    """Rebuild the model of a checkpoint, load its weights and put it in eval mode on ``device``.

    The returned model carries its :class:`InferenceSpec` as ``model.inference_spec`` (lesion, training size,
    crop, threshold), which :func:`~group_attention.inference.predict_image` uses.

    Args:
        path: a checkpoint written by the experiment (``checkpoint_best.pt``/``checkpoint_last.pt``) or by
            :func:`save_model`.
        device: where to put the model (default ``"cpu"``); the file is read on the CPU first.
        variant, lesion, size: only for checkpoints written before the self-describing format, which lack them
            (``checkpoint_last.pt`` of such runs still records variant and lesion); the error names the missing
            ones. For a self-describing checkpoint they must be left out or agree with it.
        threshold: overrides the recorded decision threshold.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ``ValueError``): naming ``path``: not a checkpoint, a checkpoint of another kind or of a
            newer format version, missing settings, or weights that do not fit the architecture.

    Example:
        >>> model = load_model("runs/idrid/runs/ganet/EX/fold1/checkpoint_best.pt")  # doctest: +SKIP
        >>> model.inference_spec.lesion, model.inference_spec.size  # doctest: +SKIP
        ('EX', (384, 512))
    """
    path = Path(path)
    state = _read(path)
    weights = _weights(state, path)
    spec = _resolve_spec(state, path, variant, lesion, size, threshold)
    model = spec.build()
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(
            f"{path}: the weights do not fit {spec.variant or 'the recorded UNet'} "
            f"({lines[1][:300] if len(lines) > 1 else lines[0][:300]}); is it a checkpoint of "
            "another variant or another kind of model?"
        ) from err
    model.inference_spec = spec
    return model.to(device).eval()


def save_model(path: "str | os.PathLike", model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s weights with ``metadata`` (from :func:`inference_metadata`) as a self-describing
    checkpoint, atomically; :func:`load_model` reads it back."""
    _spec_from_metadata(metadata, Path(path))
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "inference": metadata}
    return atomic_write(path, lambda stream: torch.save(state, stream))
