"""The fused autograd Functions (layers/fused/) against the library's own readable functional forms.

The per-layer tests check each readable form against the papers' equations in float64; here the forward *and* the
gradients of every input and parameter of the fused paths are compared with autograd through those forms, over the
code paths the fused versions choose between: memory formats, 1D/2D/3D maps, group sizes handled by a loop of
multiply-adds or by a reduction, reduced precision, partial ``requires_grad`` and ``torch.compile``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from group_attention import CGA, SE, SGAU, SGE
from group_attention.integrations import SkipAttention
from group_attention.layers import (
    cga_channel_weights,
    channel_group_attention,
    spatial_group_attention,
    spatial_group_enhance,
    squeeze_excite,
)
from group_attention.layers.fused import cga as fused_cga
from group_attention.layers.fused import common as group_ops
from group_attention.layers.fused.common import (
    LOOP_MAX_CHANNELS_PER_GROUP,
    memory_format_of,
    resize_to,
    resize_to_backward,
    standardize_maps,
)
from group_attention.layers.group_ops import spatial_standardize


# -- the library's readable functional forms, which the fused paths must equal ---------------------------------------
def plain_standardize(maps: torch.Tensor, eps: float) -> torch.Tensor:
    return spatial_standardize(maps, eps)


def plain_cga(layer: CGA, x: torch.Tensor) -> torch.Tensor:
    return channel_group_attention(x, layer.fc.weight, layer.fc.bias, layer.groups, layer.eps, layer.gate == "group")


def plain_se(layer: SE, x: torch.Tensor) -> torch.Tensor:
    return squeeze_excite(x, layer.fc1.weight, layer.fc1.bias, layer.fc2.weight, layer.fc2.bias)


def plain_sge(layer: SGE, x: torch.Tensor) -> torch.Tensor:
    return spatial_group_enhance(x, layer.weight, layer.bias, layer.groups, layer.eps)


def plain_sgau(layer: SGAU, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    attended = spatial_group_attention(low, high, layer.groups, layer.eps)
    return torch.cat([attended, layer.upsample(high, low.shape[2:])], 1)


def randomize(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.5)
    return module


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last:
        return x
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


def gradients(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], grad_output: torch.Tensor):
    return torch.autograd.grad(out, inputs, grad_output, allow_unused=True)


def assert_same_forward_and_gradients(fused, plain, inputs, params, rtol=1e-9, atol=1e-10):
    out = fused(*inputs)
    expected = plain(*inputs)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    grad_output = torch.randn_like(expected)
    targets = tuple(t for t in inputs + params if t.requires_grad)
    for got, want in zip(gradients(out, targets, grad_output), gradients(expected, targets, grad_output)):
        torch.testing.assert_close(got, want, rtol=rtol * 100, atol=atol * 100)


# Group sizes on both sides of the loop/reduction switch; 1D, 2D and 3D maps; both memory formats.
PER_GROUP = sorted({1, 2, LOOP_MAX_CHANNELS_PER_GROUP, LOOP_MAX_CHANNELS_PER_GROUP + 1})
LAYOUTS = [((5, 7), False), ((5, 7), True), ((3, 4, 5), False), ((3, 4, 5), True), ((11,), False)]
LAYOUT_IDS = ["2d", "2d-channels-last", "3d", "3d-channels-last", "1d"]


@pytest.mark.parametrize("per_group", PER_GROUP)
@pytest.mark.parametrize("size, channels_last", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("gate", ["group", "channel"])
def test_cga_fused_matches_autograd(per_group, size, channels_last, gate):
    groups = 3
    layer = randomize(CGA(groups * per_group, groups, gate=gate)).double()
    x = to_memory_format(torch.randn(2, groups * per_group, *size, dtype=torch.float64) * 2 + 1, channels_last)
    assert_same_forward_and_gradients(
        layer, lambda x: plain_cga(layer, x), (x.requires_grad_(),), tuple(layer.parameters())
    )


@pytest.mark.parametrize("per_group", PER_GROUP)
@pytest.mark.parametrize("size, channels_last", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("no_gradient", ["no_grad", "inference_mode", "frozen"])
def test_cga_forward_without_gradients_matches_its_readable_form(
    per_group, size, channels_last, no_gradient, monkeypatch
):
    """Where no gradient can be asked for, CGA skips what backward would keep (not its autograd Function); the output
    and gate are the same."""
    monkeypatch.setattr(fused_cga._ChannelGroupAttention, "apply", _unexpected_call)
    groups = 3
    layer = randomize(CGA(groups * per_group, groups)).double()
    x = to_memory_format(torch.randn(2, groups * per_group, *size, dtype=torch.float64) * 2 + 1, channels_last)
    expected = plain_cga(layer, x).detach()
    expected_gate = layer.channel_weights(x).detach()
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(no_gradient)
    if context is None:
        layer.requires_grad_(False)
    with context() if context else torch.enable_grad():
        output, gate = layer.forward_with_gate(x)
        plain_output = layer(x)
    assert output.grad_fn is None and not output.requires_grad
    torch.testing.assert_close(output, expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(plain_output, expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gate, expected_gate, rtol=1e-9, atol=1e-10)
    assert output.stride() == x.stride()  # the input's memory format


def _unexpected_call(*args, **kwargs):
    raise AssertionError("the autograd Function ran where no gradient can be asked for")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels", [12, 3], ids=["several-channels-per-group", "one-channel-per-group"])
def test_cga_inference_in_half_precision_matches_float64(dtype, channels):
    layer = randomize(CGA(channels, 3))
    x = torch.randn(2, channels, 9, 11) * 2 + 1
    expected = plain_cga(layer.double(), x.double())
    layer.float()
    with torch.inference_mode():
        output = layer(x.to(dtype))
    assert output.dtype == dtype
    torch.testing.assert_close(output.double(), expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


@pytest.mark.parametrize("per_group", PER_GROUP)
@pytest.mark.parametrize("size, channels_last", LAYOUTS, ids=LAYOUT_IDS)
def test_sge_fused_matches_autograd(per_group, size, channels_last):
    groups = 3
    layer = randomize(SGE(groups * per_group, groups)).double()
    x = to_memory_format(torch.randn(2, groups * per_group, *size, dtype=torch.float64), channels_last)
    assert_same_forward_and_gradients(
        layer, lambda x: plain_sge(layer, x), (x.requires_grad_(),), tuple(layer.parameters())
    )


@pytest.mark.parametrize("size, channels_last", LAYOUTS, ids=LAYOUT_IDS)
def test_se_fused_matches_autograd(size, channels_last):
    layer = randomize(SE(12, reduction=4)).double()
    x = to_memory_format(torch.randn(2, 12, *size, dtype=torch.float64), channels_last)
    assert_same_forward_and_gradients(
        layer, lambda x: plain_se(layer, x), (x.requires_grad_(),), tuple(layer.parameters())
    )


def test_se_with_other_activations_uses_autograd():
    layer = randomize(SE(12, reduction=4, act_layer=nn.GELU, gate_layer=nn.Hardsigmoid)).double()
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64, requires_grad=True)
    readable = lambda x: squeeze_excite(
        x,
        layer.fc1.weight,
        layer.fc1.bias,
        layer.fc2.weight,  # noqa: E731
        layer.fc2.bias,
        act=layer.act,
        gate=layer.gate,
    )
    assert_same_forward_and_gradients(layer, readable, (x,), tuple(layer.parameters()))
    assert torch.autograd.gradcheck(layer, (x,))


# Low- and high-level sizes of a skip: U-Net's doubling in 1D, 2D and 3D, odd sizes (interpolation), no resizing.
SKIP_LAYOUTS = [
    ((10, 12), (5, 6), False),
    ((10, 12), (5, 6), True),
    ((11, 9), (5, 4), False),
    ((6, 8, 4), (3, 4, 2), False),
    ((6, 8, 4), (3, 4, 2), True),
    ((12,), (6,), False),
    ((4, 4), (4, 4), False),
]
SKIP_LAYOUT_IDS = ["2d", "2d-channels-last", "2d-odd", "3d", "3d-channels-last", "1d", "same-size"]


@pytest.mark.parametrize("per_group", PER_GROUP)
@pytest.mark.parametrize("low_size, high_size, channels_last", SKIP_LAYOUTS, ids=SKIP_LAYOUT_IDS)
def test_sgau_fused_matches_autograd(per_group, low_size, high_size, channels_last):
    groups = 2
    low_channels = groups * per_group
    layer = randomize(SGAU(low_channels, 2 * low_channels, groups, spatial_dims=len(low_size))).double()
    low = to_memory_format(torch.randn(2, low_channels, *low_size, dtype=torch.float64), channels_last)
    high = to_memory_format(torch.randn(2, 2 * low_channels, *high_size, dtype=torch.float64), channels_last)
    assert_same_forward_and_gradients(
        layer,
        lambda low, high: plain_sgau(layer, low, high),
        (low.requires_grad_(), high.requires_grad_()),
        tuple(layer.parameters()),
    )


@pytest.mark.parametrize("per_group", PER_GROUP)
@pytest.mark.parametrize("low_size, high_size, channels_last", SKIP_LAYOUTS, ids=SKIP_LAYOUT_IDS)
@pytest.mark.parametrize("trainable", ["both", "low-only", "high-only"])
def test_skip_attention_fused_matches_autograd(per_group, low_size, high_size, channels_last, trainable):
    """``SkipAttention`` (a converted U-Net's gated skip) runs its own fused Function: no concatenation."""
    groups = 2
    gate = SkipAttention(groups * per_group, groups)
    low = to_memory_format(torch.randn(2, groups * per_group, *low_size, dtype=torch.float64) * 2 + 1, channels_last)
    high = to_memory_format(torch.randn(2, 3 * groups, *high_size, dtype=torch.float64) + 0.5, channels_last)
    low.requires_grad_(trainable != "high-only")
    high.requires_grad_(trainable != "low-only")
    out = gate(low, high)
    assert out.grad_fn is not None and "SpatialGroupAttention" in type(out.grad_fn).__name__
    assert out.stride() == low.stride()  # laid out like low (channels-last stays channels-last)
    assert_same_forward_and_gradients(
        gate, lambda low, high: spatial_group_attention(low, high, groups, gate.eps), (low, high), ()
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_skip_attention_in_half_precision_matches_float64(dtype):
    gate = SkipAttention(8, 4)
    low = (torch.randn(2, 8, 8, 6) * 3).to(dtype).requires_grad_()
    high = torch.randn(2, 8, 4, 3).to(dtype).requires_grad_()
    out = gate(low, high)
    assert out.dtype == dtype
    grad_output = torch.randn(out.shape).to(dtype)
    got = torch.autograd.grad(out, (low, high), grad_output)
    reference = [t.detach().double().requires_grad_() for t in (low, high)]
    expected = spatial_group_attention(*reference, 4, gate.eps)
    want = torch.autograd.grad(expected, reference, grad_output.double())
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), w, rtol=5e-2, atol=5e-2 * w.abs().max().item())


