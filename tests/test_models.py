"""The U-Net builder, Table 1's variants and GANet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from group_attention import CGA, SE, SGAU, SGE, VARIANTS, GANet, UNet, build_variant

# Table 1, "# para" column, for 3 input channels and 2 classes.
TABLE_1_PARAMETERS = {
    "unet": 7.764e6,
    "baseline": 6.981e6,
    "baseline+sgau": 6.981e6,
    "baseline+se": 7.025e6,
    "baseline+cga": 6.987e6,
    "ganet": 6.987e6,
}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(TABLE_1_PARAMETERS))
def test_parameter_counts_match_table_1(name):
    count = parameter_count(build_variant(name, in_channels=3, num_classes=2))
    assert abs(count - TABLE_1_PARAMETERS[name]) / TABLE_1_PARAMETERS[name] < 1e-3


def test_parameter_count_by_hand():
    """U-Net with conv biases and batch norm, counted layer by layer."""

    def conv(c_in, c_out, k=3):
        return k * k * c_in * c_out + c_out

    def block(c_in, c_out, n):
        return sum(conv(c_in if i == 0 else c_out, c_out) + 2 * c_out for i in range(n))

    widths = [32, 64, 128, 256, 512]
    encoder = sum(block(c_in, c_out, 2) for c_in, c_out in zip([3] + widths[:-1], widths))
    up = sum(4 * high * low + low for low, high in zip(widths[:-1], widths[1:]))
    for name, n in (("unet", 2), ("baseline", 1)):
        decoder = sum(block(2 * low, low, n) for low in widths[:-1])
        assert parameter_count(build_variant(name)) == encoder + up + decoder + conv(32, 2, k=1)


def test_variants_are_the_six_rows_and_ganet_is_baseline_plus_sgau_plus_cga():
    assert list(VARIANTS) == ["unet", "baseline", "baseline+sgau", "baseline+se", "baseline+cga", "ganet"]
    ganet = GANet()
    assert sum(isinstance(m, CGA) for m in ganet.modules()) == 5
    assert sum(isinstance(m, SGAU) for m in ganet.modules()) == 4
    assert parameter_count(ganet) == parameter_count(build_variant("ganet"))
    assert sum(isinstance(m, SE) for m in build_variant("baseline+se").modules()) == 5
    assert not any(isinstance(m, (CGA, SGAU, SE)) for m in build_variant("unet").modules())


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 48)), (3, (16, 16, 32))])
def test_output_shape_of_every_variant(name, spatial_dims, size):
    model = build_variant(name, in_channels=1, num_classes=3, channels=(32, 64, 128), spatial_dims=spatial_dims)
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


def test_sizes_not_a_multiple_of_the_stride_are_padded_and_cropped_back():
    model = GANet(channels=(32, 64, 128)).eval()
    x = torch.randn(1, 3, 30, 45)
    out = model(x)
    assert out.shape == (1, 2, 30, 45)
    # Padding is at the bottom/right with zeros: the same as padding by hand and cropping.
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2))
    torch.testing.assert_close(out, model(padded)[..., :30, :45])


def test_strict_size_mode_suggests_the_nearest_valid_sizes():
    model = UNet(channels=(32, 64, 128), size_mode="strict")
    with pytest.raises(ValueError, match=r"nearest valid sizes: \(28, 44\) or \(32, 48\)"):
        model(torch.randn(1, 3, 30, 45))


def test_gradients_reach_every_attention_parameter():
    model = GANet(channels=(32, 64, 128))
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    for module in model.modules():
        if isinstance(module, (CGA, SGAU)):
            for name, parameter in module.named_parameters():
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_train_and_eval_modes():
    model = GANet(channels=(32, 64, 128))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x)
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(model(x[:1]), first[:1], rtol=1e-4, atol=1e-5)  # eval: batch independent


def test_channels_last():
    model = GANet(channels=(32, 64, 128)).eval()
    x = torch.randn(2, 3, 32, 48)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-4)


def test_attention_maps_can_be_read_without_changing_the_output():
    model = GANet(channels=(32, 64, 128, 256)).eval()
    x = torch.randn(2, 3, 32, 48)
    plain = model(x)
    model.record_attention = True
    recorded = model(x)
    maps = model.attention_maps()
    torch.testing.assert_close(recorded, plain)
    assert [m.shape for m in maps] == [(2, 32, 8, 12), (2, 32, 16, 24), (2, 32, 32, 48)]
    assert all(((m > 0) & (m < 1)).all() for m in maps)
    model.record_attention = False
    with pytest.raises(RuntimeError, match="record_attention"):
        model.attention_maps()


@pytest.mark.parametrize("attention", [None, "cga", "se", "sge", CGA])
def test_encoder_attention_choices(attention):
    model = UNet(channels=(32, 64), encoder_attention=attention, skip="sgau", decoder_convs=1)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_groups_reach_cga_sge_and_sgau():
    model = UNet(channels=(16, 32), encoder_attention="sge", skip="sgau", groups=8)
    assert {m.groups for m in model.modules() if isinstance(m, (SGE, SGAU))} == {8}


@pytest.mark.parametrize(
    "norm, act", [("instance", "leaky_relu"), ("group", "gelu"), (None, "silu"), (nn.BatchNorm2d, nn.ReLU)]
)
def test_norm_and_activation_choices(norm, act):
    model = UNet(channels=(16, 32), norm=norm, act=act)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 2, 16, 16)


def test_timm_encoder_variant():
    pytest.importorskip("timm")
    model = UNet(encoder="resnet18", encoder_attention="cga", skip="sgau", decoder_convs=1, num_classes=2)
    assert model.encoder.channels == [64, 64, 128, 256, 512]
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    out.mean().backward()
    assert out.shape == (2, 2, 64, 96)
    assert all(p.grad is not None for m in model.modules() if isinstance(m, CGA) for p in m.parameters())


@pytest.mark.parametrize("source", ["hf-hub", "url"])
def test_pretrained_weights_missing_locally_fail_at_once_without_network(monkeypatch, tmp_path, source):
    """The hub is not switched offline by the environment here: the encoder itself must not try the network (from
    the Hugging Face hub, or a plain URL through torch.hub), and must leave the hub's setting as it was."""
    pytest.importorskip("timm")
    import socket

    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    kwargs = (
        {}
        if source == "hf-hub"
        else {"pretrained_cfg_overlay": {"hf_hub_id": None, "url": "https://example.invalid/resnet18-5c106cde.pth"}}
    )
    with pytest.raises(RuntimeError, match="pretrained=False") as raised:
        UNet(encoder="resnet18", pretrained=True, encoder_kwargs=kwargs)
    assert "the network was used" not in str(raised.value)
    assert constants.HF_HUB_OFFLINE is False


