"""A U-Net builder with group attention: GANet and every row of Table 1 of Ye et al. (SPIE Medical Imaging 2020)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int
from ..layers import SGAU
from ..layers.dispatch import NotScriptable
from ..layers.group_ops import autocast_enabled
from ..registry import create_attention, get_attention, get_skip
from .blocks import check_spatial_dims
from .decoder import SegmentationHead, UNetDecoder
from .encoders import TimmEncoder, UNetEncoder

SIZE_MODES = ("pad", "strict")


def _accepts(factory: Any, argument: str) -> bool:
    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


class UNet(NotScriptable, nn.Module):
    r"""U-Net with optional channel attention after each encoder stage and a choice of skip connection.

    The encoder is U-Net's (``channels`` doubling per stage, Fig. 1 of the paper) or a timm backbone
    (``encoder="resnet34"``); after each encoder stage an attention layer (``encoder_attention``: ``"cga"``,
    ``"se"``, ``"sge"``, a class, or None) reweights the features, which then feed both the next stage and the skip
    connection (for a timm encoder, only the skip connections and the bottleneck: its stages run as one model);
    each decoder level joins the upsampled deeper features with the encoder features through ``skip``
    (``"concat"``, U-Net's, or ``"sgau"``) followed by ``decoder_convs`` 3x3 convolutions (2 in U-Net, 1 in the
    paper's Baseline). A 1x1 convolution gives ``num_classes`` logits at the input resolution.

    Inputs whose spatial size is not a multiple of the total stride (16 for five stages) are zero-padded at the
    bottom/right and the logits cropped back (``size_mode="pad"``, default); ``size_mode="strict"`` raises a
    ``ValueError`` suggesting the nearest valid sizes instead.

    The SGAU attention maps (the paper's Fig. 4) are kept after each forward pass while ``record_attention`` is
    True; read them with :meth:`attention_maps`.

    Args:
        in_channels: input channels (default 3).
        num_classes: output channels (logits; default 2).
        channels: encoder widths, shallowest first (default ``(32, 64, 128, 256, 512)``); ignored with ``encoder``.
        decoder_convs: convolutions per decoder level (default 2).
        encoder_attention: attention after each encoder stage (default None).
        skip: ``"concat"`` (default) or ``"sgau"``, or a class ``(low_channels, high_channels, **kw)``.
        groups: groups ``m`` of CGA, SGE and SGAU (default 32).
        norm: ``"batch"`` (default), ``"instance"``, ``"group"``, None, or a class taking the channel count.
        act: ``"relu"`` (default), ``"leaky_relu"``, ``"gelu"``, ``"silu"``, or a class.
        spatial_dims: 2 (default) or 3 (volumes; 1 also works).
        encoder: None (U-Net's encoder, default) or a timm model name.
        pretrained: load the timm encoder's pretrained weights from the local cache (default False).
        size_mode: ``"pad"`` (default) or ``"strict"``.
        attention_kwargs: extra keyword arguments for the attention layer.
        encoder_kwargs: extra keyword arguments for ``timm.create_model``.

    Shape:
        ``(B, in_channels, *S) -> (B, num_classes, *S)``. Recommended: ``S`` a multiple of 16, e.g. 384x512.

    Example:
        >>> model = UNet(3, 2, encoder_attention="cga", skip="sgau", decoder_convs=1)  # GANet
        >>> model(torch.randn(1, 3, 64, 96)).shape
        torch.Size([1, 2, 64, 96])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        *,
        decoder_convs: int = 2,
        encoder_attention: Any = None,
        skip: Any = "concat",
        groups: int = 32,
        norm: Any = "batch",
        act: Any = "relu",
        spatial_dims: int = 2,
        encoder: "str | None" = None,
        pretrained: bool = False,
        size_mode: str = "pad",
        attention_kwargs: "dict[str, Any] | None" = None,
        encoder_kwargs: "dict[str, Any] | None" = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("num_classes", num_classes)
        check_positive_int("decoder_convs", decoder_convs)
        check_spatial_dims(spatial_dims)
        self.size_mode = check_choice("size_mode", size_mode, SIZE_MODES)
        self.spatial_dims = spatial_dims
        attention = self._attention_factory(encoder_attention, groups, attention_kwargs)
        if encoder is None:
            if pretrained or encoder_kwargs:
                raise ValueError(
                    "pretrained and encoder_kwargs apply to a timm encoder; pass encoder='resnet34' "
                    "(or another timm name) with them, or leave them out for U-Net's own encoder"
                )
            if isinstance(channels, int) or not isinstance(channels, Sequence):
                raise TypeError(f"channels must be a sequence of stage widths, e.g. (32, 64, 128), got {channels!r}")
            if len(channels) < 2:
                raise ValueError(f"channels must list at least 2 stage widths, got {tuple(channels)}")
            for width in channels:
                check_positive_int("channels", width)
            self.encoder: nn.Module = UNetEncoder(
                in_channels, channels, attention=attention, spatial_dims=spatial_dims, norm=norm, act=act
            )
        else:
            if spatial_dims != 2:
                raise ValueError(f"timm encoders are 2D; got spatial_dims={spatial_dims} with encoder={encoder!r}")
            self.encoder = TimmEncoder(
                encoder, in_channels, pretrained=pretrained, attention=attention, **(encoder_kwargs or {})
            )
        self.total_stride = self.encoder.reductions[-1]
        self.decoder = UNetDecoder(
            self.encoder.channels,
            self._skip_factory(skip, groups, spatial_dims),
            decoder_convs=decoder_convs,
            spatial_dims=spatial_dims,
            norm=norm,
            act=act,
        )
        self.head = SegmentationHead(
            self.encoder.channels[0], num_classes, spatial_dims=spatial_dims, upsample=self.encoder.reductions[0]
        )

    @staticmethod
    def _attention_factory(
        name: Any, groups: int, kwargs: "dict[str, Any] | None"
    ) -> "Callable[[int], nn.Module] | None":
        factory = get_attention(name)
        if factory is None:
            if kwargs:
                raise ValueError(
                    f"attention_kwargs {kwargs} given without encoder_attention; name the layer, "
                    "e.g. encoder_attention='cga'"
                )
            return None
        kwargs = dict(kwargs or {})
        if _accepts(factory, "groups"):
            kwargs.setdefault("groups", groups)
        return lambda width: create_attention(name, width, **kwargs)

    @staticmethod
    def _skip_factory(name: Any, groups: int, spatial_dims: int) -> Callable[[int, int], nn.Module]:
        factory = get_skip(name)
        kwargs: dict[str, Any] = {"spatial_dims": spatial_dims}
        if _accepts(factory, "groups"):
            kwargs["groups"] = groups
        return lambda low, high: factory(low, high, **kwargs)

    # -- forward: Fig. 1 ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        features = self.encoder(self._pad_input(x))  # the contracting path, shallowest first
        logits = self.head(self.decoder(features))  # the expanding path through the skip connections
        return self._crop_output(logits, x.shape[2:])

    # -- sizes and inputs -----------------------------------------------------------------------------------------
    @property
    def skips(self) -> nn.ModuleList:
        """The decoder's skip connections, deepest first."""
        return self.decoder.skips

    def valid_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """The smallest spatial size >= ``size`` that the network takes without padding."""
        stride = self.total_stride
        return tuple((s + stride - 1) // stride * stride for s in size)  # no negative floor division: ONNX truncates

    def _check_input(self, x: object) -> None:
        if isinstance(x, torch.fx.Proxy):
            return
        if not isinstance(x, torch.Tensor) or x.dim() != self.spatial_dims + 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__}: x must have shape (B, C, {', '.join('S' * self.spatial_dims)}) "
                f"for spatial_dims={self.spatial_dims}, got {shape}"
            )
        parameter = next(self.parameters())
        if x.dtype != parameter.dtype and not autocast_enabled(x):
            raise TypeError(
                f"{type(self).__name__}: x has dtype {x.dtype} but the model's parameters are {parameter.dtype}; "
                f"convert one to the other (x.to({parameter.dtype}) or model.to({x.dtype})), or run under "
                "torch.autocast"
            )

    def _pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the bottom/right to a multiple of the total stride (``size_mode="pad"``), or refuse ("strict").

        The sizes stay symbolic in traced and exported graphs, so those pad every input size correctly.
        """
        size = tuple(x.shape[2:])
        target = self.valid_size(size)
        eager = all(isinstance(s, int) for s in size)
        if eager and target == size:
            return x
        if self.size_mode == "strict":
            lower = tuple(max(self.total_stride, s // self.total_stride * self.total_stride) for s in size)
            raise ValueError(
                f"input spatial size {size} is not a multiple of the total stride {self.total_stride}; "
                f"nearest valid sizes: {lower} or {target} (or build the model with size_mode='pad')"
            )
        return _pad_bottom_right(x, target)

    @staticmethod
    def _crop_output(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The logits of the input's own positions (top-left): a view in eager mode; in traced and exported graphs
        a negative padding, whose fresh output does not tie the graph to the padded size."""
        if all(isinstance(s, int) for s in size):
            return logits[(slice(None), slice(None), *(slice(0, s) for s in size))]
        return _pad_bottom_right(logits, size)

    # -- SGAU attention maps (Fig. 4) -----------------------------------------------------------------------------
    @property
    def record_attention(self) -> bool:
        """While True, every SGAU module keeps its last attention maps (see :meth:`attention_maps`)."""
        return any(getattr(skip, "record_attention", False) for skip in self.skips)

    @record_attention.setter
    def record_attention(self, value: bool) -> None:
        for skip in self.skips:
            if isinstance(skip, SGAU):
                skip.record_attention = bool(value)
                if not value:
                    skip.last_attention = None

    def attention_maps(self) -> list[torch.Tensor]:
        """The SGAU attention maps of the last forward pass, deepest decoder level first.

        Each is ``(B, groups, *S_level)`` with values in (0, 1) at that level's low-level resolution.
        Empty if the model has no SGAU; raises ``RuntimeError`` if ``record_attention`` was off.
        """
        sgau = [skip for skip in self.skips if isinstance(skip, SGAU)]
        if sgau and any(skip.last_attention is None for skip in sgau):
            raise RuntimeError("no attention maps recorded: set model.record_attention = True, then run forward")
        return [skip.last_attention for skip in sgau]


def _pad_bottom_right(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad (or, for a smaller ``size``, crop) the bottom/right of ``x``'s spatial dims to ``size``."""
    pads: list = []
    for current, wanted in zip(reversed(x.shape[2:]), reversed(tuple(size))):
        pads += [0, wanted - current]
    return F.pad(x, pads)
