"""CGA (layers/cga.py): eqs 1-2 against the float64 reference, its properties over random shapes and parameters,
and its fused path against its own readable functional form."""

from __future__ import annotations

import pytest
import references as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_each_sample_on_its_own, feature_maps, fused_and_readable_agree, randomized

from group_attention import CGA
from group_attention.layers import channel_group_attention


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 12, 4, 3, 5), (3, 6, 9), (2, 8, 1, 1)])
@pytest.mark.parametrize("gate", ["group", "channel"])
def test_cga_matches_equations_1_and_2(shape, gate):
    groups = shape[1] // 2
    cga = randomized(CGA(shape[1], groups, gate=gate), seed=0, std=0.5)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    expected = ref.cga(x, cga.fc.weight, cga.fc.bias, groups, gate)
    torch.testing.assert_close(cga(x), expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(feature_maps(), st.sampled_from(["group", "channel"]), st.integers(0, 2**31 - 1))
def test_cga_never_amplifies_a_feature(case, gate, seed):
    """|CGA(x)| <= |x|: every channel weight is a sigmoid in (0, 1)."""
    groups, x = case
    cga = randomized(CGA(x.shape[1], groups, gate=gate), seed)
    assert (cga(x).abs() <= x.abs()).all()


@settings(max_examples=15, deadline=None)
@given(feature_maps(max_batch=4), st.integers(0, 2**31 - 1))
def test_cga_treats_each_sample_of_a_batch_on_its_own(case, seed):
    groups, x = case
    assert_each_sample_on_its_own(randomized(CGA(x.shape[1], groups), seed), x)


@settings(max_examples=20, deadline=None)
@given(feature_maps(), st.sampled_from(["group", "channel"]), st.integers(0, 2**31 - 1))
def test_cga_fused_path_equals_its_readable_form_and_gradients(case, gate, seed):
    groups, x = case
    cga = randomized(CGA(x.shape[1], groups, gate=gate), seed)
    x = x.requires_grad_()
    readable = channel_group_attention(x, cga.fc.weight, cga.fc.bias, groups, cga.eps, gate == "group")
    fused_and_readable_agree(cga(x), readable, [x], list(cga.parameters()), seed)