def test_skip_attention_output_can_be_modified_in_place():
    low = torch.randn(2, 4, 8, 8, requires_grad=True)
    high = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = SkipAttention(4, 2)(low, high)
    out.add_(1).relu_()
    out.sum().backward()
    assert torch.isfinite(low.grad).all() and torch.isfinite(high.grad).all()


def test_sgau_output_keeps_the_input_memory_format():
    layer = SGAU(4, 8, groups=2)
    low = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    high = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    assert layer(low, high).is_contiguous(memory_format=torch.channels_last)
    assert layer(low.contiguous(), high.contiguous()).is_contiguous()


# -- partial requires_grad -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, plain",
    [
        (lambda: CGA(8, 4), plain_cga),
        (lambda: SGE(8, 4), plain_sge),
        (lambda: SE(8, 2), plain_se),
    ],
    ids=["cga", "sge", "se"],
)
@pytest.mark.parametrize("trainable", ["input-only", "parameters-only"])
def test_gradients_of_a_subset_of_inputs(make, plain, trainable):
    layer = randomize(make()).double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64, requires_grad=trainable == "input-only")
    layer.requires_grad_(trainable == "parameters-only")
    assert_same_forward_and_gradients(layer, lambda x: plain(layer, x), (x,), tuple(layer.parameters()))


