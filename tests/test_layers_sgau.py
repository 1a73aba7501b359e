"""SGAU (layers/sgau.py): eq. 3 against the float64 reference, its properties over random shapes and parameters, and
its fused path against its own readable functional form."""

from __future__ import annotations

import pytest
import references as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import GROUPS, PER_GROUP, assert_each_sample_on_its_own, fused_and_readable_agree, randomized

from group_attention import SGAU, integrations
from group_attention.layers import SkipAttention, spatial_group_attention


@pytest.mark.parametrize(
    "low_shape, high_shape",
    [
        ((2, 8, 10, 12), (2, 16, 5, 6)),
        ((1, 4, 11, 9), (1, 8, 5, 4)),
        ((1, 4, 6, 8, 4), (1, 8, 3, 4, 2)),
        ((2, 4, 2, 2), (2, 4, 1, 1)),
    ],
)
def test_sgau_matches_equation_3(low_shape, high_shape):
    groups = 4
    sgau = randomized(SGAU(low_shape[1], high_shape[1], groups, spatial_dims=len(low_shape) - 2), seed=0, std=0.5)
    low = torch.randn(low_shape, dtype=torch.float64)
    high = torch.randn(high_shape, dtype=torch.float64)
    expected = ref.sgau(low, high, sgau.up.weight, sgau.up.bias, groups)
    out = sgau(low, high)
    assert sgau.out_channels == out.shape[1] == 2 * low_shape[1]
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@st.composite
def skip_inputs(draw):
    """``(groups, low, high)``: float64 skip features, ``low`` about twice ``high``'s size (odd sizes too)."""
    groups = draw(GROUPS)
    low_per_group, high_per_group = draw(PER_GROUP), draw(PER_GROUP)
    dims = draw(st.sampled_from([1, 2, 3]))
    high_size = draw(st.lists(st.integers(1, 6 if dims < 3 else 3), min_size=dims, max_size=dims))
    low_size = [2 * s + draw(st.integers(-1, 1)) if s > 1 else 2 * s for s in high_size]
    batch, seed = draw(st.integers(1, 3)), draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.01, 100))
    generator = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, groups * low_per_group, *low_size, dtype=torch.float64, generator=generator) * scale
    high = torch.randn(batch, groups * high_per_group, *high_size, dtype=torch.float64, generator=generator) * scale
    return groups, low, high


@settings(max_examples=25, deadline=None)
@given(skip_inputs(), st.integers(0, 2**31 - 1))
def test_sgau_attended_half_lies_between_low_and_twice_low(case, seed):
    """low * (1 + A) with A in (0, 1): the same sign as low, between |low| and 2 |low|."""
    groups, low, high = case
    sgau = randomized(SGAU(low.shape[1], high.shape[1], groups, spatial_dims=low.dim() - 2), seed)
    attended = sgau(low, high)[:, : low.shape[1]]
    assert (attended * low >= 0).all()
    assert (attended.abs() >= low.abs()).all() and (attended.abs() <= 2 * low.abs()).all()


@settings(max_examples=15, deadline=None)
@given(skip_inputs(), st.integers(0, 2**31 - 1))
def test_sgau_treats_each_sample_of_a_batch_on_its_own(case, seed):
    groups, low, high = case
    sgau = randomized(SGAU(low.shape[1], high.shape[1], groups, spatial_dims=low.dim() - 2), seed)
    assert_each_sample_on_its_own(sgau, low, high)


@settings(max_examples=20, deadline=None)
@given(skip_inputs(), st.integers(0, 2**31 - 1))
def test_sgau_fused_path_equals_its_readable_form_and_gradients(case, seed):
    groups, low, high = case
    sgau = randomized(SGAU(low.shape[1], high.shape[1], groups, spatial_dims=low.dim() - 2), seed)
    low, high = low.requires_grad_(), high.requires_grad_()
    readable = torch.cat([spatial_group_attention(low, high, groups, sgau.eps), sgau.upsample(high, low.shape[2:])], 1)
    fused_and_readable_agree(sgau(low, high), readable, [low, high], list(sgau.parameters()), seed)


# -- the gate: one layer for SGAU and sgau_skips -----------------------------------------------------------------------
def test_sgau_gates_its_skip_with_the_public_skip_attention_layer():
    sgau = SGAU(8, 16, 4, eps=1e-4)
    assert isinstance(sgau.gate, SkipAttention) and (sgau.gate.channels, sgau.gate.groups, sgau.gate.eps) == (
        8,
        4,
        1e-4,
    )
    assert (sgau.groups, sgau.eps) == (4, 1e-4)
    assert integrations.SkipAttention is SkipAttention
    assert not list(sgau.gate.parameters()) and set(sgau.state_dict()) == {"up.weight", "up.bias"}


def test_skip_attention_with_up_is_sgaus_concatenation():
    gate = SkipAttention(4, 2)
    low, high, up = (
        torch.randn(2, 4, 6, 8, dtype=torch.float64),
        torch.randn(2, 8, 3, 4, dtype=torch.float64),
        torch.randn(2, 4, 6, 8, dtype=torch.float64),
    )
    expected = torch.cat([spatial_group_attention(low, high, 2, gate.eps), up], 1)
    torch.testing.assert_close(gate(low, high, up), expected, rtol=1e-12, atol=1e-12)


ILL_CASES = [
    (
        lambda: SkipAttention(4, 2)(torch.randn(1, 4, 6, 8), torch.randn(1, 8, 3, 4), torch.randn(1, 4, 6, 7)),
        r"up must be a tensor of low's shape \(1, 4, 6, 8\), got \(1, 4, 6, 7\)",
    ),
    (
        lambda: SkipAttention(4, 2)(torch.randn(1, 4, 6, 8), torch.randn(1, 6, 3, 4)[:, :5]),
        r"high must be a tensor .* channels divisible by groups=2, got \(1, 5, 3, 4\)",
    ),
    (lambda: SkipAttention(6, 4), r"channels=6 is not divisible by groups=4; valid groups: \[1, 2, 3, 6\]"),
]


@pytest.mark.parametrize("call, message", ILL_CASES)
def test_skip_attention_refuses_ill_inputs_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()
