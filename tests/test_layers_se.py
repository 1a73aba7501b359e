"""SE (layers/se.py): Hu et al.'s equation against the float64 reference, its properties over random shapes and
parameters, and its fused path against its own readable functional form."""

from __future__ import annotations

import pytest
import references as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_each_sample_on_its_own, feature_maps, fused_and_readable_agree, randomized

from group_attention import SE
from group_attention.layers import squeeze_excite


@pytest.mark.parametrize("shape", [(2, 32, 5, 7), (1, 16, 3, 4, 5), (2, 8, 1, 1)])
def test_se_matches_hu_et_al(shape):
    se = randomized(SE(shape[1], reduction=4), seed=0, std=0.5)
    x = torch.randn(shape, dtype=torch.float64)
    expected = ref.se(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias)
    torch.testing.assert_close(se(x), expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(feature_maps(), st.integers(1, 16), st.integers(0, 2**31 - 1))
def test_se_never_amplifies_a_feature(case, reduction, seed):
    _, x = case
    se = randomized(SE(x.shape[1], reduction=reduction), seed)
    assert (se(x).abs() <= x.abs()).all()


@settings(max_examples=15, deadline=None)
@given(feature_maps(max_batch=4), st.integers(0, 2**31 - 1))
def test_se_treats_each_sample_of_a_batch_on_its_own(case, seed):
    _, x = case
    assert_each_sample_on_its_own(randomized(SE(x.shape[1], reduction=2), seed), x)


@settings(max_examples=20, deadline=None)
@given(feature_maps(), st.integers(0, 2**31 - 1))
def test_se_fused_path_equals_its_readable_form_and_gradients(case, seed):
    _, x = case
    se = randomized(SE(x.shape[1], reduction=2), seed)
    x = x.requires_grad_()
    readable = squeeze_excite(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias)
    fused_and_readable_agree(se(x), readable, [x], list(se.parameters()), seed)