def test_sgau_gradient_of_the_low_features_only():
    layer = randomize(SGAU(4, 8, groups=2)).double().requires_grad_(False)
    low = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    high = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    assert_same_forward_and_gradients(layer, lambda low, high: plain_sgau(layer, low, high), (low, high), ())


# -- outputs may be modified in place (except SGAU's, which backward reads) ------------------------------------------
@pytest.mark.parametrize("layer", [CGA(8, 4), SGE(8, 4), SE(8, 2)], ids=["cga", "sge", "se"])
def test_output_can_be_modified_in_place(layer):
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = layer(x)
    out.add_(1).relu_()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_sgau_output_modified_in_place_raises_in_backward():
    out = SGAU(4, 8, groups=2)(torch.randn(1, 4, 4, 4, requires_grad=True), torch.randn(1, 8, 2, 2))
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


# -- reduced precision -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "make, plain",
    [
        (lambda: CGA(16, 4), plain_cga),
        (lambda: CGA(16, 16), plain_cga),
        (lambda: SGE(16, 4), plain_sge),
        (lambda: SE(16, 4), plain_se),
    ],
    ids=["cga", "cga-one-channel-per-group", "sge", "se"],
)
def test_half_precision_inputs_match_float64(dtype, make, plain):
    layer = randomize(make())
    x = (torch.randn(2, 16, 6, 7) * 3).to(dtype).requires_grad_()
    out = layer(x)
    assert out.dtype == dtype
    grad_output = torch.randn(out.shape).to(dtype)
    (grad,) = torch.autograd.grad(out, x, grad_output)
    assert grad.dtype == dtype
    reference_layer = layer.double()
    reference_x = x.detach().double().requires_grad_()
    expected = plain(reference_layer, reference_x)
    (expected_grad,) = torch.autograd.grad(expected, reference_x, grad_output.double())
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=5e-2, atol=5e-2 * expected_grad.abs().max().item())


