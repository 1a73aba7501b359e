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
import pickle
import re
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
]

#: The ``"format"`` of the metadata: a checkpoint holding another format is of another kind.
FORMAT = "group-attention/segmentation-model"
#: Bump when the metadata changes meaning; readers refuse versions above this one.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a group-attention model checkpoint, or one this version cannot apply."""


class UnsafeCheckpointError(CheckpointError):
    """A file that holds Python objects beyond tensors and plain data: unpickling it could run code from the file."""


# A checkpoint is a zip archive (torch.save since 1.6) or, in the legacy format, a pickle stream (protocol 2+).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def safe_torch_load(path: "str | os.PathLike", map_location: "str | torch.device" = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers only, so that no code from
    the file runs; every failure is a one-line :class:`CheckpointError` naming ``path`` and why.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        UnsafeCheckpointError: the file needs more than plain data (e.g. a pickled object whose ``__reduce__``
            would call a function): refused, never unpickled.
        CheckpointError: the file is not a PyTorch checkpoint (e.g. a text file) or is truncated or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file"
        )
    with open(path, "rb") as stream:
        head = stream.read(8)
    if not head.startswith(_CHECKPOINT_MAGIC):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it starts with {head!r}, not a zip archive or pickle stream "
            "(a text file, or another format?)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
        if "weights only load failed" in str(err).lower():
            found = re.search(r"GLOBAL ([\w.]+)", detail)
            what = f"it calls or builds {found.group(1)}" if found else detail[:200]
            raise UnsafeCheckpointError(
                f"{path} is refused: it holds Python objects beyond tensors and plain data ({what}); unpickling "
                "it could run code from the file. Load only checkpoints written by group-attention"
            ) from err
        raise CheckpointError(f"{path} is not a readable checkpoint (UnpicklingError: {detail[:200]})") from err
    except Exception as err:  # torch.load raises many types (EOFError, RuntimeError, KeyError...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint: torch.load cannot read it, is it truncated or damaged? "
            f"({type(err).__name__}: {reason[:200]})"
        ) from err


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
        UnsafeCheckpointError: naming ``path``, when it holds more than plain data (refused, never unpickled).
        CheckpointError: naming ``path``, when torch cannot read it or it holds no dict.
    """
    state = safe_torch_load(path)
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