ILL_CASES = [
    (lambda: build_variant("attention-unet"), ValueError, "valid names: ['unet', 'baseline'"),
    (lambda: UNet(skip="attention"), ValueError, "valid names: ['concat', 'sgau']"),
    (lambda: UNet(encoder_attention="cbam"), ValueError, "unknown attention 'cbam'"),
    (lambda: UNet(spatial_dims=4), ValueError, "spatial_dims must be one of [1, 2, 3]"),
    (lambda: UNet(norm="layer"), ValueError, "unknown norm 'layer'"),
    (lambda: UNet(channels=(30, 60), skip="sgau"), ValueError, "low_channels=30 is not divisible by groups=32"),
    (lambda: UNet(decoder_convs=0), ValueError, "decoder_convs"),
    (lambda: UNet(encoder="not_a_model"), ValueError, "not a timm model name"),
    (lambda: UNet(size_mode="crop"), ValueError, "size_mode"),
    (lambda: UNet(channels=(16, 32), pretrained=True), ValueError, "apply to a timm encoder"),
    (lambda: UNet(channels=(16, 32), encoder_kwargs={"out_indices": (1, 2)}), ValueError, "apply to a timm encoder"),
    (lambda: UNet(channels=(16, 32), attention_kwargs={"gate": "channel"}), ValueError, "without encoder_attention"),
    (lambda: UNet(act=None), TypeError, "act must be a name in"),
    (lambda: UNet(norm=5), TypeError, "norm must be a name in"),
    (lambda: UNet(channels=32), TypeError, "channels must be a sequence of stage widths"),
    (lambda: UNet(spatial_dims=2.0), ValueError, "spatial_dims must be one of [1, 2, 3], got 2.0"),
    (lambda: UNet(spatial_dims=True), ValueError, "spatial_dims must be one of [1, 2, 3], got True"),
    (lambda: UNet(channels=(16, 32))(torch.randn(3, 16, 16)), ValueError, "x must have shape (B, C, S, S)"),
    (lambda: UNet(channels=(16, 32))(torch.randn(1, 4, 16, 16)), RuntimeError, "channels"),
]


