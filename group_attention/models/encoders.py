"""Encoders for :class:`~group_attention.models.UNet`: the paper's own U-Net encoder and timm backbones.

Every encoder returns one feature map per stage, shallowest first, and describes them with ``channels`` and
``reductions`` (the stride of each stage relative to the input). ``forward(x, attention)`` applies
``attention[i]`` to the output of stage ``i``: inside the contracting path for U-Net's encoder (the next stage sees
the attended features, as in Fig. 1), to the returned features for a timm encoder (whose stages run as one model;
use timm's ``block_args=dict(attn_layer=CGA)`` for attention inside its blocks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Sequence

import torch
from torch import nn

from .._checks import check_positive_int
from .blocks import MAX_POOL, ConvBlock


class UNetEncoder(nn.Module):
    """U-Net's contracting path (Fig. 1): a double-conv stage, then (max-pool, double-conv) per deeper stage.

    Shape:
        ``(B, in_channels, *S) -> [(B, channels[i], *S / 2**i) for each stage i]``.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], *, spatial_dims: int = 2, norm: Any = "batch",
                 act: Any = "relu") -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.channels = list(channels)
        self.reductions = [2**index for index in range(len(self.channels))]
        widths = [in_channels] + self.channels
        self.stages = nn.ModuleList()
        for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            block = ConvBlock(c_in, c_out, 2, spatial_dims=spatial_dims, norm=norm, act=act)
            self.stages.append(block if index == 0 else nn.Sequential(MAX_POOL[spatial_dims](2), block))

    def forward(self, x: torch.Tensor, attention: "Sequence[nn.Module] | None" = None) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        previous, gate = x, None
        for index, stage in enumerate(self.stages):
            if gate is None:
                raw = stage(previous)
            else:
                # maxpool(x * w) == maxpool(x) * w for positive channel weights w: pooling x, which the attention's
                # backward keeps anyway, spares keeping the attended copy for the pool's backward.
                pool, block = stage
                raw = block(pool(previous) * gate)
            attended, gate = self._attend(attention, index, raw)
            features.append(attended)
            previous = raw if gate is not None else attended
        return features

    def _attend(self, attention: "Sequence[nn.Module] | None", index: int,
                x: torch.Tensor) -> tuple[torch.Tensor, "torch.Tensor | None"]:
        """Stage ``index``'s attention on ``x``, and its channel weights shaped to broadcast when the layer is a
        channel gate (``forward_with_gate``, as CGA) followed by another stage; otherwise None."""
        if attention is None:
            return x, None
        layer = attention[index]
        with_gate = getattr(layer, "forward_with_gate", None)
        if with_gate is None or index + 1 == len(self.stages):
            return layer(x), None
        attended, weights = with_gate(x)
        return attended, weights.view(*weights.shape, *([1] * (x.dim() - 2)))


class TimmEncoder(nn.Module):
    """A timm backbone with ``features_only=True``, offline unless pretrained weights are asked for.

    Args:
        name: a timm model name, e.g. ``"resnet34"``.
        in_channels: input channels (timm's ``in_chans``).
        pretrained: load pretrained weights. They must already be in the local cache (no network is assumed);
            otherwise a ``RuntimeError`` says so and suggests ``pretrained=False``.
        **kwargs: passed to ``timm.create_model`` (e.g. ``out_indices``, ``block_args``).
    """

    def __init__(self, name: str, in_channels: int = 3, *, pretrained: bool = False, **kwargs: Any) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(
                f"encoder {name!r} is not a timm model name; see timm.list_models(), e.g. 'resnet34'"
            )
        try:
            with _local_weights_only() if pretrained else contextlib.nullcontext():
                self.model = timm.create_model(name, features_only=True, pretrained=pretrained,
                                               in_chans=in_channels, **kwargs)
        except Exception as error:  # noqa: BLE001 - timm and huggingface_hub raise many kinds when offline
            if not pretrained:
                raise
            raise RuntimeError(
                f"could not load pretrained weights for encoder {name!r} ({type(error).__name__}: {error}). "
                "group-attention never downloads at run time: put the weights in the timm/Hugging Face cache "
                "first, or pass pretrained=False"
            ) from error
        self.channels = list(self.model.feature_info.channels())
        self.reductions = list(self.model.feature_info.reduction())
        for shallow, deep in zip(self.reductions[:-1], self.reductions[1:]):
            if deep != 2 * shallow:
                raise ValueError(
                    f"encoder {name!r} has feature strides {self.reductions}; the U-Net decoder needs each stage "
                    "to halve the resolution (pick out_indices with strides doubling)"
                )

    def forward(self, x: torch.Tensor, attention: "Sequence[nn.Module] | None" = None) -> list[torch.Tensor]:
        features = list(self.model(x))
        if attention is None:
            return features
        return [layer(feature) for layer, feature in zip(attention, features)]


def _refuse_download(url: object, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError(f"{url} is not in the local cache and downloads are off")


@contextlib.contextmanager
def _local_weights_only() -> Iterator[None]:
    """Inside, the Hugging Face hub answers from its cache only (offline mode) and torch.hub's and timm's URL
    downloads raise: pretrained weights come from the local caches or not at all, at once, with no network retry."""
    patches: list[tuple[Any, str, Any]] = []
    try:
        from huggingface_hub import constants
    except ImportError:
        pass
    else:
        patches.append((constants, "HF_HUB_OFFLINE", True))
    import torch.hub

    patches.append((torch.hub, "download_url_to_file", _refuse_download))
    try:
        from timm.models import _hub as timm_hub
    except ImportError:
        pass
    else:
        if hasattr(timm_hub, "download_url_to_file"):
            patches.append((timm_hub, "download_url_to_file", _refuse_download))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
