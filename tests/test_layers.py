"""What every attention layer shares: parameter counts, shapes and dtypes, memory formats, numerics, gradients,
compilation, errors and the registry. Each layer's own equation and properties: tests/test_layers_<name>.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from group_attention import CGA, SE, SGAU, SGE, ConcatSkip, create_attention


def randomize(module: nn.Module) -> nn.Module:
    """Random parameter values, not only the initial ones (SGE starts as a constant gate)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.5)
    return module


# -- each layer equals its paper equation ----------------------------------------------------------------------------


# -- parameter counts (Table 1) --------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [32, 64, 128, 256, 512])
def test_parameter_counts_per_module(channels):
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(CGA(channels)) == 32 * 32 + 32
    assert count(CGA(channels, gate="channel")) == 32 * channels + channels
    hidden = channels // 16
    assert count(SE(channels)) == 2 * channels * hidden + hidden + channels
    assert count(SGE(channels)) == 2 * 32
    assert count(SGAU(channels // 2, channels, groups=16)) == count(ConcatSkip(channels // 2, channels))
    assert count(ConcatSkip(channels // 2, channels)) == 4 * channels * channels // 2 + channels // 2


def test_encoder_totals_match_table_1():
    widths = [32, 64, 128, 256, 512]
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    assert count(CGA(c) for c in widths) == 5 * 1056  # 6.981M -> 6.987M
    assert abs(count(SE(c) for c in widths) - 44_700) < 100  # 6.981M -> 7.025M


# -- shapes, dtypes, devices, memory formats (hypothesis) ------------------------------------------------------------
shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.sampled_from([1, 2, 4]),  # groups
    st.integers(1, 3),  # channels per group
    st.lists(st.integers(1, 9), min_size=1, max_size=3),  # spatial sizes, including 1 and odd sizes
)


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(["cga", "sge", "se"]))
def test_channel_layers_preserve_shape_and_dtype(shape, name):
    batch, groups, per_group, spatial = shape
    channels = groups * per_group
    kwargs = {} if name == "se" else {"groups": groups}
    layer = create_attention(name, channels, **kwargs)
    x = torch.randn(batch, channels, *spatial)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_sgau_shape_for_any_sizes(shape):
    batch, groups, per_group, spatial = shape
    low_channels = groups * per_group
    high = torch.randn(batch, 2 * low_channels, *spatial)
    low_size = [2 * s + extra for s, extra in zip(spatial, [1, 0, 1])]  # odd sizes too: low not exactly 2x high
    low = torch.randn(batch, low_channels, *low_size)
    sgau = SGAU(low_channels, 2 * low_channels, groups, spatial_dims=len(spatial))
    out = sgau(low, high)
    assert out.shape == (batch, 2 * low_channels, *low_size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("layer", [CGA(64), SE(64), SGE(64)], ids=["cga", "se", "sge"])
def test_channels_last_gives_the_same_result(layer):
    x = torch.randn(2, 64, 7, 9)
    y = layer(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y, layer(x))


# -- gating bounds ---------------------------------------------------------------------------------------------------


# -- numerics --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: CGA(8, 4), lambda: SGE(8, 4), lambda: SE(8, 2)], ids=["cga", "sge", "se"])
@pytest.mark.parametrize(
    "x",
    [torch.zeros(1, 8, 4, 4), torch.full((1, 8, 4, 4), 7.0), torch.randn(1, 8, 1, 1)],
    ids=["zeros", "constant", "1x1"],
)
def test_no_nan_for_constant_inputs_batch_1_and_1x1_maps(make, x):
    layer = make()
    x = x.clone().requires_grad_()
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_sgau_no_nan_for_constant_high_features():
    sgau = SGAU(4, 8, groups=4)
    low = torch.randn(1, 4, 2, 2, requires_grad=True)
    high = torch.full((1, 8, 1, 1), 3.0, requires_grad=True)
    out = sgau(low, high)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(high.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["cga", "sge", "se"])
def test_autocast_keeps_finite_and_input_dtype(name, dtype):
    layer = create_attention(name, 32, **({} if name == "se" else {"groups": 8}))
    conv = nn.Conv2d(3, 32, 3, padding=1)
    x = torch.randn(2, 3, 16, 16) * 100
    with torch.autocast("cpu", dtype=dtype):
        features = conv(x)
        y = layer(features)
    assert y.dtype == features.dtype == dtype
    assert torch.isfinite(y.float()).all()


def test_sgau_autocast():
    sgau = SGAU(8, 16, groups=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sgau(torch.randn(1, 8, 8, 8).bfloat16() * 300, torch.randn(1, 16, 4, 4).bfloat16() * 300)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", ["cga", "sge", "se"])
def test_half_precision_module_on_half_input(name):
    layer = create_attention(name, 16, **({} if name == "se" else {"groups": 4})).to(torch.bfloat16)
    y = layer(torch.randn(2, 16, 5, 5, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


# -- batch independence, gradients, compile --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: CGA(6, 3), lambda: CGA(6, 3, gate="channel"), lambda: SGE(6, 3), lambda: SE(6, 2)],
    ids=["cga", "cga-channel", "sge", "se"],
)
def test_gradcheck(make):
    layer = randomize(make()).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    params = tuple(layer.parameters())
    assert torch.autograd.gradcheck(
        lambda *p: torch.func.functional_call(
            layer, dict(zip([n for n, _ in layer.named_parameters()], p)), (x.detach(),)
        ),
        params,
    )


def test_sgau_gradcheck():
    sgau = randomize(SGAU(4, 8, groups=2)).double()
    low = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    high = torch.randn(1, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sgau, (low, high))


@pytest.mark.parametrize(
    "layer, backend",
    [(CGA(21, 7), "inductor"), (SGE(21, 3), "inductor"), (SE(21, 4), "aot_eager")],
    ids=["cga", "sge", "se"],
)
def test_torch_compile_matches_eager_on_odd_channel_counts(layer, backend):
    layer = randomize(layer)
    x = torch.randn(2, 21, 7, 5, requires_grad=True)
    compiled = torch.compile(layer, backend=backend)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-6)
    (grad_compiled,) = torch.autograd.grad(out.square().sum(), x)
    (grad_eager,) = torch.autograd.grad(layer(x).square().sum(), x)
    torch.testing.assert_close(grad_compiled, grad_eager, rtol=1e-4, atol=1e-5)


# -- bad input -------------------------------------------------------------------------------------------------------
ILL_CASES = [
    (lambda: CGA(30, 32), ValueError, "channels=30 is not divisible by groups=32"),
    (lambda: SGE(10, 4), ValueError, "groups=4"),
    (lambda: CGA(0), ValueError, "channels"),
    (lambda: CGA(32.0), TypeError, "channels"),
    (lambda: CGA(32, gate="pixel"), ValueError, "gate"),
    (lambda: SE(16, reduction=0), ValueError, "reduction"),
    (lambda: SGAU(30, 64), ValueError, "low_channels=30"),
    (lambda: SGAU(32, 48), ValueError, "high_channels=48"),
    (lambda: SGAU(32, 64, spatial_dims=4), ValueError, "spatial_dims"),
    (lambda: CGA(16, 4)(torch.randn(2, 8, 4, 4)), ValueError, "built for 16 channels"),
    (lambda: SE(16)(torch.randn(16, 4)), ValueError, "shape (B, C, *spatial)"),
    (lambda: SGE(16, 4)(torch.randn(4, 4).numpy()), TypeError, "torch.Tensor"),
    (lambda: SGAU(8, 16, 4)(torch.randn(2, 8, 8, 8), torch.randn(3, 16, 4, 4)), ValueError, "same batch size"),
    (lambda: SGAU(8, 16, 4)(torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)), ValueError, "high has 8 channels"),
    (lambda: SGAU(8, 16, 4)(torch.randn(2, 8, 8, 8, 8), torch.randn(2, 16, 4, 4, 4)), ValueError, "2 spatial dims"),
    (lambda: create_attention("cbam", 16), ValueError, "valid names: ['cga', 'se', 'sge', 'none']"),
]


@pytest.mark.parametrize("build, error, message", ILL_CASES)
def test_bad_input_raises_clear_errors(build, error, message):
    with pytest.raises(error) as info:
        build()
    assert message in str(info.value)


# -- registry and timm -----------------------------------------------------------------------------------------------
def test_create_attention_names():
    assert isinstance(create_attention("CGA", 64), CGA)
    assert isinstance(create_attention("se", 64), SE)
    assert isinstance(create_attention("sge", 64, groups=8), SGE)
    assert isinstance(create_attention(None, 64), nn.Identity)
    assert isinstance(create_attention("none", 64), nn.Identity)
    assert isinstance(create_attention(SGE, 64, groups=4), SGE)


def test_factory_kwargs_device_and_dtype():
    layer = CGA(64, device="cpu", dtype=torch.float64)
    assert layer.fc.weight.dtype == torch.float64
    assert SGE(64, dtype=torch.float16).weight.dtype == torch.float16


@pytest.mark.parametrize("layer", [CGA, SGE, SE])
def test_works_as_timm_attn_layer(layer):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=3, block_args=dict(attn_layer=layer))
    assert any(isinstance(m, layer) for m in model.modules())
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    attention_params = [p for m in model.modules() if isinstance(m, layer) for p in m.parameters()]
    assert out.shape == (2, 3) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in attention_params)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cga", "sge", "se"])
def test_cuda_matches_cpu(name):
    layer = randomize(create_attention(name, 64))
    x = torch.randn(2, 64, 17, 13)
    expected = layer(x)
    out = layer.cuda()(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.float16):
        half = layer(x.cuda().half() * 100)
    assert torch.isfinite(half).all()


@pytest.mark.cuda
def test_sgau_cuda_matches_cpu():
    sgau = SGAU(32, 64)
    low, high = torch.randn(2, 32, 18, 22), torch.randn(2, 64, 9, 11)
    expected = sgau(low, high)
    torch.testing.assert_close(sgau.cuda()(low.cuda(), high.cuda()).cpu(), expected, rtol=1e-4, atol=1e-5)


def _layer_cases():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    return [
        (CGA(8, 4).double(), [x]),
        (SE(8).double(), [x]),
        (SGE(8, 4).double(), [x]),
        (
            SGAU(8, 16, 4).double(),
            [torch.randn(2, 8, 4, 4, dtype=torch.float64), torch.randn(2, 16, 2, 2, dtype=torch.float64)],
        ),
    ]


def test_second_derivatives_are_refused_not_wrong():
    """The hand-written backward passes are not themselves differentiable: a second derivative (a gradient
    penalty) raises instead of silently giving a wrong value (SGE and SGAU did)."""
    for layer, inputs in _layer_cases():
        inputs = [x.clone().requires_grad_() for x in inputs]
        (grad,) = torch.autograd.grad(layer(*inputs).pow(2).sum(), inputs[0], create_graph=True)
        with pytest.raises(RuntimeError):
            grad.sum().backward()


def test_an_empty_batch_gives_an_empty_output_and_gradient():
    for layer, inputs in _layer_cases():
        inputs = [x[:0].clone().requires_grad_() for x in inputs]
        out = layer(*inputs)
        assert out.shape[0] == 0
        grads = torch.autograd.grad(out.sum(), inputs)
        assert [g.shape for g in grads] == [x.shape for x in inputs]


@pytest.mark.parametrize("groups", [8, 4], ids=["one-channel-per-group", "two-channels-per-group"])
def test_maps_without_positions_give_an_empty_output_and_gradient(groups):
    """CGA on maps of zero positions (one spatial size 0): forward and backward give empty results. (SGAU's
    transposed convolution, as U-Net's, refuses such inputs in PyTorch itself.)"""
    x = torch.randn(2, 8, 0, 4, requires_grad=True)
    out = CGA(8, groups)(x)
    assert out.shape == x.shape
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_features_are_refused(dtype):
    x = torch.ones(1, 8, 3, 3, dtype=dtype)
    for layer in (CGA(8, 4), SE(8), SGE(8, 4)):
        with pytest.raises(TypeError, match=r"x must be a floating-point tensor, got dtype"):
            layer(x)


def test_sgau_attend_is_differentiable_and_matches_the_fused_layer():
    """``attend`` (the readable formulation) at U-Net's exact doubling, where the CPU path doubles the maps with
    ``out=`` operations, which autograd cannot record."""
    layer = SGAU(8, 16, 4).double()
    low = torch.randn(2, 8, 4, 6, dtype=torch.float64, requires_grad=True)
    high = torch.randn(2, 16, 2, 3, dtype=torch.float64, requires_grad=True)
    attended = layer.attend(low, high)
    fused = layer(low, high)[:, :8]
    torch.testing.assert_close(attended, fused)
    grad = torch.randn_like(attended)
    for a, b in zip(torch.autograd.grad(attended, (low, high), grad), torch.autograd.grad(fused, (low, high), grad)):
        torch.testing.assert_close(a, b)


def test_create_attention_refuses_a_module_instance():
    with pytest.raises(TypeError, match=r"not a module instance \(CGA\); pass its class"):
        create_attention(CGA(8, 4), 8)


# -- mixed dtypes: the layers promote, as their statistics do -------------------------------------------------------
def test_sgau_takes_low_and_high_features_of_different_dtypes():
    """float32 low-level and float64 high-level features (outside autocast) give the float64 computation, rounded
    where the output is float32: the upsampling convolution runs in the promoted dtype."""
    sgau = randomize(SGAU(8, 16, groups=4))
    low, high = torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5, dtype=torch.float64)
    out = sgau(low, high)
    expected = randomize(SGAU(8, 16, groups=4)).double()
    expected.load_state_dict(sgau.state_dict())
    want = expected(low.double(), high)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["cga", "sge", "se"])
def test_channel_layers_keep_the_input_dtype_whatever_their_parameters(name):
    layer = randomize(create_attention(name, 16, **({} if name == "se" else {"groups": 4})))
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    out = layer(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, layer.double()(x), rtol=1e-6, atol=1e-6)
