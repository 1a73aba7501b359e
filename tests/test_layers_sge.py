"""SGE (layers/sge.py): the authors' formulation against the float64 reference, its properties over random shapes
and parameters, and its fused path against its own readable functional form."""

from __future__ import annotations

import pytest
import references as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_each_sample_on_its_own, feature_maps, fused_and_readable_agree, randomized

from group_attention import SGE
from group_attention.layers import spatial_group_enhance


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 12, 3, 4, 5), (2, 6, 11), (1, 4, 1, 1)])
def test_sge_matches_authors_formulation(shape):
    groups = shape[1] // 2
    sge = randomized(SGE(shape[1], groups), seed=0, std=0.5)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(sge(x), ref.sge(x, sge.weight, sge.bias, groups), rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(feature_maps(), st.integers(0, 2**31 - 1))
def test_sge_never_amplifies_a_feature(case, seed):
    groups, x = case
    sge = randomized(SGE(x.shape[1], groups), seed, std=2.0)
    assert (sge(x).abs() <= x.abs()).all()


@settings(max_examples=15, deadline=None)
@given(feature_maps(max_batch=4), st.integers(0, 2**31 - 1))
def test_sge_treats_each_sample_of_a_batch_on_its_own(case, seed):
    groups, x = case
    assert_each_sample_on_its_own(randomized(SGE(x.shape[1], groups), seed), x)


@settings(max_examples=20, deadline=None)
@given(feature_maps(), st.integers(0, 2**31 - 1))
def test_sge_fused_path_equals_its_readable_form_and_gradients(case, seed):
    groups, x = case
    sge = randomized(SGE(x.shape[1], groups), seed)
    x = x.requires_grad_()
    readable = spatial_group_enhance(x, sge.weight, sge.bias, groups, sge.eps)
    fused_and_readable_agree(sge(x), readable, [x], list(sge.parameters()), seed)
