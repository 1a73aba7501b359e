"""SE's fused autograd Function: PyTorch operations (or Triton kernels on CUDA) with a hand-written backward, for
the default ReLU and sigmoid; computes :func:`group_attention.layers.se.squeeze_excite`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..dispatch import triton_kernels, use_triton
from ..group_ops import broadcast_channels, spatial_dims, spatial_size, stat_dtype
from .common import spatial_dot


def fused_squeeze_excite(
    x: torch.Tensor, weight1: torch.Tensor, bias1: torch.Tensor, weight2: torch.Tensor, bias2: torch.Tensor
) -> torch.Tensor:
    """:func:`~group_attention.layers.se.squeeze_excite` with ReLU and sigmoid, in one autograd Function."""
    return _SqueezeExcite.apply(x, weight1, bias1, weight2, bias2)


def _linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear`` in the inputs' dtype (at least float32) whatever the autocast state: the excitation is tiny."""
    with torch.autocast(inputs.device.type, enabled=False):
        return F.linear(inputs, weight.to(inputs.dtype), bias.to(inputs.dtype))


class _SqueezeExcite(torch.autograd.Function):
    """``SE.forward`` with ReLU and sigmoid (the defaults) and a hand-written backward.

    Forward reads ``x`` twice (the channel means, then the product); backward reads ``gy`` and ``x`` once for the
    per-channel sums of ``gy * x`` and writes ``dx = gy * w + d_mean / N`` in one more pass (each a Triton kernel
    for contiguous CUDA tensors, see :mod:`group_attention.layers.dispatch`). Autograd instead materializes the
    mean's gradient broadcast to
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
                    grad_x = kernels.scale_add(
                        grad, weights.float(), x.shape[1], shift=mean_grad.float(), out_dtype=x.dtype
                    )
                else:
                    grad_x = torch.addcmul(
                        broadcast_channels(mean_grad.to(x.dtype), x),
                        grad,
                        broadcast_channels(weights.to(x.dtype), x),
                        out=product,
                    )
        return grad_x, grad_weight1, grad_bias1, grad_weight2, grad_bias2
