"""Self-describing model checkpoints: a :class:`~group_attention.UNet`'s weights with what rebuilds it.

A checkpoint is a dict ``{"model": state_dict, "inference": metadata}`` read with ``torch.load(weights_only=True)``
(tensors and plain containers only: a file from elsewhere cannot run code while loading). The metadata holds the
``"format"``, its ``"format_version"``, the writing ``"library_version"`` and, under ``"model"``, what
:func:`model_metadata` records: the Table 1 variant and every :class:`~group_attention.UNet` argument. An
application adds its own keys beside ``"model"`` (the fundus application: the lesion, the preprocessing and the
decision threshold, see :mod:`group_attention.fundus.checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_choice
from ..atomic import atomic_write
from ..models import VARIANTS, UNet
from ..version import __version__

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "model_metadata",
    "checkpoint_metadata",
    "read_checkpoint",
    "checkpoint_weights",
    "check_metadata",
    "build_model",
    "load_checkpoint",
    "save_model",
]

#: The ``"format"`` of the metadata: a checkpoint holding another format is of another kind.
FORMAT = "group-attention/segmentation-model"
#: Bump when the metadata changes meaning; readers refuse versions above this one.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a group-attention model checkpoint, or one this version cannot apply."""


def model_metadata(
    variant: "str | None",
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    unet_kwargs: "dict[str, Any] | None" = None,
) -> dict[str, Any]:
    """The ``"model"`` entry: how to rebuild the network.

    Args:
        variant: a name of :data:`~group_attention.VARIANTS`, or None with ``unet_kwargs`` for a custom UNet.
        in_channels, num_classes: the model's input channels and output logits.
        unet_kwargs: :class:`~group_attention.UNet` keyword arguments; default: the variant's row of ``VARIANTS``.
    """
    if variant is not None:
        variant = check_choice("variant", variant.lower() if isinstance(variant, str) else variant, list(VARIANTS))
    if unet_kwargs is None:
        if variant is None:
            raise ValueError("model_metadata needs a variant name or the unet_kwargs of a custom UNet")
        unet_kwargs = dict(VARIANTS[variant])
    return {
        "variant": variant,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "unet_kwargs": dict(unet_kwargs),
    }


def checkpoint_metadata(model: dict[str, Any], **application: Any) -> dict[str, Any]:
    """The ``"inference"`` entry of a checkpoint: the format, the library version, ``model`` (from
    :func:`model_metadata`) and an application's own plain-Python entries."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "model": model,
        **application,
    }


def read_checkpoint(path: "str | os.PathLike") -> dict:
    """The dict a checkpoint file holds, read with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        CheckpointError: naming ``path``, when torch cannot read it as plain data or it holds no dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file"
        )
    try:
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


def checkpoint_weights(state: dict, path: "str | os.PathLike") -> dict:
    """The model's state_dict in a checkpoint's dict (under ``"model"``, or the dict itself when it is one)."""
    weights = state.get("model", state)
    if not (isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise CheckpointError(
            f"{path} is not a group-attention model checkpoint: no model weights (expected a "
            f"'model' state_dict); top-level keys: {sorted(map(str, state))[:10]}"
        )
    return weights


def check_metadata(metadata: Any, path: "str | os.PathLike") -> dict[str, Any]:
    """``metadata`` when it is of this format and a version this library reads; else a :class:`CheckpointError`
    naming ``path``."""
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        kind = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise CheckpointError(
            f"{path} is a checkpoint of another kind (inference format {kind!r}); expected {FORMAT!r}"
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path} was written by group-attention {metadata.get('library_version')} in checkpoint format version "
            f"{version!r}; this group-attention ({__version__}) reads format versions 1 to {FORMAT_VERSION}: "
            "upgrade group-attention to apply it"
        )
    if not isinstance(metadata.get("model"), dict):
        raise CheckpointError(f"{path}: the inference metadata has no 'model' entry")
    return metadata


def build_model(model: dict[str, Any], weights: "dict | None" = None, path: "str | os.PathLike" = "") -> UNet:
    """The UNet that ``model`` (a :func:`model_metadata` dict) describes, with ``weights`` loaded when given."""
    try:
        network = UNet(int(model["in_channels"]), int(model["num_classes"]), **dict(model["unet_kwargs"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the model metadata is incomplete or malformed ({err!r})") from err
    if weights is not None:
        try:
            network.load_state_dict(weights)
        except RuntimeError as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise CheckpointError(
                f"{path}: the weights do not fit {model.get('variant') or 'the recorded UNet'} "
                f"({lines[1][:300] if len(lines) > 1 else lines[0][:300]}); is it a checkpoint of "
                "another variant or another kind of model?"
            ) from err
    return network


def load_checkpoint(path: "str | os.PathLike", *, device: "str | torch.device" = "cpu") -> tuple[UNet, dict]:
    """Rebuild the model of a checkpoint, load its weights, put it in eval mode on ``device``.

    Returns:
        ``(model, metadata)``: the model and the checkpoint's whole ``"inference"`` metadata.
    """
    state = read_checkpoint(path)
    weights = checkpoint_weights(state, path)
    metadata = check_metadata(state.get("inference"), path)
    return build_model(metadata["model"], weights, path).to(device).eval(), metadata


def save_model(path: "str | os.PathLike", model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s weights with ``metadata`` (from :func:`checkpoint_metadata`) as a self-describing
    checkpoint, atomically; :func:`load_checkpoint` reads it back."""
    check_metadata(metadata, path)
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "inference": metadata}
    return atomic_write(path, lambda stream: torch.save(state, stream))
