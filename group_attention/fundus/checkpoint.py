"""What a trained lesion model needs to be applied to a new photograph, on the core's self-describing checkpoints.

The experiment's checkpoints (``checkpoint_best.pt``, ``checkpoint_last.pt``) carry, under the key ``"inference"``,
the dict built by :func:`inference_metadata`: the core's model entry (the Table 1 variant and every
:class:`~group_attention.UNet` argument, the channels; :func:`group_attention.inference.model_metadata`) and the
application's entries: the lesion and its logit channel, the training size and field-of-view crop, the decision
threshold. :func:`load_model` rebuilds the model and attaches its :class:`InferenceSpec`.

Application metadata version 2 (``"fundus_version"``) adds a model's lesions and their logit channels (a joint
model segments several, each with its own sigmoid output), the activation, and the training scale and patch size of
a model trained on patches at a share of the native resolution. Checkpoints without it (version 1) are read as
before: one lesion, trained on the whole crop resized to ``size``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..inference.checkpoint import (
    CheckpointError,
    build_model,
    check_metadata,
    checkpoint_metadata,
    checkpoint_weights,
    model_metadata,
    read_checkpoint,
)
from ..models import UNet
from .data.preprocess import PREPROCESS_VERSION, check_size

__all__ = ["InferenceSpec", "inference_metadata", "experiment_metadata", "read_spec", "load_model"]

#: The version of the application's entries of the metadata: 2 added lesions, activation, scale and patch.
FUNDUS_METADATA_VERSION = 2


@dataclass(frozen=True)
class InferenceSpec:
    """How to rebuild and apply one trained model.

    Attributes:
        variant: Table 1 row the model was built as (``"ganet"``...), or None for a custom :class:`UNet`.
        unet_kwargs: every keyword argument of :class:`~group_attention.UNet` besides the channels.
        in_channels, num_classes: the model's input channels (3: RGB) and output logits (2: background, lesion).
        lesion: the lesion code (``"EX"``, ``"HE"``...); a joint model's lesions joined by ``+`` (``"EX+HE"``).
        lesion_channel: the logit channel of the lesion (softmax over ``num_classes``; sigmoid when 1 class); a
            joint model's first lesion's.
        lesions: every lesion the model segments (default: ``(lesion,)``).
        lesion_channels: the logit channel of each of :attr:`lesions` (default: ``(lesion_channel,)``).
        activation: ``"softmax"`` over the logits or ``"sigmoid"`` per lesion logit (default: by ``num_classes``).
        scale: the share of the native resolution the model was trained at on patches (None: the whole crop resized
            to ``size``, the paper's protocol).
        patch: ``(H, W)`` of the training patches at ``scale`` (the sliding window's tile), or None.
        size: ``(H, W)`` the field of view was resized to in training (whole-image protocol).
        crop_fov: whether the black background around the field of view was cropped first.
        threshold: lesion where the probability is ``>= threshold``.
        library_version, format_version: who wrote the checkpoint.
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
    lesions: tuple[str, ...] = ()
    lesion_channels: tuple[int, ...] = ()
    activation: "str | None" = None
    scale: "float | None" = None
    patch: "tuple[int, int] | None" = None

    def __post_init__(self) -> None:
        lesions = tuple(self.lesions) or (self.lesion,)
        channels = tuple(int(c) for c in self.lesion_channels) or (self.lesion_channel,)
        if len(channels) != len(lesions):
            raise ValueError(f"lesion_channels must give one channel per lesion {list(lesions)}, got {list(channels)}")
        object.__setattr__(self, "lesions", lesions)
        object.__setattr__(self, "lesion_channels", channels)
        if self.activation is None:
            object.__setattr__(self, "activation", "sigmoid" if self.num_classes == 1 else "softmax")
        if self.patch is not None:
            object.__setattr__(self, "patch", tuple(int(side) for side in self.patch))

    @property
    def joint(self) -> bool:
        """Whether the model segments several lesions."""
        return len(self.lesions) > 1

    def build(self) -> UNet:
        """A freshly initialised model of this architecture."""
        return UNet(self.in_channels, self.num_classes, **self.unet_kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_threshold(threshold: float) -> float:
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return float(threshold)


def inference_metadata(
    variant: "str | None",
    lesion: "str | Sequence[str]",
    size: "tuple[int, int]",
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    unet_kwargs: "dict[str, Any] | None" = None,
    crop_fov: bool = True,
    threshold: float = 0.5,
    scale: "float | None" = None,
    patch: "tuple[int, int] | None" = None,
) -> dict[str, Any]:
    """The ``"inference"`` entry of a lesion model's checkpoint (plain Python values, so
    ``torch.load(weights_only=True)`` reads it).

    Args:
        variant: a name of :data:`~group_attention.VARIANTS`, or None with ``unet_kwargs`` for a custom UNet.
        lesion: the class the model segments: an IDRiD lesion code (``MA, HE, EX, SE, OD``) or a data source's
            class name; or a sequence of two or more for a joint model (one sigmoid logit per lesion, in order:
            ``num_classes`` must equal their number).
        size: ``(H, W)`` of the training images after the field-of-view crop.
        in_channels, num_classes: the model's channels (default 3 -> 2).
        unet_kwargs: :class:`UNet` keyword arguments; default: the variant's row of :data:`VARIANTS`.
        crop_fov: whether training cropped the field of view (default True, the paper's preprocessing).
        threshold: the decision threshold on the lesion probability (default 0.5).
        scale, patch: a model trained on ``patch`` ``(H, W)`` patches of the crop at ``scale`` of the native
            resolution (default None: the whole crop resized to ``size``).
    """
    model = model_metadata(variant, in_channels=in_channels, num_classes=num_classes, unet_kwargs=unet_kwargs)
    lesions = [lesion] if isinstance(lesion, str) else list(lesion)
    if not lesions or not all(isinstance(name, str) and name for name in lesions):
        raise TypeError(f"lesion must be the name of the class the model segments (e.g. 'EX'), got {lesion!r}")
    if len(lesions) > 1:
        if num_classes != len(lesions):
            raise ValueError(
                f"a joint model of lesions {lesions} needs one logit per lesion: num_classes {len(lesions)}, "
                f"got {num_classes}"
            )
        channels, activation = list(range(len(lesions))), "sigmoid"
    else:
        channels, activation = [1 if num_classes > 1 else 0], "softmax" if num_classes > 1 else "sigmoid"
    if (scale is None) != (patch is None):
        raise ValueError(f"scale and patch are given together or not at all, got scale {scale!r}, patch {patch!r}")
    height, width = check_size(size)
    return checkpoint_metadata(
        model,
        lesion="+".join(lesions),
        lesion_channel=channels[0],
        lesions=lesions,
        lesion_channels=channels,
        activation=activation,
        fundus_version=FUNDUS_METADATA_VERSION,
        preprocessing={
            "size": [height, width],
            "crop_fov": bool(crop_fov),
            "fov_box": "find_fov_box",
            "image_resize": "pillow-bilinear-antialiased",
            "scale": "uint8 / 255",
            "preprocess_version": PREPROCESS_VERSION,
            "resolution_scale": None if scale is None else float(scale),
            "patch": None if patch is None else list(check_size(tuple(patch), "patch")),
        },
        threshold=_check_threshold(threshold),
    )


def experiment_metadata(
    variant: str, lesion: "str | Sequence[str]", config: Any, in_channels: int = 3
) -> dict[str, Any]:
    """:func:`inference_metadata` of one run of the experiment (``config``: an ``ExperimentConfig``): the variant's
    UNet from ``in_channels`` to ``config.num_classes`` channels, for ``lesion`` (a joint model's lesions), trained
    on the field-of-view crop resized to ``config.size`` or on patches at ``config.scale``."""
    return inference_metadata(
        variant,
        lesion,
        tuple(config.size),
        in_channels=in_channels,
        num_classes=config.num_classes,
        scale=config.scale,
        patch=None if config.patch is None else tuple(config.patch),
    )


def _spec_from_metadata(metadata: Any, path: "str | os.PathLike") -> InferenceSpec:
    metadata = check_metadata(metadata, path)
    try:
        model, preprocessing = metadata["model"], metadata["preprocessing"]
        return InferenceSpec(
            variant=model["variant"],
            unet_kwargs=dict(model["unet_kwargs"]),
            in_channels=int(model["in_channels"]),
            num_classes=int(model["num_classes"]),
            lesion=metadata["lesion"],
            lesion_channel=int(metadata["lesion_channel"]),
            lesions=tuple(metadata.get("lesions") or [metadata["lesion"]]),
            lesion_channels=tuple(metadata.get("lesion_channels") or [int(metadata["lesion_channel"])]),
            activation=metadata.get("activation"),
            scale=preprocessing.get("resolution_scale"),
            patch=None if preprocessing.get("patch") is None else check_size(tuple(preprocessing["patch"]), "patch"),
            size=check_size(tuple(preprocessing["size"])),
            crop_fov=bool(preprocessing["crop_fov"]),
            threshold=float(metadata["threshold"]),
            library_version=metadata.get("library_version"),
            format_version=metadata["format_version"],
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the inference metadata is incomplete or malformed ({err!r})") from err


def _resolve_spec(state: dict, path: "str | os.PathLike", threshold: "float | None") -> InferenceSpec:
    if "inference" not in state:
        raise CheckpointError(
            f"{path} has no inference metadata: it is not a checkpoint of group-attention's experiment or "
            "save_model (a bare state_dict: rebuild the model yourself and call load_state_dict)"
        )
    spec = _spec_from_metadata(state["inference"], path)
    if threshold is not None:
        spec = InferenceSpec(**{**spec.to_dict(), "threshold": _check_threshold(threshold)})
    return spec


def read_spec(path: "str | os.PathLike", *, threshold: "float | None" = None) -> InferenceSpec:
    """The :class:`InferenceSpec` of a checkpoint (arguments as for :func:`load_model`), without building it."""
    state = read_checkpoint(path)
    checkpoint_weights(state, path)
    return _resolve_spec(state, path, threshold)


def load_model(
    path: "str | os.PathLike",
    *,
    device: "str | torch.device" = "cpu",
    threshold: "float | None" = None,
) -> UNet:
    """Rebuild the model of a checkpoint, load its weights and put it in eval mode on ``device``.

    The returned model carries its :class:`InferenceSpec` as ``model.inference_spec`` (lesion, training size,
    crop, threshold), which :func:`~group_attention.fundus.predict_probability` uses.

    Args:
        path: a checkpoint written by the experiment (``checkpoint_best.pt``/``checkpoint_last.pt``) or by
            :func:`~group_attention.inference.save_model` with :func:`inference_metadata`.
        device: where to put the model (default ``"cpu"``); the file is read on the CPU first.
        threshold: overrides the recorded decision threshold.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ``ValueError``): naming ``path``: not a checkpoint, a checkpoint of another kind or of a
            newer format version, or weights that do not fit the architecture.

    Example:
        >>> model = load_model("runs/idrid/runs/ganet/EX/fold1/checkpoint_best.pt")  # doctest: +SKIP
        >>> model.inference_spec.lesion, model.inference_spec.size  # doctest: +SKIP
        ('EX', (384, 512))
    """
    state = read_checkpoint(path)
    weights = checkpoint_weights(state, path)
    spec = _resolve_spec(state, path, threshold)
    model = build_model(state["inference"]["model"], weights, path)
    model.inference_spec = spec
    return model.to(device).eval()
