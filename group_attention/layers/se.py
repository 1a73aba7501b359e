"""Squeeze-and-Excitation (SE): Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .._checks import check_feature_map, check_positive_int
from ._group_ops import broadcast_channels, spatial_dims, spatial_dot, spatial_size, stat_dtype
from ._kernels import triton_kernels, use_triton


class SE(nn.Module):
    r"""Squeeze-and-excitation channel attention, the "+SE" row of GANet's Table 1.

    .. math::
        Y = \sigma\big(W_2\,\delta(W_1\,\mathrm{GP}(F) + b_1) + b_2\big) \otimes F

    with global average pooling :math:`\mathrm{GP}`, ReLU :math:`\delta` and a bottleneck of
    ``max(1, channels // reduction)`` units. Unlike timm's ``SEModule`` the bottleneck is not rounded up to a
    multiple of 8: with reduction 16 five SE modules on GANet's 32..512-channel encoder add 44,702 parameters,
    Table 1's Baseline+SE count (7.025M vs 6.981M); timm's rounding would add 45,608.

    Args:
        channels: number of input channels ``C`` (first positional argument: works as timm's ``attn_layer``).
        reduction: bottleneck ratio (default 16).
        rd_channels: bottleneck width; overrides ``reduction`` when given.
        act_layer: activation between the two linear maps (default ``nn.ReLU``).
        gate_layer: gating activation (default ``nn.Sigmoid``).
        device, dtype: factory keyword arguments for the parameters.

    Shape:
        - Input: ``(B, C, *spatial)`` with 1 to 3 spatial dims.
        - Output: same shape, dtype and device as the input.

    Example:
        >>> SE(64)(torch.randn(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        rd_channels: "int | None" = None,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
        device: "torch.device | str | None" = None,
        dtype: "torch.dtype | None" = None,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        rd_channels = max(1, channels // reduction) if rd_channels is None else rd_channels
        check_positive_int("rd_channels", rd_channels)
        self.channels = channels
        self.fc1 = nn.Linear(channels, rd_channels, device=device, dtype=dtype)
        self.act = act_layer()
        self.fc2 = nn.Linear(rd_channels, channels, device=device, dtype=dtype)
        self.gate = gate_layer()

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation: one weight per channel. ``(B, C, *spatial) -> (B, C)``."""
        pooled = x.mean(spatial_dims(x))
        return self.gate(self.fc2(self.act(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("x", x, self.channels, type(self).__name__)
        if type(self.act) is nn.ReLU and type(self.gate) is nn.Sigmoid:
            return _SqueezeExcite.apply(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        weights = self.channel_weights(x).to(x.dtype)
        return x * broadcast_channels(weights, x)

    def extra_repr(self) -> str:
        return f"{self.channels}, rd_channels={self.fc1.out_features}"


def _linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear`` in the inputs' dtype (at least float32) whatever the autocast state: the excitation is tiny."""
    with torch.autocast(inputs.device.type, enabled=False):
        return F.linear(inputs, weight.to(inputs.dtype), bias.to(inputs.dtype))


class _SqueezeExcite(torch.autograd.Function):
    """``SE.forward`` with ReLU and sigmoid (the defaults) and a hand-written backward.

    Forward reads ``x`` twice (the channel means, then the product); backward reads ``gy`` and ``x`` once for the
    per-channel sums of ``gy * x`` and writes ``dx = gy * w + d_mean / N`` in one more pass (each a Triton kernel
    for contiguous CUDA tensors, see ``_kernels``). Autograd instead materializes the mean's gradient broadcast to
    ``x``'s size and then adds the two gradients of ``x``.
    """

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2):
        pooled = x.mean(spatial_dims(x), dtype=stat_dtype(x.dtype))
        pooled = pooled.to(torch.promote_types(pooled.dtype, weight1.dtype))
        hidden = torch.relu(_linear(pooled, weight1, bias1))
        weights = torch.sigmoid(_linear(hidden, weight2, bias2))
        ctx.save_for_backward(x, pooled, hidden, weights, weight1, weight2)
        ctx.kernels = use_triton(x)
        if ctx.kernels:
            return triton_kernels().scale_add(x, weights.to(x.dtype), x.shape[1])
        return x * broadcast_channels(weights.to(x.dtype), x)

    @staticmethod
    @once_differentiable  # hand-written: its own backward would not be the second derivative
    def backward(ctx, grad):
        x, pooled, hidden, weights, weight1, weight2 = ctx.saved_tensors
        kernels = triton_kernels() if ctx.kernels else None
        if kernels is not None:
            grad = grad.contiguous()
        with torch.autocast(x.device.type, enabled=False):
            if kernels is not None:
                channel_sums, product = kernels.row_dots(grad, x, x.shape[1])[0], None
            else:
                channel_sums, product = spatial_dot(grad, x)
            grad_logits = channel_sums.to(weights.dtype) * weights * (1 - weights)
            grad_hidden = (grad_logits @ weight2.to(grad_logits.dtype)).masked_fill_(hidden <= 0, 0.0)
            grad_pooled = grad_hidden @ weight1.to(grad_hidden.dtype)
            grad_weight1 = (grad_hidden.t() @ pooled).to(weight1.dtype) if ctx.needs_input_grad[1] else None
            grad_bias1 = grad_hidden.sum(0).to(weight1.dtype) if ctx.needs_input_grad[2] else None
            grad_weight2 = (grad_logits.t() @ hidden).to(weight2.dtype) if ctx.needs_input_grad[3] else None
            grad_bias2 = grad_logits.sum(0).to(weight2.dtype) if ctx.needs_input_grad[4] else None
            grad_x = None
            if ctx.needs_input_grad[0]:
                # One pass: gy * w plus the mean's gradient, spread evenly over the positions; on CPU written over
                # the product gy * x, whose memory is free again.
                mean_grad = grad_pooled / spatial_size(x)
                if kernels is not None:
                    grad_x = kernels.scale_add(grad, weights.float(), x.shape[1], shift=mean_grad.float(),
                                               out_dtype=x.dtype)
                else:
                    grad_x = torch.addcmul(broadcast_channels(mean_grad.to(x.dtype), x), grad,
                                           broadcast_channels(weights.to(x.dtype), x), out=product)
        return grad_x, grad_weight1, grad_bias1, grad_weight2, grad_bias2