@pytest.mark.parametrize("low_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("groups", [4, 8], ids=["two-channels-per-group", "one-channel-per-group"])
def test_sgau_under_autocast_matches_float32(low_dtype, groups):
    layer = randomize(SGAU(8, 16, groups=groups))
    low = torch.randn(2, 8, 12, 10).to(low_dtype).requires_grad_()
    high = torch.randn(2, 16, 6, 5).to(low_dtype).requires_grad_()
    expected = layer(low.float(), high.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(low, high)
    grads = torch.autograd.grad(out.float().square().sum(), (low, high))
    expected_grads = torch.autograd.grad(expected.square().sum(), (low, high))
    for got, want in zip(grads, expected_grads):
        assert got.dtype == low_dtype
        want = want.float()
        torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2 * want.abs().max().item())
    # As torch.cat would: the attended half in low's dtype, the upsampled half in bf16 (autocast's convolution).
    assert out.dtype == low_dtype
    torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)


# -- statistics ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, 0.1, 7.0, -3.3e4])
def test_constant_maps_standardize_to_exactly_zero(value):
    maps = torch.full((2, 3, 97, 101), value)
    standardized, _, std, _ = standardize_maps(maps, 1e-5)
    assert (standardized == 0).all() and (std == 0).all()


def test_maps_one_ulp_from_constant_are_not_taken_for_constant():
    """The constant-map test runs only where rounding could explain the spread; a map whose values differ by one
    ulp is such a case and must still standardize as the readable form does, next to truly constant maps."""
    maps = torch.full((1, 3, 64, 64), 1000.0)
    maps[0, 0, ::2] = torch.nextafter(torch.tensor(1000.0), torch.tensor(2000.0))
    maps[0, 1] = 0.1  # its mean rounds: the centred values are rounding noise
    maps[0, 2] = torch.linspace(-1, 1, 64 * 64).view(64, 64)
    standardized, _, std, _ = standardize_maps(maps.clone(), 1e-5)
    torch.testing.assert_close(standardized, plain_standardize(maps, 1e-5), rtol=1e-5, atol=1e-5)
    assert standardized[0, 0].abs().max() > 0.5  # a one-ulp spread is a spread (the mean rounds to one side)
    assert (standardized[0, 1] == 0).all() and std[0, 1].item() == 0


