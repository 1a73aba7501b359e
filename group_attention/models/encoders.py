"""Encoders for :class:`~group_attention.models.UNet`: the paper's own U-Net encoder and timm backbones.

Every encoder returns one feature map per stage, shallowest first, and describes them with ``channels`` and
``reductions`` (the stride of each stage relative to the input). Each stage's attention belongs to the encoder:
inside the contracting path for U-Net's encoder (the next stage sees the attended features, as in Fig. 1), on the
returned features for a timm encoder (whose stages run as one model; use timm's ``block_args=dict(attn_layer=CGA)``
for attention inside its blocks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_positive_int
from .blocks import MAX_POOL, ConvBlock

AttentionFactory = Callable[[int], nn.Module]


class EncoderStage(nn.Module):
    """One stage of U-Net's contracting path: (max-pool,) a double convolution, then the stage's attention.

    ``forward`` also returns what the next stage pools. After a channel gate (a layer with ``forward_with_gate``,
    as CGA) that is the un-gated features and the gate: the weights are positive, so
    ``maxpool(x * w) == maxpool(x) * w``, and pooling ``x``, which the gate's backward keeps anyway, spares keeping
    the gated copy for the pool's backward.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        downsample: bool,
        attention: "nn.Module | None" = None,
        spatial_dims: int = 2,
        norm: Any = "batch",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        self.pool = MAX_POOL[spatial_dims](2) if downsample else nn.Identity()
        self.block = ConvBlock(in_channels, out_channels, 2, spatial_dims=spatial_dims, norm=norm, act=act)
        self.attention = nn.Identity() if attention is None else attention

    def forward(
        self, x: torch.Tensor, gate: "torch.Tensor | None" = None, *, last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]:
        """``(attended features, input of the next stage, its gate or None)`` from the previous stage's output ``x``
        (un-gated when ``gate`` is given)."""
        pooled = self.pool(x)
        features = self.block(pooled if gate is None else pooled * gate)
        with_gate = getattr(self.attention, "forward_with_gate", None)
        if with_gate is None or last:
            attended = self.attention(features)
            return attended, attended, None
        attended, weights = with_gate(features)
        return attended, features, weights.view(*weights.shape, *([1] * (features.dim() - 2)))


class UNetEncoder(nn.Module):
    """U-Net's contracting path (Fig. 1): a double-conv stage, then (max-pool, double-conv) per deeper stage, each
    followed by its attention layer (none by default); the next stage sees the attended features.

    Args:
        in_channels: input channels.
        channels: stage widths, shallowest first.
        attention: a factory ``width -> module`` for each stage's attention (e.g. ``CGA``), or None.
        spatial_dims, norm, act: as :class:`~group_attention.models.UNet`.

    Shape:
        ``(B, in_channels, *S) -> [(B, channels[i], *S / 2**i) for each stage i]``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        *,
        attention: "AttentionFactory | None" = None,
        spatial_dims: int = 2,
        norm: Any = "batch",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.channels = list(channels)
        self.reductions = [2**index for index in range(len(self.channels))]
        widths = [in_channels] + self.channels
        self.stages = nn.ModuleList(
            EncoderStage(
                c_in,
                c_out,
                downsample=index > 0,
                attention=None if attention is None else attention(c_out),
                spatial_dims=spatial_dims,
                norm=norm,
                act=act,
            )
            for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        gate = None
        for index, stage in enumerate(self.stages):
            attended, x, gate = stage(x, gate, last=index == len(self.stages) - 1)
            features.append(attended)
        return features


class TimmEncoder(nn.Module):
    """A timm backbone with ``features_only=True``, offline unless pretrained weights are asked for.

    Args:
        name: a timm model name, e.g. ``"resnet34"``.
        in_channels: input channels (timm's ``in_chans``).
        pretrained: load pretrained weights. They must already be in the local cache (no network is assumed);
            otherwise a ``RuntimeError`` says so and suggests ``pretrained=False``.
        attention: a factory ``width -> module`` for the attention applied to each returned feature map, or None.
        **kwargs: passed to ``timm.create_model`` (e.g. ``out_indices``, ``block_args``).
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        *,
        pretrained: bool = False,
        attention: "AttentionFactory | None" = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(f"encoder {name!r} is not a timm model name; see timm.list_models(), e.g. 'resnet34'")
        try:
            with _local_weights_only() if pretrained else contextlib.nullcontext():
                self.model = timm.create_model(
                    name, features_only=True, pretrained=pretrained, in_chans=in_channels, **kwargs
                )
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

        self.attention = nn.ModuleList(
            nn.Identity() if attention is None else attention(width) for width in self.channels
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [layer(feature) for layer, feature in zip(self.attention, self.model(x))]


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