@pytest.mark.parametrize("build, error, message", ILL_CASES)
def test_bad_configurations_raise_clear_errors(build, error, message):
    with pytest.raises(error) as info:
        build()
    assert message in str(info.value)


def test_ganet_overfits_one_synthetic_image():
    torch.manual_seed(0)
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = (((yy - 12) ** 2 + (xx - 18) ** 2) < 36).long()[None]
    image = torch.stack([0.2 + 0.6 * mask[0].float(), 0.3 * torch.ones(size, size), 0.1 + 0.0 * mask[0]])[None]
    image = image + 0.05 * torch.randn_like(image)
    model = GANet(channels=(32, 64, 128))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(image), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_encoder_attention_sits_inside_the_contracting_path():
    """The next encoder stage sees the attended features: a gate that zeroes the first stage zeroes the bottleneck."""

    class ZeroGate(nn.Module):
        def __init__(self, channels, **kwargs):
            super().__init__()
            self.channels = channels

        def forward(self, x):
            return x * 0 if self.channels == 16 else x

    model = UNet(channels=(16, 32), encoder_attention=ZeroGate).eval()
    x = torch.randn(1, 3, 16, 16)
    features = model.encoder(x)
    first, second = model.encoder.stages
    first_stage = first.block(x)
    assert torch.equal(features[0], torch.zeros_like(first_stage))
    torch.testing.assert_close(features[1], second.block(second.pool(torch.zeros_like(first_stage))))
    assert not torch.allclose(features[1], second.block(second.pool(first_stage)))


@pytest.mark.parametrize("spatial_dims, size", [(2, (16, 24)), (3, (8, 8, 16))])
def test_pooling_before_the_channel_gate_equals_pooling_the_attended_features(spatial_dims, size):
    """The encoder pools x and scales by CGA's weights; the plain order (attend, then pool) gives the same values
    and gradients."""
    model = UNet(1, 2, channels=(32, 64, 128), encoder_attention="cga", spatial_dims=spatial_dims).eval()
    attention = [stage.attention for stage in model.encoder.stages]
    attention_parameters = [p for layer in attention for p in layer.parameters()]
    with torch.no_grad():
        for layer in attention:
            layer.fc.weight.normal_(0, 0.5)
    x = torch.randn(2, 1, *size, requires_grad=True)

    def plain(inputs):
        features, previous = [], inputs
        for stage in model.encoder.stages:
            previous = stage.attention(stage.block(stage.pool(previous)))
            features.append(previous)
        return features

    fused = model.encoder(x)
    expected = plain(x)
    weights = [torch.randn_like(f) for f in expected]
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(sum((f * w).sum() for f, w in zip(fused, weights)), [x, *attention_parameters])
    grads_expected = torch.autograd.grad(
        sum((f * w).sum() for f, w in zip(expected, weights)), [x, *attention_parameters]
    )
    for got, want in zip(grads, grads_expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_group_norm_fits_widths_that_8_does_not_divide():
    model = UNet(channels=(12, 24), norm="group", num_classes=1)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert {(m.num_groups, m.num_channels) for m in norms} >= {(4, 12), (8, 24)}
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 1, 16, 16)


def test_the_new_layout_round_trips_through_its_own_state_dict():
    model = GANet(channels=(8, 16), groups=4).eval()
    copy = GANet(channels=(8, 16), groups=4).eval()
    copy.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)


def test_an_input_of_another_dtype_than_the_parameters_names_both():
    model = GANet(channels=(8, 16), groups=4)
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the model's parameters are torch.float32"):
        model(torch.randn(1, 3, 16, 16, dtype=torch.float64))