@pytest.mark.parametrize("gate", ["group", "channel"])
@pytest.mark.parametrize("per_group", [1, 2])
@pytest.mark.parametrize("loss_on", ["output and gate", "gate only"])
def test_cga_gate_output_gradients_match_autograd(gate, per_group, loss_on):
    """``forward_with_gate``'s second output (the channel weights) has gradients too, alone or with the output."""
    groups = 3
    layer = randomize(CGA(groups * per_group, groups, gate=gate)).double()
    x = torch.randn(2, groups * per_group, 5, 6, dtype=torch.float64, requires_grad=True)
    grad_y, grad_w = torch.randn(2, groups * per_group, 5, 6, dtype=torch.float64), torch.randn(2, groups * per_group)

    def loss(y, weights):
        return (weights * grad_w).sum() + ((y * grad_y).sum() if loss_on == "output and gate" else 0)

    inputs = (x, *layer.parameters())
    got = torch.autograd.grad(loss(*layer.forward_with_gate(x)), inputs)
    weights = cga_channel_weights(x, layer.fc.weight, layer.fc.bias, groups, layer.eps, gate == "group")
    want = torch.autograd.grad(loss(x * weights[:, :, None, None], weights), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_standardize_maps_matches_the_unbiased_formula_for_large_offsets():
    maps = torch.randn(2, 3, 50, 60, dtype=torch.float64) + 1e3
    standardized, _, std, _ = standardize_maps(maps, 1e-5)
    torch.testing.assert_close(standardized, plain_standardize(maps, 1e-5), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(std, maps.std((2, 3), keepdim=True), rtol=1e-9, atol=0)
    # Channels-last maps (their norm is a sum of squares there): the same values.
    standardized_cl, _, std_cl, _ = standardize_maps(to_memory_format(maps, True), 1e-5)
    torch.testing.assert_close(standardized_cl, standardized, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std_cl, std, rtol=1e-12, atol=0)
    # In float32 the two-pass formula loses no more than the mean's rounding (a few ulps of 1e3 over std 1), not
    # the cancellation of a sum of squares.
    maps32 = maps.float()
    standardized32 = standardize_maps(maps32, 1e-5).values
    torch.testing.assert_close(standardized32.double(), plain_standardize(maps32.double(), 1e-5), rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "shape, per_block",
    [((2, 9, 150, 200), 8), ((1, 5, 700, 300), 1), ((3, 7, 11, 13), None)],
    ids=["blocks", "one-map-a-block", "small"],
)
def test_map_dot_matches_a_float64_sum_of_products(shape, per_block):
    """Per-map dot products through the reused buffer (blocks of several maps with a shorter last one, one map a
    block, and the plain product for inputs no larger than the buffer) equal the brute-force sum."""
    numel, positions = math.prod(shape), shape[2] * shape[3]
    if per_block is None:
        assert numel <= group_ops.DOT_BUFFER_ELEMENTS
    else:
        assert numel > group_ops.DOT_BUFFER_ELEMENTS and group_ops.DOT_BUFFER_ELEMENTS // positions == per_block
    a, b = torch.randn(shape), torch.randn(shape)
    expected = (a.double() * b.double()).sum((2, 3), keepdim=True)
    torch.testing.assert_close(group_ops.map_dot(a, b).double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("per_group", [1, 2])
def test_cga_fused_matches_autograd_on_maps_larger_than_the_dot_buffer(per_group):
    """Maps larger than the dot products' buffer: with one channel per group they are x, standardized in the
    output's memory and recomputed in blocks by backward; with two, forward's derivative takes the blocked dot."""
    groups = 4
    layer = randomize(CGA(groups * per_group, groups)).double()
    x = torch.randn(2, groups * per_group, 192, 256, dtype=torch.float64) * 2 + 1
    assert 2 * groups * 192 * 256 > group_ops.DOT_BUFFER_ELEMENTS
    assert_same_forward_and_gradients(
        layer, lambda x: plain_cga(layer, x), (x.requires_grad_(),), tuple(layer.parameters())
    )


@pytest.mark.parametrize("channels_last", [False, True])
def test_cga_one_channel_per_group_recomputes_in_blocks_like_autograd(monkeypatch, channels_last):
    """With one channel per group backward recomputes the maps' gradient a block of maps at a time (blocks of 3 of
    the 2 x 8 maps here, the last one shorter; channels-last takes the one-block path)."""
    monkeypatch.setattr(fused_cga, "RECOMPUTE_BLOCK_ELEMENTS", 3 * 40 * 36)
    layer = randomize(CGA(8, 8)).double()
    x = to_memory_format(torch.randn(2, 8, 40, 36, dtype=torch.float64) * 2 + 1, channels_last)
    assert_same_forward_and_gradients(
        layer, lambda x: plain_cga(layer, x), (x.requires_grad_(),), tuple(layer.parameters())
    )


@pytest.mark.parametrize("per_group", [1, 2, 8])
def test_cga_keeps_at_most_its_group_maps_for_backward(per_group):
    """Besides x, CGA keeps ``m / C`` of x's size (the maps' derivative) and nothing of x's size with one channel
    per group, where it recomputes the maps in backward."""
    groups = 4
    layer = CGA(groups * per_group, groups)
    x = torch.randn(2, groups * per_group, 24, 20, requires_grad=True)
    kept = []

    def pack(tensor):
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x)
    others = [t for t in kept if t.data_ptr() != x.data_ptr()]
    largest = max(t.numel() for t in others)
    assert largest == (x.numel() // per_group if per_group > 1 else groups * groups)  # the maps, or the linear map


@pytest.mark.parametrize("per_group", [1, 2])
def test_cga_backward_twice_with_retain_graph_gives_the_same_gradients(per_group):
    layer = randomize(CGA(3 * per_group, 3)).double()
    x = torch.randn(2, 3 * per_group, 7, 6, dtype=torch.float64, requires_grad=True)
    out, grad_output = layer(x), torch.randn(2, 3 * per_group, 7, 6, dtype=torch.float64)
    first = torch.autograd.grad(out, (x, *layer.parameters()), grad_output, retain_graph=True)
    second = torch.autograd.grad(out, (x, *layer.parameters()), grad_output)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- torch.compile ---------------------------------------------------------------------------------------------------
def test_torch_compile_sgau_matches_eager():
    layer = randomize(SGAU(8, 16, groups=4))
    low = torch.randn(2, 8, 10, 14, requires_grad=True)
    high = torch.randn(2, 16, 5, 7, requires_grad=True)
    compiled = torch.compile(layer, backend="inductor")
    out = compiled(low, high)
    expected = layer(low, high)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (low, high))
    expected_grads = torch.autograd.grad(expected.square().sum(), (low, high))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_torch_compile_sgau_with_dynamic_shapes_trains():
    """With symbolic sizes ATen's upsample backward cannot take the shape lists: the adjoint comes from
    differentiating the interpolation instead; sizes that change between calls, doubling and not."""
    layer = randomize(SGAU(8, 16, groups=4))
    compiled = torch.compile(layer, dynamic=True, backend="aot_eager")
    for low_size in ((4, 6), (5, 7), (8, 10)):
        low = torch.randn(1, 8, *low_size, requires_grad=True)
        high = torch.randn(1, 16, 2, 3, requires_grad=True)
        out = compiled(low, high)
        grad = torch.randn_like(out)
        got = torch.autograd.grad(out, (low, high), grad)
        want = torch.autograd.grad(layer(low, high), (low, high), grad)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_torch_compile_se_with_inductor_matches_eager():
    layer = randomize(SE(24, reduction=4))
    x = torch.randn(2, 24, 7, 5, requires_grad=True)
    out = torch.compile(layer, backend="inductor")(x)
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (expected,) = torch.autograd.grad(layer(x).square().sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


# -- interpolation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 1, 5), (2, 2, 3, 4, 2), (2, 3, 7), (1, 1, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("strided", [False, True], ids=["separable adjoint", "strided convolution adjoint"])
def test_doubling_matches_interpolate_and_its_gradient(shape, channels_last, strided, monkeypatch):
    """Both adjoints of the doubling (separable passes for small gradients, a strided depthwise convolution from
    ``STRIDED_ADJOINT_MIN_NUMEL`` elements on) against autograd through ``F.interpolate`` in float64."""
    monkeypatch.setattr(group_ops, "STRIDED_ADJOINT_MIN_NUMEL", 0 if strided else 2**62)
    maps = torch.randn(shape, dtype=torch.float64)
    if channels_last and maps.dim() >= 4:
        maps = to_memory_format(maps, True)
    maps.requires_grad_()
    size = [2 * s for s in shape[2:]]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    expected = F.interpolate(maps, size=size, mode=mode, align_corners=False)
    doubled = resize_to(maps.detach(), size)
    torch.testing.assert_close(doubled, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, maps, grad)
    taken_back = resize_to_backward(grad, maps.shape)
    torch.testing.assert_close(taken_back, expected_grad, rtol=1e-12, atol=1e-12)
    # Both keep their input's layout: mixed layouts make the elementwise products around them several times slower.
    assert memory_format_of(doubled) == memory_format_of(maps)
    assert memory_format_of(taken_back) == memory_format_of(grad)


@pytest.mark.parametrize("shape, size", [((1, 2, 5, 4), (11, 9)), ((1, 2, 3, 3, 3), (6, 7, 6)), ((2, 2, 4), (9,))])
def test_other_sizes_use_interpolate_and_its_gradient(shape, size):
    maps = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    expected = F.interpolate(maps, size=size, mode=mode, align_corners=False)
    torch.testing.assert_close(resize_to(maps.detach(), size), expected)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, maps, grad)
    torch.testing.assert_close(resize_to_backward(grad, maps.shape), expected_grad)


# -- the CUDA code paths, taken on CPU ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, plain",
    [
        (lambda: CGA(8, 4), plain_cga),
        (lambda: CGA(8, 8), plain_cga),
        (lambda: SE(8, 2), plain_se),
        (lambda: SGE(8, 4), plain_sge),
    ],
    ids=["cga", "cga-one-channel-per-group", "se", "sge"],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_dot_path_matches_autograd(monkeypatch, make, plain, channels_last):
    """On CUDA the sums of ``gy * x`` over space are batched matrix products; force that path here."""
    monkeypatch.setattr(group_ops, "prefer_batched_dot", lambda x: True)
    layer = randomize(make()).double()
    x = to_memory_format(torch.randn(2, 8, 5, 6, dtype=torch.float64), channels_last).requires_grad_()
    assert_same_forward_and_gradients(layer, lambda x: plain(layer, x), (x,), tuple(layer.parameters()))
