"""Hypothesis strategies shared by the per-layer tests: shapes with up to 32 groups and more than 4 channels per group,
random (not initial) parameters and inputs of random scale and offset."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

GROUPS = st.sampled_from([1, 2, 4, 8, 16, 32])
PER_GROUP = st.integers(1, 7)  # beyond 4 the fused group sums take another code path


@st.composite
def feature_maps(draw, max_batch: int = 3, max_side: int = 9, spatial_dims: "int | None" = None):
    """``(groups, x)``: a float64 ``(B, groups * k, *S)`` tensor of random scale and offset."""
    groups, per_group = draw(GROUPS), draw(PER_GROUP)
    dims = draw(st.sampled_from([1, 2, 3])) if spatial_dims is None else spatial_dims
    side = max_side if dims < 3 else 5
    shape = (
        draw(st.integers(1, max_batch)),
        groups * per_group,
        *draw(st.lists(st.integers(1, side), min_size=dims, max_size=dims)),
    )
    seed, scale, offset = draw(st.integers(0, 2**31 - 1)), draw(st.floats(0.01, 100)), draw(st.floats(-5, 5))
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale + offset
    return groups, x


def randomized(module: nn.Module, seed: int, std: float = 1.0) -> nn.Module:
    """``module`` in float64 with parameters drawn from N(0, std), not the initial ones."""
    generator = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, dtype=parameter.dtype, generator=generator) * std)
    return module


def fused_and_readable_agree(fused_out, readable_out, inputs, parameters, seed: int) -> None:
    """Forward values and the gradients of every input and parameter agree (float64)."""
    grad_output = torch.randn(fused_out.shape, dtype=fused_out.dtype, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(fused_out, readable_out, rtol=1e-9, atol=1e-9 * (1 + readable_out.abs().max().item()))
    wrt = [*inputs, *parameters]
    fused_grads = torch.autograd.grad(fused_out, wrt, grad_output, allow_unused=True)
    readable_grads = torch.autograd.grad(readable_out, wrt, grad_output, allow_unused=True)
    for got, want in zip(fused_grads, readable_grads):
        want = torch.zeros_like(got) if want is None else want
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7 * (1 + want.abs().max().item()))


def assert_each_sample_on_its_own(module: nn.Module, *inputs: torch.Tensor) -> None:
    """The module's output for a batch equals its outputs for each sample alone (eval mode, float64).

    Up to float64 rounding: a batch and a single sample may take different BLAS kernels, whose sums over a layer's
    channels differ in the last bits (1.4e-12 relative was seen for SE(112) on inputs near 100). A sample leaking
    into another would differ by the size of the values."""
    module = module.eval()
    batched = module(*inputs)
    for index in range(inputs[0].shape[0]):
        alone = module(*(x[index : index + 1] for x in inputs))
        scale = 1 + alone.detach().abs().max().item()
        torch.testing.assert_close(batched[index : index + 1], alone, rtol=1e-10, atol=1e-10 * scale)
